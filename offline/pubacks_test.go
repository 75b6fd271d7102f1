package offline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"herald/config"
)

// Each message gets its own seq back, in the order of the batch, across
// concurrent batches; a repeated id comes back as the same seq, marked.
func TestPublishAllAnswersEachMessage(t *testing.T) {
	s, _ := openStore(t)
	const batches, per = 8, 250
	type result struct {
		res []Stored
		err error
	}
	results := make(chan result, batches)
	for b := 0; b < batches; b++ {
		go func() {
			msgs := make([]Publish, per)
			for i := range msgs {
				msgs[i] = Publish{App: "demo", Channel: fmt.Sprintf("u.b%d-%d", b, i), Data: []byte(fmt.Sprintf("%d/%d", b, i))}
			}
			res, err := s.PublishAll(ctx(t), msgs)
			results <- result{res, err}
		}()
	}
	seen := map[uint64]bool{}
	for b := 0; b < batches; b++ {
		r := <-results
		if r.err != nil || len(r.res) != per {
			t.Fatalf("batch: %d results, %v", len(r.res), r.err)
		}
		for i, st := range r.res {
			if st.Seq == 0 || seen[st.Seq] || st.Duplicate {
				t.Fatalf("result %d: %+v (seen before: %v)", i, st, seen[st.Seq])
			}
			seen[st.Seq] = true
		}
	}
	msgs := []Publish{{App: "demo", Channel: "u.dup", Data: []byte("a"), ID: "k1"}, {App: "demo", Channel: "u.dup", Data: []byte("b"), ID: "k2"}}
	a, err := s.PublishAll(ctx(t), msgs)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.PublishAll(ctx(t), msgs)
	if err != nil || b[0].Seq != a[0].Seq || b[1].Seq != a[1].Seq || !b[0].Duplicate || !b[1].Duplicate {
		t.Fatalf("again: %+v vs %+v, %v", b, a, err)
	}
}

// The seq answered for a message is the one its data was stored under.
func TestPublishAllSeqMatchesData(t *testing.T) {
	s, _ := openStore(t)
	msgs := make([]Publish, 100)
	for i := range msgs {
		msgs[i] = Publish{App: "demo", Channel: fmt.Sprintf("u.m%d", i%7), Data: []byte(fmt.Sprintf("data-%d", i))}
	}
	res, err := s.PublishAll(ctx(t), msgs)
	if err != nil {
		t.Fatal(err)
	}
	for i, st := range res {
		m, err := s.stream.GetMsg(ctx(t), st.Seq)
		if err != nil {
			t.Fatal(err)
		}
		if string(m.Data) != fmt.Sprintf("data-%d", i) || m.Subject != StoredSubject("demo", msgs[i].Channel) {
			t.Fatalf("message %d answered seq %d, which holds %q on %s", i, st.Seq, m.Data, m.Subject)
		}
	}
}

// A refusal by JetStream and a missing stream are errors, not seqs; a
// deadline ends the wait.
func TestPublishAllErrors(t *testing.T) {
	s, nc := openStore(t)
	// Too big for the connection: refused before it leaves.
	big := make([]byte, 2<<20)
	_, err := s.PublishAll(ctx(t), []Publish{{App: "demo", Channel: "u.a", Data: []byte("ok")}, {App: "demo", Channel: "u.a", Data: big}})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("oversized message: %v", err)
	}
	// JetStream refusing a message: its error reply is the batch's error.
	m, err := s.pubAcks()
	if err != nil {
		t.Fatal(err)
	}
	b, reply, done := m.open(1)
	refused := &nats.Msg{Subject: StoredSubject("demo", "u.a"), Reply: reply(0), Data: []byte("x"), Header: nats.Header{}}
	refused.Header.Set("Nats-Expected-Stream", "NOT-HERALD")
	if err := nc.PublishMsg(refused); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.done:
	case <-time.After(5 * time.Second):
		t.Fatal("no reply")
	}
	done()
	if b.err == nil || !strings.Contains(b.err.Error(), "JetStream refused the message") || b.out[0].Seq != 0 {
		t.Fatalf("refusal read as %+v, %v", b.out[0], b.err)
	}
	// The stream gone: nobody answers; back within the retry window (a
	// leader election), the message is stored after all.
	if err := s.js.DeleteStream(ctx(t), StreamName); err != nil {
		t.Fatal(err)
	}
	back := make(chan error, 1)
	go func() {
		res, err := s.PublishAll(ctx(t), []Publish{{App: "demo", Channel: "u.a", Data: []byte("late")}})
		if err == nil && res[0].Seq == 0 {
			err = fmt.Errorf("no seq")
		}
		back <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if _, err := s.js.CreateOrUpdateStream(ctx(t), StreamConfig(config.Default().Store)); err != nil {
		t.Fatal(err)
	}
	if err := <-back; err != nil {
		t.Fatalf("a message published while the stream was away: %v", err)
	}
	if err := s.js.DeleteStream(ctx(t), StreamName); err != nil {
		t.Fatal(err)
	}
	_, err = s.PublishAll(ctx(t), []Publish{{App: "demo", Channel: "u.a", Data: []byte("x")}})
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "no responders") {
		t.Fatalf("no stream: %v", err)
	}
	// A reply that never comes: the context bounds the wait.
	sub, err := nc.Subscribe(StoredSubject("demo", ">"), func(*nats.Msg) {}) // a silent responder
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	c, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = s.PublishAll(c, []Publish{{App: "demo", Channel: "u.a", Data: []byte("x")}})
	if !errors.Is(err, ErrUnavailable) || time.Since(start) > 2*time.Second {
		t.Fatalf("silent store: %v after %v", err, time.Since(start))
	}
}

