package dispatcher

import (
	"encoding/json"
	"testing"
	"time"

	"herald/config"
	"herald/offline"
)

// FuzzParsePush feeds arbitrary bytes to the push decoder: it must never
// panic, and whatever it accepts must name only valid subject tokens, one
// kind of target, a payload within the limit and times within max age.
func FuzzParsePush(f *testing.F) {
	for _, s := range []string{
		`{"users":["alice"],"data":"hi"}`,
		`{"users":["alice","bob"],"data_base64":"aGk=","id":"x1","ttl":"1h"}`,
		`{"topic":"news","data":"x","at":"2030-01-01T00:00:00Z"}`,
		`{"broadcast":true,"data":"x"}`,
		`{"users":["a.b"],"data":"x"}`,
		`{"topic":"a*","data":"x"}`,
		`{"users":[],"data":"x"}`,
		`{"users":["alice"],"data":"x"}{}`,
		`{"users":["alice"],"data":"x"}}`,
		`[`, ``, `null`, `{"users":null}`,
	} {
		f.Add([]byte(s))
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const limit, maxAge = 64, 24 * time.Hour
	f.Fuzz(func(t *testing.T, body []byte) {
		p, perr := parsePush(body, limit, maxAge, now)
		if perr != nil {
			if p != nil || perr.status < 400 || perr.code == "" || perr.msg == "" {
				t.Fatalf("refusal without status, code or message: %+v", perr)
			}
			return
		}
		if !json.Valid(body) {
			t.Fatalf("accepted invalid JSON %q", body)
		}
		if len(p.payload) > limit {
			t.Fatalf("accepted a payload of %d bytes", len(p.payload))
		}
		if len(p.targets) == 0 || len(p.targets) > MaxUsersPerPush {
			t.Fatalf("accepted %d targets", len(p.targets))
		}
		for _, tg := range p.targets {
			kind, name, ok := offline.ParseChannel(tg.channel)
			if !ok || (kind != offline.KindBroadcast && !config.ValidName(name)) {
				t.Fatalf("accepted channel %q", tg.channel)
			}
		}
		if p.ttl != 0 && (p.ttl < time.Second || p.ttl > maxAge) {
			t.Fatalf("accepted ttl %v", p.ttl)
		}
		if !p.at.IsZero() && (!p.at.After(now) || p.at.After(now.Add(maxAge))) {
			t.Fatalf("accepted at %v", p.at)
		}
	})
}
