package config

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestDefaults(t *testing.T) {
	c, err := Load("serve", nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.API.Listen != "127.0.0.1:8080" || c.Gateway.Listen != "127.0.0.1:7070" || c.Data != "./data" || c.API.MaxPayload != 4096 {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "herald.yaml")
	os.WriteFile(file, []byte("api:\n  listen: 127.0.0.1:9000\n  max_payload: 100\ngateway:\n  listen: 127.0.0.1:9001\n  heartbeat: 45s\nstore:\n  max_age: 1h\n"), 0o644)
	c, err := Load("serve", []string{"--config", file, "--tcp", "127.0.0.1:9003"},
		env(map[string]string{"HERALD_HTTP": "127.0.0.1:9002", "HERALD_TCP": "127.0.0.1:9999"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.API.Listen != "127.0.0.1:9002" { // env over file
		t.Errorf("api.listen = %s", c.API.Listen)
	}
	if c.Gateway.Listen != "127.0.0.1:9003" { // flag over env
		t.Errorf("gateway.listen = %s", c.Gateway.Listen)
	}
	if c.API.MaxPayload != 100 || c.Gateway.Heartbeat != 45*time.Second || c.Store.MaxAge != time.Hour { // file over default
		t.Errorf("file values not applied: %+v", c)
	}
}

func TestErrorsNameTheField(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "c.yaml")
		os.WriteFile(p, []byte(s), 0o644)
		return p
	}
	f := func(args []string, e map[string]string, wantField string) {
		t.Helper()
		_, err := Load("serve", args, env(e), io.Discard)
		if err == nil {
			t.Fatalf("%v %v: no error", args, e)
		}
		var fe *FieldError
		if wantField != "" && (!errors.As(err, &fe) || !strings.Contains(err.Error(), wantField)) {
			t.Fatalf("%v: error %q does not name %s", args, err, wantField)
		}
		if wantField == "" && !strings.Contains(err.Error(), "bogus") {
			t.Fatalf("error %q does not name the unknown key", err)
		}
	}
	f([]string{"--http", "nonsense"}, nil, "api.listen")
	f(nil, map[string]string{"HERALD_MAX_PAYLOAD": "lots"}, "api.max_payload")
	f([]string{"--dev", "--http", "0.0.0.0:8080"}, nil, "api.listen")
	f([]string{"--dev", "--tcp", "10.1.2.3:7070"}, nil, "gateway.listen")
	f([]string{"--max-age", "-1h"}, nil, "store.max_age")
	f([]string{"--config", write("gateway:\n  heartbeat: 1h\n")}, nil, "gateway.heartbeat")
	f([]string{"--config", write("apps:\n  - name: 'a.b'\n    keys: [k]\n    secrets: [s]\n")}, nil, "apps[0].name")
	f([]string{"--config", write("log_level: loud\n")}, nil, "log_level")
	f([]string{"--config", write("bogus: 1\n")}, nil, "")
}

func TestDevAcceptsLoopback(t *testing.T) {
	c, err := Load("serve", []string{"--dev", "--http", "[::1]:8080", "--tcp", "localhost:7070"}, env(nil), io.Discard)
	if err != nil || !c.Dev {
		t.Fatalf("%v %+v", err, c)
	}
}

func TestValidName(t *testing.T) {
	for _, s := range []string{"alice", "user_1", "A-b", strings.Repeat("x", 128)} {
		if !ValidName(s) {
			t.Errorf("%q should be valid", s)
		}
	}
	for _, s := range []string{"", "a.b", "a*", "a>", "a b", "a\tb", "é", strings.Repeat("x", 129)} {
		if ValidName(s) {
			t.Errorf("%q should be invalid", s)
		}
	}
}

// ValidName is the documented rule, `^[A-Za-z0-9_-]{1,128}$`, for any input.
func FuzzValidName(f *testing.F) {
	re := regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)
	for _, s := range []string{"", "alice", "a.b", "a\n", "é", strings.Repeat("x", 128), strings.Repeat("x", 129), "\x00", "a\xffb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := ValidName(s), re.MatchString(s); got != want {
			t.Fatalf("ValidName(%q) = %v, the rule says %v", s, got, want)
		}
	})
}

// docs/configuration.md names every flag each role accepts.
func TestEveryFlagIsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, role := range []string{"serve", "gateway", "dispatcher"} {
		c := Default()
		for _, o := range c.options(role) {
			if !strings.Contains(string(doc), "`--"+o.flag+"`") {
				t.Errorf("docs/configuration.md does not document --%s (%s)", o.flag, role)
			}
			if !strings.Contains(string(doc), o.env()) {
				t.Errorf("docs/configuration.md does not name %s", o.env())
			}
		}
	}
}
