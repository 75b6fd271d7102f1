package wire

import "testing"

func TestValidChannel(t *testing.T) {
	for ch, want := range map[string]bool{
		"u.alice": true, "t.news": true, "b.all": true, "u.A-b_9": true,
		"": false, "u.": false, "u": false, "x.alice": false, "b.other": false, "b.all.x": false,
		"u.a.b": false, "t.*": false, "t.>": false, "u.a b": false, "zzz": false, "U.alice": false,
		"u." + string(make([]byte, 129)): false,
	} {
		if got := ValidChannel(ch); got != want {
			t.Errorf("ValidChannel(%q) = %v, want %v", ch, got, want)
		}
	}
}
