package offline

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func TestScheduleFiresOnceAtItsTimeAndIsRepublished(t *testing.T) {
	s, nc := openStore(t)
	live, err := nc.SubscribeSync(LiveSubject("demo", "u.alice"))
	if err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(2 * time.Second).Truncate(time.Second).Add(time.Second)
	if _, err := s.ScheduleAt(ctx(t), "demo", "u.alice", "s1", at, time.Hour, []byte("later")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ScheduleAt(ctx(t), "demo", "u.alice", "s2", at.Add(time.Hour), 0, []byte("cancel me")); err != nil {
		t.Fatal(err)
	}
	list, err := s.Schedules(ctx(t), "demo")
	if err != nil || len(list) != 2 || list[0].ID != "s1" || !list[0].At.Equal(at) || list[0].Channel != "u.alice" {
		t.Fatalf("schedules %+v %v", list, err)
	}
	if err := s.CancelSchedule(ctx(t), "demo", "s2"); err != nil {
		t.Fatal(err)
	}
	if err := s.CancelSchedule(ctx(t), "demo", "s2"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second cancel: %v", err)
	}
	if err := s.CancelSchedule(ctx(t), "other", "s1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("another app cancelled a schedule: %v", err)
	}
	m, err := live.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	got := time.Now()
	if got.Before(at) {
		t.Fatalf("delivered at %v, before %v", got, at)
	}
	l, err := ParseLive(m)
	if err != nil || string(l.Data) != "later" || l.Expires.IsZero() {
		t.Fatalf("live %+v %v (headers %v)", l, err, m.Header)
	}
	if _, err := live.NextMsg(500 * time.Millisecond); err == nil {
		t.Fatal("a schedule fired twice")
	}
	list, _ = s.Schedules(ctx(t), "demo")
	if len(list) != 0 {
		t.Fatalf("schedules left after firing: %+v", list)
	}
}

func TestRecallAndStatus(t *testing.T) {
	s, nc := openStore(t)
	res, err := s.PublishAll(ctx(t), []Publish{
		{App: "demo", Channel: "u.alice", Data: []byte("a")},
		{App: "demo", Channel: "u.alice", Data: []byte("b"), TTL: time.Second},
		{App: "other", Channel: "u.alice", Data: []byte("c")},
	})
	if err != nil {
		t.Fatal(err)
	}
	live, err := nc.SubscribeSync(LiveSubject("demo", "u.alice"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Message(ctx(t), "demo", res[0].Seq); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Message(ctx(t), "demo", res[2].Seq); !errors.Is(err, ErrNotFound) {
		t.Fatalf("another app's message: %v", err)
	}
	if _, err := s.Recall(ctx(t), "demo", res[2].Seq); !errors.Is(err, ErrNotFound) {
		t.Fatalf("recalled another app's message: %v", err)
	}
	if ch, err := s.Recall(ctx(t), "demo", res[0].Seq); err != nil || ch != "u.alice" {
		t.Fatalf("recall: %q %v", ch, err)
	}
	m, err := live.NextMsg(5 * time.Second)
	if err != nil || m.Header.Get(RevokeHeader) == "" {
		t.Fatalf("revoke notice %v %v", m, err)
	}
	if _, err := s.Message(ctx(t), "demo", res[0].Seq); !errors.Is(err, ErrRecalled) {
		t.Fatalf("recalled: %v", err)
	}
	if _, err := s.Recall(ctx(t), "demo", res[0].Seq); !errors.Is(err, ErrRecalled) {
		t.Fatalf("second recall: %v", err)
	}
	time.Sleep(1100 * time.Millisecond)
	if _, err := s.Message(ctx(t), "demo", res[1].Seq); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired: %v", err)
	}
	if _, err := s.Recall(ctx(t), "demo", res[1].Seq); !errors.Is(err, ErrExpired) {
		t.Fatalf("recall of an expired message: %v", err)
	}
	if _, err := s.Message(ctx(t), "demo", res[2].Seq+100); !errors.Is(err, ErrNotFound) {
		t.Fatalf("future seq: %v", err)
	}
}

func TestUserTopics(t *testing.T) {
	s, _ := openStore(t)
	for _, tp := range []string{"news", "sports", "news"} {
		if _, err := s.SetUserTopic(ctx(t), "demo", "alice", tp, true); err != nil {
			t.Fatal(err)
		}
	}
	if changed, err := s.SetUserTopic(ctx(t), "demo", "alice", "weather", false); changed || err != nil {
		t.Fatalf("removing a missing topic: %v %v", changed, err)
	}
	if _, err := s.SetUserTopic(ctx(t), "demo", "alice", "news", false); err != nil {
		t.Fatal(err)
	}
	got, err := s.UserTopics(ctx(t), "demo", "alice")
	if err != nil || len(got) != 1 || got[0] != "sports" {
		t.Fatalf("topics %v %v", got, err)
	}
	if got, _ := s.UserTopics(ctx(t), "other", "alice"); len(got) != 0 {
		t.Fatalf("another app sees %v", got)
	}
}

func TestUpstreamDedup(t *testing.T) {
	s, _ := openStore(t)
	var seqs []uint64
	for i := 0; i < 3; i++ {
		f, err := s.PublishUp("demo", "alice", "phone", "m1", []byte("hello"))
		if err != nil {
			t.Fatal(err)
		}
		select {
		case ack := <-f.Ok():
			seqs = append(seqs, ack.Sequence)
			if i > 0 && !ack.Duplicate {
				t.Fatalf("retry %d not a duplicate", i)
			}
		case err := <-f.Err():
			t.Fatal(err)
		case <-time.After(5 * time.Second):
			t.Fatal("no ack")
		}
	}
	if seqs[0] != seqs[1] || seqs[1] != seqs[2] {
		t.Fatalf("seqs %v", seqs)
	}
	// Another device may use the same id.
	f, _ := s.PublishUp("demo", "bob", "tablet", "m1", []byte("hi"))
	var ack *jetstream.PubAck
	select {
	case ack = <-f.Ok():
	case err := <-f.Err():
		t.Fatal(err)
	}
	if ack.Duplicate {
		t.Fatal("another device's id was taken for a duplicate")
	}
	msgs, err := s.FetchUp(ctx(t), "demo", 0, 10)
	if err != nil || len(msgs) != 2 || msgs[0].User != "alice" || msgs[0].Device != "phone" || msgs[0].ID != "m1" || string(msgs[0].Data) != "hello" {
		t.Fatalf("up %+v %v", msgs, err)
	}
	if msgs, _ := s.FetchUp(ctx(t), "demo", msgs[1].Seq, 10); len(msgs) != 0 {
		t.Fatalf("after the last: %+v", msgs)
	}
}

func TestScanRange(t *testing.T) {
	s, _ := openStore(t)
	var pubs []Publish
	for i := 0; i < 50; i++ {
		pubs = append(pubs, Publish{App: "demo", Channel: fmt.Sprintf("u.s%d", i%5), Data: []byte{byte(i)}})
	}
	pubs = append(pubs, Publish{App: "other", Channel: "u.x", Data: []byte("not demo")})
	res, err := s.PublishAll(ctx(t), pubs)
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	err = s.Scan(ctx(t), StoredSubject("demo", ">"), res[10].Seq, res[39].Seq, func(m *Message) bool {
		got = append(got, m.Seq)
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 30 || got[0] != res[10].Seq || got[29] != res[39].Seq {
		t.Fatalf("scanned %v", got)
	}
	got = got[:0]
	if err := s.Scan(ctx(t), StoredSubject("demo", ">"), res[45].Seq, res[50].Seq, func(m *Message) bool {
		got = append(got, m.Seq)
		return true
	}); err != nil || len(got) != 5 {
		t.Fatalf("to the end: %v %v", got, err)
	}
	// A range with nothing of the subject ends at once, without error.
	start := time.Now()
	if err := s.Scan(ctx(t), StoredSubject("nobody", ">"), 1, res[50].Seq, func(m *Message) bool {
		t.Fatalf("scanned %d for nobody", m.Seq)
		return false
	}); err != nil || time.Since(start) > time.Second {
		t.Fatalf("empty range: %v after %v", err, time.Since(start))
	}
}

// ParseRecall reads what WatchRecalls delivers: bytes from the bucket.
func FuzzParseRecall(f *testing.F) {
	f.Add("demo.17", []byte(`{"channel":"u.alice","at":"2026-11-28T10:00:00Z"}`))
	f.Add("my.app.3", []byte(`{"channel":"t.news"}`))
	f.Add("demo.0", []byte(`{"channel":"b.all"}`))
	f.Add("demo.x", []byte(`{}`))
	f.Add(".5", []byte(`{"channel":"u.a"}`))
	f.Add("demo.017", []byte(`{"channel":"u.a"}`))
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		app, seq, channel, ok := ParseRecall(key, value)
		if !ok {
			return
		}
		if seq == 0 || app == "" || recallKey(app, seq) != key {
			t.Fatalf("ParseRecall(%q) = %q, %d: not the key it read", key, app, seq)
		}
		if _, _, valid := ParseChannel(channel); !valid {
			t.Fatalf("ParseRecall(%q) gave an invalid channel %q", value, channel)
		}
	})
}