// The PubAck JetStream sends for a stored message takes the fast path,
// and the fast path agrees with encoding/json whenever it answers.
func TestPlainPubAck(t *testing.T) {
	for _, c := range []struct {
		in  string
		seq uint64
		ok  bool
	}{
		{`{"stream":"HERALD","seq":1}`, 1, true},
		{`{"stream":"HERALD","seq":18446744073709551615}`, 0, false}, // 20 digits: left to encoding/json
		{`{"stream":"HERALD","seq":1234567890123456789}`, 1234567890123456789, true},
		{`{"stream":"HERALD","seq":0}`, 0, false},
		{`{"stream":"HERALD","seq":07}`, 0, false},
		{`{"stream":"HERALD","seq":}`, 0, false},
		{`{"stream":"HERALD","seq":17,"duplicate": true}`, 0, false},
		{`{"stream":"HERALD","domain":"hub","seq":17}`, 0, false},
		{`{"stream":"OTHER","seq":17}`, 0, false},
		{`{"stream":"HERALD","seq":-1}`, 0, false},
		{`{"stream":"HERALD", "seq":17}`, 0, false},
	} {
		seq, ok := plainPubAck([]byte(c.in))
		if seq != c.seq || ok != c.ok {
			t.Errorf("%s: %d %v, want %d %v", c.in, seq, ok, c.seq, c.ok)
		}
	}
}

// The PubAck the embedded server really sends takes the fast path (if
// nats-server changed its format, every ack would silently fall back to
// encoding/json: this test says so instead).
func TestJetStreamPubAckIsPlain(t *testing.T) {
	s, _ := openStore(t)
	msg, err := s.nc.Request(StoredSubject("demo", "u.plain"), []byte("x"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := plainPubAck(msg.Data); !ok {
		t.Fatalf("JetStream's PubAck %s does not take the fast path", msg.Data)
	}
}

func FuzzPlainPubAck(f *testing.F) {
	f.Add([]byte(`{"stream":"HERALD","seq":42}`))
	f.Add([]byte(`{"stream":"HERALD","seq":42,"duplicate": true}`))
	f.Add([]byte(`{"stream":"HERALD","seq":4x}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		seq, ok := plainPubAck(b)
		if !ok {
			return
		}
		var a pubAck
		if err := json.Unmarshal(b, &a); err != nil || a.Stream != StreamName || a.Seq != seq || a.Duplicate || a.Error != nil {
			t.Fatalf("%q: fast path %d, encoding/json %+v %v", b, seq, a, err)
		}
	})
}

// A batch id is reused only once every message of its batch got its reply:
// the next batch then replies on the same subjects (which keeps
// nats-server's subject caches warm), while a batch given up on keeps its
// id to itself, so its late replies cannot land in another batch.
func TestPubAckIdsReusedOnlyWhenEveryReplyCame(t *testing.T) {
	s, nc := openStore(t)
	m, err := s.pubAcks()
	if err != nil {
		t.Fatal(err)
	}
	publish := func(reply, data string) {
		t.Helper()
		if err := nc.PublishMsg(&nats.Msg{Subject: StoredSubject("demo", "u.r"), Reply: reply, Data: []byte(data)}); err != nil {
			t.Fatal(err)
		}
	}
	wait := func(b *ackBatch) {
		t.Helper()
		select {
		case <-b.done:
		case <-time.After(5 * time.Second):
			t.Fatal("no replies")
		}
	}

	b1, r1, done1 := m.open(2)
	publish(r1(0), "1/0")
	publish(r1(1), "1/1")
	wait(b1)
	done1()
	b2, r2, done2 := m.open(2)
	if r2(0) != r1(0) {
		t.Fatalf("a batch that got every reply left its id unused: %s, then %s", r1(0), r2(0))
	}
	done1() // again, late: must not touch b2, which has its id now
	id, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(r2(0), m.prefix), "_0"), 36, 64)
	if err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	lent := m.waiting[id] == b2
	m.mu.Unlock()
	if !lent {
		t.Fatal("a second done of a finished batch unregistered the batch its id was lent to")
	}
	publish(r2(0), "2/0")
	deadline := time.Now().Add(5 * time.Second)
	for {
		m.mu.Lock()
		left := b2.left
		m.mu.Unlock()
		if left == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no reply for 2/0")
		}
		time.Sleep(5 * time.Millisecond)
	}
	done2() // given up on with one reply to come

	b3, r3, done3 := m.open(2)
	defer done3()
	if r3(0) == r2(0) || r3(1) == r2(1) {
		t.Fatalf("a batch given up on lent its id to the next: %s", r3(1))
	}
	// The late reply comes first (one connection, one stream: replies in
	// order), then b3's own; b3 must get exactly its own two seqs.
	publish(r2(1), "2/1 late")
	publish(r3(0), "3/0")
	publish(r3(1), "3/1")
	wait(b3)
	if b3.err != nil || b3.out[0].Seq == 0 || b3.out[1].Seq != b3.out[0].Seq+1 {
		t.Fatalf("b3 got %+v, %v: a late reply of another batch landed in it", b3.out, b3.err)
	}
	for i, want := range []string{"3/0", "3/1"} {
		got, err := s.stream.GetMsg(ctx(t), b3.out[i].Seq)
		if err != nil || string(got.Data) != want {
			t.Fatalf("seq %d of b3's message %d holds %q (%v), want %q", b3.out[i].Seq, i, got.Data, err, want)
		}
	}
}
