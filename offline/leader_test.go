package offline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"herald/config"
	"herald/nats/natstest"
)

// staleReplica adds a reader of HERALD's Direct Gets that has none of
// demo's messages: a mirror with MirrorDirect, filtered to another app,
// joins the stream's Direct Get queue group and answers "no message" for
// demo's subjects, as a replica that is behind the leader does. About half
// of the Direct Gets then reach it.
func staleReplica(t *testing.T, s *Store) {
	t.Helper()
	_, err := s.js.CreateStream(ctx(t), jetstream.StreamConfig{
		Name:         "HERALD_BEHIND",
		Storage:      jetstream.MemoryStorage,
		Mirror:       &jetstream.StreamSource{Name: StreamName, FilterSubject: StoredSubject("other", ">")},
		MirrorDirect: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	// A mirror joins the Direct Get group once it receives something.
	if _, err := s.PublishAll(ctx(t), []Publish{{App: "other", Channel: "u.x", Data: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		m, err := s.js.Stream(ctx(t), "HERALD_BEHIND")
		if err == nil {
			if info, err := m.Info(ctx(t)); err == nil && info.State.Msgs == 1 {
				break
			}
		}
		if i == 100 {
			t.Fatal("the mirror did not receive its message")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// With a replica that is behind answering Direct Gets, a replicated store's
// reads that end a backlog still see every message the leader has: the
// last sequence, the end of a fetch, a fetch of a single message, and the
// end of a scan. (The same reads without the confirmation are shown to go
// wrong, so the setup does make stale answers.)
func TestReadsThatEndABacklogAskTheLeader(t *testing.T) {
	s, _ := openStore(t)
	staleReplica(t, s)
	res, err := s.PublishAll(ctx(t), []Publish{{App: "demo", Channel: "u.alice", Data: []byte("one")}, {App: "demo", Channel: "u.alice", Data: []byte("two")}})
	if err != nil {
		t.Fatal(err)
	}
	subj := StoredSubject("demo", "u.alice")
	first, last := res[0].Seq, res[1].Seq

	// Without the confirmation (an R1 store reads Direct Get as is).
	stale := 0
	for i := 0; i < 30; i++ {
		msgs, _, err := s.Fetch(ctx(t), subj, 1, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) < 2 {
			stale++
		}
	}
	if stale == 0 {
		t.Fatal("30 Direct Gets, none answered by the stale reader: the test's setup is not doing its job")
	}

	s.replicated = true
	for i := 0; i < 30; i++ {
		seq, err := s.LastSeq(ctx(t), subj)
		if err != nil || seq != last {
			t.Fatalf("LastSeq = %d, %v; want %d", seq, err, last)
		}
		// Reading on until the store says the end was reached (as a
		// catch-up does) yields both messages.
		var got []uint64
		from := uint64(1)
		for {
			msgs, pending, err := s.Fetch(ctx(t), subj, from, 10)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range msgs {
				got = append(got, m.Seq)
				from = m.Seq + 1
			}
			if len(msgs) == 0 || pending == 0 {
				break
			}
			if len(got) > 2 {
				t.Fatalf("read past the end: %v", got)
			}
		}
		if len(got) != 2 || got[0] != first || got[1] != last {
			t.Fatalf("fetch until the end: %v, want [%d %d]", got, first, last)
		}
		// A single-message fetch, as the shared scan's first-message lookup.
		msgs, _, err := s.Fetch(ctx(t), subj, 1, 1)
		if err != nil || len(msgs) != 1 || msgs[0].Seq != first || string(msgs[0].Data) != "one" {
			t.Fatalf("first message: %+v, %v", msgs, err)
		}
	}
	// A scan's end is checked the same way.
	if more, err := s.leaderHasMore(ctx(t), StoredSubject("demo", ">"), last, last); err != nil || !more {
		t.Fatalf("leaderHasMore at the last message: %v, %v", more, err)
	}
	if more, err := s.leaderHasMore(ctx(t), StoredSubject("demo", ">"), last+1, last+5); err != nil || more {
		t.Fatalf("leaderHasMore past the last message: %v, %v", more, err)
	}
	var scanned []uint64
	if err := s.Scan(ctx(t), StoredSubject("demo", ">"), 1, last, func(m *Message) bool { scanned = append(scanned, m.Seq); return true }); err != nil || len(scanned) != 2 {
		t.Fatalf("scan: %v, %v", scanned, err)
	}
}

// The leader's answer, parsed: a message with its headers and TTL, "no
// message", another error, and garbage.
func TestParseLeaderGet(t *testing.T) {
	m, found, err := parseLeaderGet([]byte(`{"type":"io.nats.jetstream.api.v1.stream_msg_get_response","message":{"subject":"herald.ch.demo.u.a","seq":42,"hdrs":"TkFUUy8xLjANCk5hdHMtVFRMOiA2MA0KDQo=","data":"aGk=","time":"2026-11-28T10:00:00Z"}}`))
	if err != nil || !found || m.Seq != 42 || string(m.Data) != "hi" || m.Subject != "herald.ch.demo.u.a" || m.Expires.Sub(m.Time).Seconds() != 60 {
		t.Fatalf("%+v %v %v", m, found, err)
	}
	if _, found, err := parseLeaderGet([]byte(`{"error":{"code":404,"err_code":10037,"description":"no message found"}}`)); found || err != nil {
		t.Fatalf("no message: %v %v", found, err)
	}
	if _, _, err := parseLeaderGet([]byte(`{"error":{"code":503,"err_code":10008,"description":"jetstream not available"}}`)); err == nil {
		t.Fatal("an error answer must be an error")
	}
	for _, bad := range []string{`nonsense`, `{}`, `{"message":{"hdrs":"TkFUUy8x"}}`} {
		if _, found, err := parseLeaderGet([]byte(bad)); err == nil || found {
			t.Errorf("%s: found %v, err %v", bad, found, err)
		}
	}
}

// The leader's answer is network bytes: no input panics, and a message
// found has a sequence.
func FuzzParseLeaderGet(f *testing.F) {
	f.Add([]byte(`{"message":{"subject":"s","seq":1,"data":"aGk=","time":"2026-11-28T10:00:00Z"}}`))
	f.Add([]byte(`{"error":{"code":404,"err_code":10037}}`))
	f.Add([]byte(`{"message":{"seq":3,"hdrs":"TkFUUy8xLjANCk5hdHMtVFRMOiA2MA0KDQo="}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, found, err := parseLeaderGet(data)
		if found && (err != nil || m.Seq == 0) {
			t.Fatalf("found %+v with err %v", m, err)
		}
	})
}

// The gateway re-syncs on this advisory; nats-server must still send it
// under this name.
func TestLeaderElectedSubjectIsNATSServers(t *testing.T) {
	if want := server.JSAdvisoryStreamLeaderElectedPre + "." + StreamName; LeaderElectedSubject != want {
		t.Fatalf("LeaderElectedSubject = %q, nats-server sends %q", LeaderElectedSubject, want)
	}
}

// A leader's answer lost on its way (its node did not know this
// connection's reply subscription yet, just after a reconnect) costs a
// second, not the caller's whole deadline: leaderGet asks again. The
// responder here plays a leader whose first answer is lost.
func TestLeaderGetAsksAgainWhenAnAnswerIsLost(t *testing.T) {
	// A server without JetStream: only the responder below answers.
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	defer srv.Shutdown()
	if !srv.ReadyForConnections(5 * time.Second) {
		t.Fatal("server not ready")
	}
	nc := natstest.Connect(t, srv.ClientURL())
	s := &Store{nc: nc}
	var asked atomic.Int32
	sub, err := nc.Subscribe("$JS.API.STREAM.MSG.GET.LOSSY", func(m *nats.Msg) {
		if asked.Add(1) == 1 {
			return // lost
		}
		m.Respond([]byte(`{"type":"io.nats.jetstream.api.v1.stream_msg_get_response","message":{"subject":"s","seq":7,"data":"aGk=","time":"2026-11-28T10:00:00Z"}}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	m, found, err := s.leaderGet(c, "LOSSY", "s", 0)
	if err != nil || !found || m.Seq != 7 || asked.Load() != 2 {
		t.Fatalf("leaderGet = %+v %v %v after %d requests", m, found, err, asked.Load())
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("the second request came after %v", took)
	}
}

// askAgain waits a second for the first answer, then twice as long each
// time up to 4 s (scaled down here), and stops at once on an error other
// than its own wait's end or when the caller's context ends.
func TestAskAgainWaits(t *testing.T) {
	saved := askWaits
	t.Cleanup(func() { askWaits = saved })
	askWaits.first, askWaits.max = 40*time.Millisecond, 160*time.Millisecond

	var waits []time.Duration
	err := askAgain(ctx(t), func(actx context.Context) error {
		d, _ := actx.Deadline()
		waits = append(waits, time.Until(d))
		if len(waits) == 6 {
			return nil
		}
		<-actx.Done()
		return actx.Err()
	})
	if err != nil || len(waits) != 6 {
		t.Fatalf("askAgain = %v after %d requests", err, len(waits))
	}
	// Each wait is read inside req, a moment after it was set: up to 20 ms
	// later on a busy machine, never earlier.
	for i, want := range []time.Duration{40, 80, 160, 160, 160, 160} {
		if w := waits[i]; w > want*time.Millisecond || w < want*time.Millisecond-20*time.Millisecond {
			t.Fatalf("wait %d was %v, want %v ms: all %v", i+1, w, want, waits)
		}
	}

	asked := 0
	refused := errors.New("refused")
	if err := askAgain(ctx(t), func(context.Context) error { asked++; return refused }); err != refused || asked != 1 {
		t.Fatalf("another error: %v after %d requests", err, asked)
	}

	c, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = askAgain(c, func(actx context.Context) error { <-actx.Done(); return actx.Err() })
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > time.Second {
		t.Fatalf("the caller's deadline: %v after %v", err, time.Since(start))
	}
}

// lossyProxy forwards TCP between a NATS client and server and, once
// armed, cuts the first connection that carries marker: a request (client
// to server) is forwarded as the client's side is cut, so its answer is
// lost; with fromServer, what the server sent (a message) is itself lost.
// The client reconnects through the proxy. seen counts the markers that
// passed while armed.
type lossyProxy struct {
	ln         net.Listener
	target     string
	marker     []byte
	fromServer bool
	armed      atomic.Bool
	cut        atomic.Bool
	seen       atomic.Int32
}

func startLossyProxy(t *testing.T, target, marker string, fromServer bool) *lossyProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &lossyProxy{ln: ln, target: target, marker: []byte(marker), fromServer: fromServer}
	var conns sync.WaitGroup
	t.Cleanup(func() { ln.Close(); conns.Wait() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() { defer conns.Done(); p.relay(c) }()
		}
	}()
	return p
}

func (p *lossyProxy) relay(c net.Conn) {
	defer c.Close()
	s, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		return
	}
	defer s.Close()
	go func() { p.pump(c, s, c, p.fromServer); c.Close() }()
	p.pump(s, c, c, !p.fromServer)
}

// pump copies src to dst; when watching, the armed marker cuts client.
func (p *lossyProxy) pump(dst, src, client net.Conn, watch bool) {
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			cut := false
			if k := bytes.Count(buf[:n], p.marker); watch && k > 0 && p.armed.Load() {
				p.seen.Add(int32(k))
				if cut = p.cut.CompareAndSwap(false, true); cut {
					client.Close()
					if dst == client {
						return // what the server sent is lost
					}
				}
			}
			if _, werr := dst.Write(buf[:n]); werr != nil || cut {
				return // a request arrives after its client is gone
			}
		}
		if err != nil {
			return
		}
	}
}

// storeBehindLossyProxy opens a store whose connection goes through a
// lossyProxy cutting at marker, with 20 messages of app demo stored, one
// per channel, and arms the proxy.
func storeBehindLossyProxy(t *testing.T, marker string, fromServer bool) (*Store, *lossyProxy, []Stored) {
	t.Helper()
	_, url := natstest.Start(t)
	p := startLossyProxy(t, strings.TrimPrefix(url, "nats://"), marker, fromServer)
	nc := natstest.Connect(t, "nats://"+p.ln.Addr().String())
	s, err := Open(ctx(t), nc, config.Default().Store)
	if err != nil {
		t.Fatal(err)
	}
	var pubs []Publish
	for i := 0; i < 20; i++ {
		pubs = append(pubs, Publish{App: "demo", Channel: fmt.Sprintf("u.s%d", i), Data: []byte{byte(i)}})
	}
	res, err := s.PublishAll(ctx(t), pubs)
	if err != nil {
		t.Fatal(err)
	}
	p.armed.Store(true)
	return s, p, res
}

// askedAgain fails t unless the proxy lost an answer and the request was
// made again, within a few seconds.
func askedAgain(t *testing.T, p *lossyProxy, took time.Duration) {
	t.Helper()
	if !p.cut.Load() || p.seen.Load() < 2 {
		t.Fatalf("the proxy cut %v after %d requests: the test did not lose an answer", p.cut.Load(), p.seen.Load())
	}
	if took > 5*time.Second {
		t.Fatalf("the read took %v", took)
	}
}

// A scan whose consumer's answer is lost on its way (the client's
// connection broke, as over a flapping route) asks again a second later
// and finds the consumer the first request made, instead of waiting for
// its caller's whole deadline (it was 30 s for the gateway's shared
// catch-up).
func TestScanAsksAgainWhenTheConsumersAnswerIsLost(t *testing.T) {
	s, p, res := storeBehindLossyProxy(t, "$JS.API.CONSUMER.CREATE."+StreamName+".", false)
	start := time.Now()
	var got []uint64
	err := s.Scan(ctx(t), StoredSubject("demo", ">"), res[0].Seq, res[19].Seq, func(m *Message) bool {
		got = append(got, m.Seq)
		return true
	})
	took := time.Since(start)
	if err != nil || len(got) != 20 || got[19] != res[19].Seq {
		t.Fatalf("scan = %v, %d messages after %v", err, len(got), took)
	}
	askedAgain(t, p, took)
	// The second request found the first one's consumer, which the scan
	// then deleted: none is left behind.
	info, err := s.stream.Info(ctx(t))
	if err != nil || info.State.Consumers != 0 {
		names := []string{}
		for n := range s.stream.ConsumerNames(ctx(t)).Name() {
			names = append(names, n)
		}
		t.Fatalf("consumers left on the stream: %v %v", names, err)
	}
}

// The same for a connect's and a catch-up's reads: a Direct Get batch (it
// held a gateway's catch-up for 10 s, which then failed the device), a
// channel's last sequence, a device's cursor, a user's server-side topics,
// and the stream's last sequence (where a shared scan ends).
func TestReadsAskAgainWhenTheAnswerIsLost(t *testing.T) {
	t.Run("direct get", func(t *testing.T) {
		s, p, res := storeBehindLossyProxy(t, "$JS.API.DIRECT.GET."+StreamName, false)
		start := time.Now()
		msgs, pending, err := s.Fetch(ctx(t), StoredSubject("demo", "u.s7"), 1, 10)
		if err != nil || len(msgs) != 1 || msgs[0].Seq != res[7].Seq || pending != 0 {
			t.Fatalf("fetch = %+v %d %v", msgs, pending, err)
		}
		askedAgain(t, p, time.Since(start))
	})
	t.Run("last of a channel", func(t *testing.T) {
		s, p, res := storeBehindLossyProxy(t, "$JS.API.DIRECT.GET."+StreamName, false)
		start := time.Now()
		if last, err := s.LastSeq(ctx(t), StoredSubject("demo", "u.s3")); err != nil || last != res[3].Seq {
			t.Fatalf("last seq = %d %v, want %d", last, err, res[3].Seq)
		}
		askedAgain(t, p, time.Since(start))
	})
	t.Run("cursor", func(t *testing.T) {
		s, p, _ := storeBehindLossyProxy(t, "$JS.API.DIRECT.GET.KV_"+CursorsBucket, false)
		p.armed.Store(false) // moving a cursor reads it first
		if _, err := s.AdvanceCursor(ctx(t), "demo.u.s3.d1", 42); err != nil {
			t.Fatal(err)
		}
		p.armed.Store(true)
		start := time.Now()
		if seq, err := s.Cursor(ctx(t), "demo.u.s3.d1"); err != nil || seq != 42 {
			t.Fatalf("cursor = %d %v, want 42", seq, err)
		}
		askedAgain(t, p, time.Since(start))
	})
	t.Run("topics", func(t *testing.T) {
		s, p, _ := storeBehindLossyProxy(t, "$JS.API.DIRECT.GET.KV_"+TopicsBucket, false)
		p.armed.Store(false) // setting a topic reads the user's first
		if _, err := s.SetUserTopic(ctx(t), "demo", "s3", "news", true); err != nil {
			t.Fatal(err)
		}
		p.armed.Store(true)
		start := time.Now()
		if topics, err := s.UserTopics(ctx(t), "demo", "s3"); err != nil || len(topics) != 1 || topics[0] != "news" {
			t.Fatalf("topics = %v %v", topics, err)
		}
		askedAgain(t, p, time.Since(start))
	})
	t.Run("stream info", func(t *testing.T) {
		s, p, res := storeBehindLossyProxy(t, "$JS.API.STREAM.INFO."+StreamName, false)
		start := time.Now()
		if last, err := s.StreamLastSeq(ctx(t)); err != nil || last != res[19].Seq {
			t.Fatalf("last seq = %d %v, want %d", last, err, res[19].Seq)
		}
		askedAgain(t, p, time.Since(start))
	})
}

// A message of a scan lost on its way (the fetch's answer crossed a route
// that broke) ends the scan with an error where the hole is. Going on
// with the next fetch, which starts after the lost messages, would hand
// the devices what comes after them and never them.
func TestScanStopsAtMessagesLostOnTheirWay(t *testing.T) {
	saved := scanBatch
	t.Cleanup(func() { scanBatch = saved })
	scanBatch = 8 // the lost message's fetch is followed by others
	s, p, res := storeBehindLossyProxy(t, StoredSubject("demo", "u.s3")+" ", true)
	var got []uint64
	err := s.Scan(ctx(t), StoredSubject("demo", ">"), res[0].Seq, res[19].Seq, func(m *Message) bool {
		got = append(got, m.Seq)
		return true
	})
	if !p.cut.Load() {
		t.Fatal("the proxy lost nothing: the test did not test")
	}
	for i, q := range got {
		if q != res[i].Seq {
			t.Fatalf("the scan handed %v: %d where %d belongs", got, q, res[i].Seq)
		}
	}
	if len(got) < 20 && !errors.Is(err, ErrUnavailable) {
		t.Fatalf("the scan handed %d of 20 and said %v", len(got), err)
	}
	if len(got) > 3 { // got[3] would be u.s3's, the lost one
		t.Fatalf("the scan handed the lost message: %v, %v", got, err)
	}
}
