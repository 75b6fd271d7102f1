package client

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestFileCursors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	s := &FileCursors{Path: path}
	m, err := s.Load()
	if err != nil || len(m) != 0 {
		t.Fatalf("missing file: %v %v", m, err)
	}
	if err := s.Save("u.alice", 7); err != nil {
		t.Fatal(err)
	}
	if err := s.Save("t.news", 3); err != nil {
		t.Fatal(err)
	}
	if err := s.Save("u.alice", 9); err != nil {
		t.Fatal(err)
	}
	m, err = (&FileCursors{Path: path}).Load()
	if err != nil || m["u.alice"] != 9 || m["t.news"] != 3 {
		t.Fatalf("reloaded %v %v", m, err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("temporary files left behind: %v", entries)
	}
	os.WriteFile(path, []byte("{not json"), 0o644)
	if _, err := (&FileCursors{Path: path}).Load(); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("corrupt file: %v", err)
	}
}

func TestBackoffBoundsAndJitter(t *testing.T) {
	c, err := New(Config{Addr: "x:1", App: "a", Device: "d", Token: func(context.Context) (string, error) { return "", nil },
		Handler: func(Message) error { return nil }, MinBackoff: 100 * time.Millisecond, MaxBackoff: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	distinct := map[time.Duration]bool{}
	for n := 0; n < 40; n++ {
		d := c.backoff(n)
		if d < 50*time.Millisecond || d > 2050*time.Millisecond {
			t.Fatalf("attempt %d: %v out of bounds", n, d)
		}
		distinct[d] = true
	}
	if len(distinct) < 30 {
		t.Fatalf("backoff is not jittered: %d distinct delays in 40", len(distinct))
	}
}

func TestConfigRequired(t *testing.T) {
	tok := func(context.Context) (string, error) { return "", nil }
	h := func(Message) error { return nil }
	for _, cfg := range []Config{
		{App: "a", Device: "d", Token: tok, Handler: h},
		{Addr: "x:1", Device: "d", Token: tok, Handler: h},
		{Addr: "x:1", App: "a", Device: "d", Handler: h},
		{Addr: "x:1", App: "a", Device: "d", Token: tok},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
}
