package offline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"herald/config"
	"herald/nats/natstest"
)

func openStore(t *testing.T) (*Store, *nats.Conn) {
	t.Helper()
	_, url := natstest.Start(t)
	nc := natstest.Connect(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Open(ctx, nc, config.Default().Store)
	if err != nil {
		t.Fatal(err)
	}
	return s, nc
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestPublishFetchAndLive(t *testing.T) {
	s, nc := openStore(t)
	live, err := nc.SubscribeSync(LiveSubject("demo", "u.alice"))
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for i := 0; i < 5; i++ {
		// Interleave another user's messages: gap detection is per subject.
		res, err := s.PublishAll(ctx(t), []Publish{
			{App: "demo", Channel: "u.alice", Data: []byte(fmt.Sprintf("m%d", i))},
			{App: "demo", Channel: "u.bob", Data: []byte("x")},
		})
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, res[0].Seq)
	}
	// Live copies carry the previous seq of the same subject.
	var last uint64
	for i := 0; i < 5; i++ {
		m, err := live.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		l, err := ParseLive(m)
		if err != nil {
			t.Fatal(err)
		}
		if l.Seq != seqs[i] || l.Last != last || string(l.Data) != fmt.Sprintf("m%d", i) || l.Time.IsZero() {
			t.Fatalf("live %d: %+v (want seq %d last %d)", i, l, seqs[i], last)
		}
		last = l.Seq
	}
	// Catch-up reads in pages.
	msgs, pending, err := s.Fetch(ctx(t), StoredSubject("demo", "u.alice"), seqs[1], 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 || msgs[0].Seq != seqs[1] || msgs[1].Seq != seqs[2] || pending != 2 {
		t.Fatalf("fetch: %+v pending %d", msgs, pending)
	}
	msgs, _, err = s.Fetch(ctx(t), StoredSubject("demo", "u.alice"), seqs[4]+1, 10)
	if err != nil || len(msgs) != 0 {
		t.Fatalf("fetch past the end: %v %v", msgs, err)
	}
}

func TestIdempotentPublish(t *testing.T) {
	s, _ := openStore(t)
	p := []Publish{{App: "demo", Channel: "u.alice", Data: []byte("x"), ID: "req-1:alice"}}
	a, err := s.PublishAll(ctx(t), p)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.PublishAll(ctx(t), p)
	if err != nil {
		t.Fatal(err)
	}
	if a[0].Duplicate || !b[0].Duplicate || a[0].Seq != b[0].Seq {
		t.Fatalf("first %+v second %+v", a[0], b[0])
	}
}

func TestTTLIsRecorded(t *testing.T) {
	s, _ := openStore(t)
	res, err := s.PublishAll(ctx(t), []Publish{{App: "demo", Channel: "u.alice", Data: []byte("x"), TTL: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	msgs, _, err := s.Fetch(ctx(t), StoredSubject("demo", "u.alice"), res[0].Seq, 1)
	if err != nil || len(msgs) != 1 {
		t.Fatal(msgs, err)
	}
	if d := msgs[0].Expires.Sub(msgs[0].Time); d != time.Hour {
		t.Fatalf("expires - time = %v", d)
	}
}

func TestCursorOnlyMovesForward(t *testing.T) {
	s, _ := openStore(t)
	key := CursorKey("demo", "alice", "d1", "u.alice")
	if seq, err := s.Cursor(ctx(t), key); err != nil || seq != 0 {
		t.Fatal(seq, err)
	}
	f := func(seq uint64, wantMoved bool, want uint64) {
		t.Helper()
		moved, err := s.AdvanceCursor(ctx(t), key, seq)
		if err != nil || moved != wantMoved {
			t.Fatalf("advance %d: moved %v err %v", seq, moved, err)
		}
		if got, _ := s.Cursor(ctx(t), key); got != want {
			t.Fatalf("after %d: cursor %d want %d", seq, got, want)
		}
	}
	f(5, true, 5)
	f(3, false, 5)
	f(5, false, 5)
	f(9, true, 9)
}

func TestAppsWatch(t *testing.T) {
	s, _ := openStore(t)
	if err := s.PutApp(ctx(t), App{Name: "a1", KeyHashes: []string{HashKey("k1")}, Secrets: []string{"s1"}}); err != nil {
		t.Fatal(err)
	}
	apps, err := s.WatchApps(ctx(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer apps.Stop()
	a, ok := apps.Get("a1")
	if !ok || !a.CheckKey("k1") || a.CheckKey("k2") {
		t.Fatalf("%+v %v", a, ok)
	}
	s.PutApp(ctx(t), App{Name: "a2", KeyHashes: []string{HashKey("k2")}, Secrets: []string{"s2"}})
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, ok := apps.Get("a2"); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a2 never appeared")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestParseChannel(t *testing.T) {
	for _, c := range []string{"u.alice", "t.news"} {
		if _, _, ok := ParseChannel(c); !ok {
			t.Errorf("%s should parse", c)
		}
	}
	for _, c := range []string{"", "u", "x.alice", "u.a.b", "u.*", "u.>", "t. x"} {
		if _, _, ok := ParseChannel(c); ok {
			t.Errorf("%q should not parse", c)
		}
	}
}

// The apps copy keeps following the bucket after the context that started
// it ended (a key rotation or a flag set later must reach every process).
func TestAppsFollowChangesAfterStart(t *testing.T) {
	s, _ := openStore(t)
	if err := s.PutApp(ctx(t), App{Name: "shop", KeyHashes: []string{HashKey("k1")}, Secrets: []string{"s"}}); err != nil {
		t.Fatal(err)
	}
	start, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	apps, err := s.WatchApps(start, slog.New(slog.DiscardHandler))
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(apps.Stop)
	if err := s.MarkServerTopics(ctx(t), "shop"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if a, ok := apps.Get("shop"); ok && a.ServerTopics && a.CheckKey("k1") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the apps copy did not see the change")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Re-seeding from configuration keeps what the system learnt.
	if err := s.PutApp(ctx(t), App{Name: "shop", KeyHashes: []string{HashKey("k2")}, Secrets: []string{"s"}}); err != nil {
		t.Fatal(err)
	}
	for {
		if a, ok := apps.Get("shop"); ok && a.CheckKey("k2") {
			if !a.ServerTopics {
				t.Fatal("re-seeding dropped ServerTopics")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the apps copy did not see the new key")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// DoneReplay deletes the revision it was given, not a newer order for the
// same device that came meanwhile.
func TestDoneReplayKeepsANewerOrder(t *testing.T) {
	s, _ := openStore(t)
	got := make(chan Replay, 4)
	stop, err := s.WatchReplays(ctx(t), slog.Default(), func(_ string, r *Replay) {
		if r != nil {
			got <- *r
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	next := func() Replay {
		select {
		case r := <-got:
			return r
		case <-time.After(5 * time.Second):
			t.Fatal("no order from the watch")
			return Replay{}
		}
	}
	first := Replay{App: "demo", User: "alice", Device: "d1", From: 3}
	if err := s.PutReplay(ctx(t), first); err != nil {
		t.Fatal(err)
	}
	old := next()
	if old.Rev == 0 || old.From != 3 {
		t.Fatalf("watched %+v", old)
	}
	first.From = 7
	if err := s.PutReplay(ctx(t), first); err != nil {
		t.Fatal(err)
	}
	newer := next()
	key := ReplayKey("demo", "alice", "d1")
	if err := s.DoneReplay(ctx(t), key, old.Rev); err != nil {
		t.Fatalf("done with an old revision: %v", err)
	}
	if e, err := s.replays.Get(ctx(t), key); err != nil || e.Revision() != newer.Rev {
		t.Fatalf("the newer order is gone: %v", err)
	}
	if err := s.DoneReplay(ctx(t), key, newer.Rev); err != nil {
		t.Fatal(err)
	}
	if _, err := s.replays.Get(ctx(t), key); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("after done: %v", err)
	}
}

// AdvanceCursors writes unknown revisions the careful way and known ones
// as one compare-and-set each; a cursor another writer moved ahead is
// never moved back, and the stale revision is dropped.
func TestAdvanceCursors(t *testing.T) {
	s, nc := openStore(t)
	// Cursor reads are KV Direct Gets: counting them tells a pipelined
	// compare-and-set (no read) from the careful fallback (a read first),
	// which would otherwise write the same values.
	sub, err := nc.SubscribeSync("$JS.API.DIRECT.GET.>")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	// After a Flush every earlier copy is queued (the PONG comes after them).
	gets := func() int {
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		n, _, _ := sub.Pending()
		return n
	}
	keys := []string{CursorKey("demo", "a", "d1", "u.a"), CursorKey("demo", "b", "d1", "u.b"), CursorKey("demo", "c", "d1", "u.c")}
	ws := make([]CursorWrite, len(keys))
	for i, k := range keys {
		ws[i] = CursorWrite{Key: k, Seq: uint64(10 + i)}
	}
	s.AdvanceCursors(ctx(t), ws)
	for i, w := range ws {
		if w.Err != nil || w.Rev == 0 {
			t.Fatalf("first write %d: %+v", i, w)
		}
		if got, _ := s.Cursor(ctx(t), w.Key); got != uint64(10+i) {
			t.Fatalf("cursor %s = %d", w.Key, got)
		}
	}
	// Another gateway moves b ahead; this one then writes all three on
	// the revisions it knows.
	if moved, err := s.AdvanceCursor(ctx(t), keys[1], 50); err != nil || !moved {
		t.Fatal(moved, err)
	}
	prev := []uint64{ws[0].Rev, ws[1].Rev, ws[2].Rev}
	for i := range ws {
		ws[i].Seq = uint64(20 + i)
	}
	before := gets()
	s.AdvanceCursors(ctx(t), ws)
	if n := gets() - before; n != 1 {
		t.Fatalf("%d cursor reads for three writes on known revisions, one of them stale: want 1 (only the stale one falls back)", n)
	}
	if ws[0].Err != nil || ws[0].Rev == 0 || ws[0].Rev == prev[0] || ws[2].Err != nil || ws[2].Rev == 0 {
		t.Fatalf("second write: %+v", ws)
	}
	if ws[1].Err != nil || ws[1].Rev != 0 {
		t.Fatalf("a cursor ahead of the write: %+v (want no error, no revision)", ws[1])
	}
	for i, want := range []uint64{20, 50, 22} {
		if got, _ := s.Cursor(ctx(t), keys[i]); got != want {
			t.Fatalf("cursor %s = %d, want %d", keys[i], got, want)
		}
	}
	// With a revision that is no longer the key's (a delete, an UNSUB),
	// the write falls back and still lands.
	if err := s.DeleteCursor(ctx(t), keys[0]); err != nil {
		t.Fatal(err)
	}
	one := []CursorWrite{{Key: keys[0], Seq: 30, Rev: ws[0].Rev}}
	s.AdvanceCursors(ctx(t), one)
	if got, _ := s.Cursor(ctx(t), keys[0]); one[0].Err != nil || one[0].Rev == 0 || got != 30 {
		t.Fatalf("after a delete: %+v, cursor %d", one[0], got)
	}
}

// A cluster that has just started may say it has no peers to place
// replicas on; ensure tries again until the create succeeds, and gives up
// at once on any other JetStream error, or when ctx ends.
func TestEnsureRetriesWhileNoPeers(t *testing.T) {
	noPeersErr := &jetstream.APIError{Code: 400, ErrorCode: jsErrNoPeers, Description: "no suitable peers for placement, peer offline"}
	calls := 0
	v, err := ensure(context.Background(), func(context.Context) (int, error) {
		calls++
		if calls < 3 {
			return 0, fmt.Errorf("create bucket: %w", noPeersErr)
		}
		return 7, nil
	})
	if err != nil || v != 7 || calls != 3 {
		t.Fatalf("got %d, %v after %d calls; want 7, nil after 3", v, err, calls)
	}

	other := &jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeBadRequest, Description: "bad request"}
	calls = 0
	if _, err := ensure(context.Background(), func(context.Context) (int, error) { calls++; return 0, other }); !errors.Is(err, other) || calls != 1 {
		t.Fatalf("another API error: %v after %d calls; want it after 1", err, calls)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = ensure(ctx, func(context.Context) (int, error) { return 0, noPeersErr })
	if !noPeers(err) || time.Since(start) > 2*time.Second {
		t.Fatalf("no peers until ctx ends: %v after %v; want the no-peers error once ctx ended", err, time.Since(start))
	}
}

// A lookup JetStream leaves unanswered is asked again after attempt, not
// waited on until the whole start's ctx ends; other errors are asked again
// every wait, and the last one comes back once ctx ends.
func TestRetryAsksAgainWhenUnanswered(t *testing.T) {
	anyErr := func(error) bool { return true }
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	calls := 0
	start := time.Now()
	v, err := retry(ctx, 100*time.Millisecond, 10*time.Millisecond, anyErr, func(actx context.Context) (int, error) {
		calls++
		if calls == 1 {
			<-actx.Done() // the request nobody answers
			return 0, actx.Err()
		}
		return 7, nil
	})
	if err != nil || v != 7 || calls != 2 || time.Since(start) > 2*time.Second {
		t.Fatalf("got %d, %v after %d calls and %v; want 7, nil after 2 calls well within ctx", v, err, calls, time.Since(start))
	}

	notFound := errors.New("stream not found")
	ctx2, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	calls = 0
	if _, err := retry(ctx2, time.Second, 10*time.Millisecond, anyErr, func(context.Context) (int, error) { calls++; return 0, notFound }); !errors.Is(err, notFound) || calls < 5 {
		t.Fatalf("not found until ctx ends: %v after %d calls; want that error after several calls", err, calls)
	}
}
