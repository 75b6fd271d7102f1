package offline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

// No reply subject is ever used by two batches. JetStream may answer a
// message more than once: a stream leader elected after a failover answers
// the messages it applies then, some already answered by the old leader
// (TestChaos once saw the API hand one user's seq to another user's push,
// 7 s later, after a NATS node was killed). A repeated answer, or a late one
// for a batch given up on, must find no one waiting.
func TestPubAckRepliesNeverReachAnotherBatch(t *testing.T) {
	s, nc := openStore(t)
	m, err := s.pubAcks()
	if err != nil {
		t.Fatal(err)
	}
	publish := func(reply, id, data string) {
		t.Helper()
		msg := &nats.Msg{Subject: StoredSubject("demo", "u.r"), Reply: reply, Data: []byte(data), Header: nats.Header{}}
		if id != "" {
			msg.Header.Set(nats.MsgIdHdr, id)
		}
		if err := nc.PublishMsg(msg); err != nil {
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
	holds := func(b *ackBatch, want ...string) {
		t.Helper()
		for i, w := range want {
			if b.out[i].Duplicate {
				t.Fatalf("message %q was answered as a duplicate (seq %d): another batch's reply landed in it", w, b.out[i].Seq)
			}
			got, err := s.stream.GetMsg(ctx(t), b.out[i].Seq)
			if err != nil || string(got.Data) != w {
				t.Fatalf("message %d was answered seq %d, which holds %q (%v), want %q", i, b.out[i].Seq, got.Data, err, w)
			}
		}
	}

	// A batch that got every reply, then JetStream answers its message
	// again (published again with its id, JetStream repeats the answer to
	// the same reply subject) while the next batch waits.
	b1, r1, done1 := m.open(1)
	publish(r1(0), "b1-0", "1/0")
	wait(b1)
	done1()
	b2, r2, done2 := m.open(1)
	if r2(0) == r1(0) {
		t.Fatalf("two batches share the reply subject %s", r2(0))
	}
	publish(r1(0), "b1-0", "1/0") // one connection, one stream: answered before b2's
	publish(r2(0), "", "2/0")
	wait(b2)
	if b2.err != nil {
		t.Fatal(b2.err)
	}
	holds(b2, "2/0")
	done2()

	// A batch given up on with a reply to come, then the next batch.
	b3, r3, done3 := m.open(2)
	publish(r3(0), "", "3/0")
	deadline := time.Now().Add(5 * time.Second)
	for {
		m.mu.Lock()
		left := b3.left
		m.mu.Unlock()
		if left == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no reply for 3/0")
		}
		time.Sleep(5 * time.Millisecond)
	}
	done3()
	b4, r4, done4 := m.open(2)
	defer done4()
	if r4(0) == r3(0) || r4(1) == r3(1) {
		t.Fatalf("a batch given up on lent its reply subjects to the next: %s", r4(1))
	}
	publish(r3(1), "", "3/1 late")
	publish(r4(0), "", "4/0")
	publish(r4(1), "", "4/1")
	wait(b4)
	if b4.err != nil {
		t.Fatal(b4.err)
	}
	holds(b4, "4/0", "4/1")
}
