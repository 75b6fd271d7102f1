package wire

// ValidName reports whether s may be used as an app, user, device or topic
// name: 1–128 of A-Z a-z 0-9 _ -. Names become NATS subject tokens and KV
// keys, so no '.', '*', '>' or whitespace. It is a loop, not a regexp: the
// publish API checks every user of a request with it.
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !nameByte[s[i]] {
			return false
		}
	}
	return true
}

// nameByte marks the bytes a name may hold.
var nameByte = func() (t [256]bool) {
	for c := range 256 {
		t[c] = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
	}
	return
}()

// ValidChannel reports whether ch names a channel a device can receive
// from: "u.<user>", "t.<topic>" or "b.all".
func ValidChannel(ch string) bool {
	if ch == "b.all" {
		return true
	}
	return len(ch) > 2 && (ch[0] == 'u' || ch[0] == 't') && ch[1] == '.' && ValidName(ch[2:])
}
