package client

import (
	"context"
	"io"
	"net"
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

func TestLazyTCPAcksWrapsTCPOnly(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_, _ = c.Write([]byte("hello"))
			c.Close()
		}
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	r := lazyTCPAcks(nc, nc)
	if _, wrapped := r.(*lazyAckReader); wrapped != quickAckSupported {
		t.Fatalf("TCP reader wrapped = %v, want %v", wrapped, quickAckSupported)
	}
	b, err := io.ReadAll(r)
	if err != nil || string(b) != "hello" {
		t.Fatalf("read through the wrapper: %q, %v", b, err)
	}
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	if r := lazyTCPAcks(p1, p1); r != io.Reader(p1) {
		t.Fatalf("a non-TCP connection was wrapped: %T", r)
	}
}
