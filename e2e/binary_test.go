package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"herald/nats/natstest"
)

// buildHerald builds the herald binary once per test binary run.
func buildHerald(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "herald")
	cmd := exec.Command("go", "build", "-o", bin, "herald/cmd/herald")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("go build: %v", err)
	}
	return bin
}

// freeAddr is a loopback address that was free a moment ago and that was
// not handed out before (natstest.FreePorts).
func freeAddr(t testing.TB) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", natstest.FreePorts(t, 1)[0])
}

// process is a started binary whose output is captured.
type process struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan error
}

type syncBuffer struct {
	mu  chan struct{}
	buf bytes.Buffer
}

func newSyncBuffer() *syncBuffer { b := &syncBuffer{mu: make(chan struct{}, 1)}; return b }
func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.Write(p)
}
func (b *syncBuffer) String() string {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.String()
}

// start runs a shell command line (as a README reader would type it) in dir.
func start(t testing.TB, dir, line string) *process {
	t.Helper()
	cmd := exec.Command("bash", "-c", line)
	cmd.Dir = dir
	p := &process{cmd: cmd, out: newSyncBuffer(), done: make(chan error, 1)}
	cmd.Stdout = p.out
	cmd.Stderr = p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
			}
		}
	})
	return p
}

// waitRunning waits until p says "herald is running"; if it does not
// within timeout, or exits, the test fails with what p printed.
func (p *process) waitRunning(t testing.TB, timeout time.Duration, what string) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !strings.Contains(p.out.String(), "herald is running"); time.Sleep(5 * time.Millisecond) {
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("%s exited at start (%v); its output:\n%s", what, err, p.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not running after %v; its output:\n%s", what, timeout, p.out.String())
		}
	}
}

func (p *process) wait(t testing.TB, timeout time.Duration) error {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(timeout):
		t.Fatalf("%q still running after %v; output:\n%s", p.cmd.Args, timeout, p.out.String())
		return nil
	}
}

// gatewayConnections reads herald_gateway_connections from /metrics.
func gatewayConnections(api string) string { return metric(api, "herald_gateway_connections") }

// metric is the value of an unlabelled metric on api's /metrics, "" when
// it cannot be read.
func metric(api, name string) string {
	resp, err := http.Get(api + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\d+)$`).FindSubmatch(b)
	if m == nil {
		return ""
	}
	return string(m[1])
}

// TestReadmeTour builds the binary, starts `herald serve --dev` as a process
// and runs the README's tour commands exactly as written (ports and binary
// path substituted), checking the outputs the README promises.
func TestReadmeTour(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	tour := string(readme)
	i, j := strings.Index(tour, "<!-- tour -->"), strings.Index(tour, "<!-- /tour -->")
	if i < 0 || j < i {
		t.Fatal("README has no <!-- tour --> section")
	}
	tour = tour[i:j]
	var commands, expected []string
	for _, block := range regexp.MustCompile("(?s)```(\\w*)\n(.*?)```").FindAllStringSubmatch(tour, -1) {
		if block[1] == "sh" {
			commands = append(commands, strings.TrimSpace(block[2]))
		} else {
			expected = append(expected, strings.TrimSpace(block[2]))
		}
	}
	if len(commands) != 4 || len(expected) != 1 {
		t.Fatalf("tour has %d commands and %d output blocks; this test knows 4 and 1", len(commands), len(expected))
	}
	for _, promise := range []string{
		`{"messages":[{"user":"alice","channel":"u.alice","seq":1}],"duplicate":false}`,
		`{"channel":"u.alice","seq":1,"data":"hello"}`,
	} {
		if !strings.Contains(tour, promise) {
			t.Fatalf("README tour no longer promises %s", promise)
		}
	}

	bin := buildHerald(t)
	dir := t.TempDir()
	api, dev, natsAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	server := start(t, dir, bin+" serve --dev --http "+api+" --tcp "+dev+" --ws "+freeAddr(t)+" --nats-listen "+natsAddr)
	waitFor(t, 20*time.Second, "herald serve to print its banner", func() bool {
		return strings.Contains(server.out.String(), "herald is running")
	})
	out := server.out.String()
	for _, want := range []string{"DEV MODE", "herald listen", "herald push"} {
		if !strings.Contains(out, want) {
			t.Fatalf("serve output lacks %q:\n%s", want, out)
		}
	}
	sub := strings.NewReplacer("./bin/herald", bin, "127.0.0.1:8080", api, "127.0.0.1:7070", dev)
	for i := range commands {
		commands[i] = sub.Replace(commands[i])
	}
	apiURL := "http://" + api

	// 1. listen (waits), 2. push: the listener prints hello and exits.
	l1 := start(t, dir, commands[0])
	waitFor(t, 10*time.Second, "the listener to connect", func() bool { return gatewayConnections(apiURL) == "1" })
	p1 := start(t, dir, commands[1])
	if err := p1.wait(t, 10*time.Second); err != nil {
		t.Fatalf("push: %v\n%s", err, p1.out.String())
	}
	if got := strings.TrimSpace(p1.out.String()); got != `{"messages":[{"user":"alice","channel":"u.alice","seq":1}],"duplicate":false}` {
		t.Fatalf("push printed %s", got)
	}
	if err := l1.wait(t, 10*time.Second); err != nil {
		t.Fatalf("listen: %v\n%s", err, l1.out.String())
	}
	if got := strings.TrimSpace(l1.out.String()); got != `{"channel":"u.alice","seq":1,"data":"hello"}` {
		t.Fatalf("listen printed %s", got)
	}
	// 3. push while alice is offline, 4. listen again: only the new message.
	p2 := start(t, dir, commands[2])
	if err := p2.wait(t, 10*time.Second); err != nil {
		t.Fatalf("second push: %v\n%s", err, p2.out.String())
	}
	l2 := start(t, dir, commands[3])
	if err := l2.wait(t, 10*time.Second); err != nil {
		t.Fatalf("second listen: %v\n%s", err, l2.out.String())
	}
	if got, want := strings.TrimSpace(l2.out.String()), expected[0]; got != want {
		t.Fatalf("second listen printed\n%s\nREADME promises\n%s", got, want)
	}

	// SIGTERM stops the server cleanly.
	server.cmd.Process.Signal(syscall.SIGTERM)
	if err := server.wait(t, 15*time.Second); err != nil {
		t.Fatalf("serve exited with %v:\n%s", err, server.out.String())
	}
}

// A bad flag value names its field and exits non-zero.
func TestServeRejectsBadConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildHerald(t)
	f := func(args, want string) {
		t.Helper()
		p := start(t, t.TempDir(), bin+" "+args)
		err := p.wait(t, 20*time.Second)
		if err == nil || !strings.Contains(p.out.String(), want) {
			t.Fatalf("%s: err %v, output %q lacks %q", args, err, p.out.String(), want)
		}
	}
	f("serve --dev --http 0.0.0.0:8080", "api.listen")
	f("serve --tcp nonsense", "gateway.listen")
	f("serve --max-payload lots", "api.max_payload")
	f("bogus", "unknown command")
}

// servedHerald is a `herald serve --dev` process on free loopback ports.
type servedHerald struct {
	bin, dir           string
	api, dev, natsAddr string
	proc               *process
}

// startServe builds the binary and starts `herald serve --dev` with
// WebSocket off and any further flags, waiting for its banner.
func startServe(t *testing.T, flags ...string) *servedHerald {
	t.Helper()
	h := &servedHerald{bin: buildHerald(t), dir: t.TempDir(), api: freeAddr(t), dev: freeAddr(t), natsAddr: freeAddr(t)}
	h.proc = start(t, h.dir, fmt.Sprintf("%s serve --dev --http %s --tcp %s --ws '' --nats-listen %s %s", h.bin, h.api, h.dev, h.natsAddr, strings.Join(flags, " ")))
	h.proc.waitRunning(t, 20*time.Second, "herald serve")
	return h
}

// The README's topics section runs as written: a listener following a topic
// gets a topic push and a broadcast, each from its channel.
func TestReadmeTopics(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	sec := readmeSection(t, "topics")
	var commands, expected []string
	for _, block := range regexp.MustCompile("(?s)```(\\w*)\n(.*?)```").FindAllStringSubmatch(sec, -1) {
		if block[1] == "sh" {
			commands = append(commands, strings.TrimSpace(block[2]))
		} else {
			expected = append(expected, strings.TrimSpace(block[2]))
		}
	}
	if len(commands) != 3 || len(expected) != 1 {
		t.Fatalf("topics section has %d commands and %d output blocks; this test knows 3 and 1", len(commands), len(expected))
	}
	h := startServe(t)
	sub := strings.NewReplacer("./bin/herald", h.bin, "127.0.0.1:8080", h.api, "127.0.0.1:7070", h.dev)
	apiURL := "http://" + h.api
	l := start(t, h.dir, sub.Replace(commands[0]))
	// Subscribed: SUBACKs for u.bob (its server cursor), b.all and t.news went out.
	waitFor(t, 10*time.Second, "the listener's subscriptions", func() bool {
		resp, err := http.Get(apiURL + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(b), `herald_gateway_frames_out_total{type="SUBACK"} 3`)
	})
	for _, c := range commands[1:] {
		p := start(t, h.dir, sub.Replace(c))
		if err := p.wait(t, 10*time.Second); err != nil {
			t.Fatalf("%s: %v\n%s", c, err, p.out.String())
		}
	}
	if err := l.wait(t, 10*time.Second); err != nil {
		t.Fatalf("listen: %v\n%s", err, l.out.String())
	}
	// Sequence numbers vary with what the store held: compare without them.
	seqRE := regexp.MustCompile(`"seq":\d+`)
	got := seqRE.ReplaceAllString(strings.TrimSpace(l.out.String()), `"seq":N`)
	want := seqRE.ReplaceAllString(expected[0], `"seq":N`)
	if got != want {
		t.Fatalf("listener printed\n%s\nREADME promises\n%s", l.out.String(), expected[0])
	}
}

// readmeSection returns the README's text between <!-- name --> and
// <!-- /name --> (the parts tests run as written).
func readmeSection(t testing.TB, name string) string {
	t.Helper()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	sec := string(readme)
	i, j := strings.Index(sec, "<!-- "+name+" -->"), strings.Index(sec, "<!-- /"+name+" -->")
	if i < 0 || j < i {
		t.Fatalf("README has no <!-- %s --> section", name)
	}
	return sec[i:j]
}
