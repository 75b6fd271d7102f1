package offline

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"herald/config"
	"herald/nats/natstest"
	"herald/wire"
)

// A store on a single NATS server has no pulse (no routes to lose copies
// on): its sequences are the pushes' own.
func TestNoPulseOnASingleServer(t *testing.T) {
	s, _ := openStore(t)
	if _, err := s.stream.GetLastMsgForSubject(ctx(t), PulseScheduleSubject); err == nil {
		t.Fatal("Open on a single server made the pulse's schedule")
	}
}

// The pulse's schedule makes the stream store a pulse every PulseInterval,
// each republished with the previous one's sequence; no app sees it among
// its schedules, and no app name can reach its subjects.
func TestPulsesFollowEachOther(t *testing.T) {
	s, nc := openStore(t)
	got := make(chan *nats.Msg, 16)
	sub, err := nc.ChanSubscribe(PulseLiveSubject, got)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := s.EnsurePulse(ctx(t)); err != nil {
		t.Fatal(err)
	}
	var prev Pulse
	start := time.Now()
	for i := 0; i < 3; i++ {
		select {
		case m := <-got:
			p, err := ParsePulse(m)
			if err != nil {
				t.Fatal(err)
			}
			if i > 0 && (p.Last != prev.Seq || p.Seq <= prev.Seq) {
				t.Fatalf("pulse %d: %+v after %+v", i, p, prev)
			}
			if ttl := m.Header.Get("Nats-TTL"); ttl != ttlHeader(PulseTTL) {
				t.Fatalf("pulse %d expires after %q, want %q", i, ttl, ttlHeader(PulseTTL))
			}
			prev = p
		case <-time.After(5 * PulseInterval):
			t.Fatalf("no pulse %d", i)
		}
	}
	if d := time.Since(start); d < PulseInterval {
		t.Fatalf("three pulses in %v: faster than one per %v", d, PulseInterval)
	}
	if scheds, err := s.Schedules(ctx(t), "demo"); err != nil || len(scheds) != 0 {
		t.Fatalf("demo's schedules: %v %v", scheds, err)
	}
	if app, _, ok := ChannelOfStored(PulseSubject); !ok || wire.ValidName(app) {
		t.Fatalf("the pulse's subject belongs to app %q, a valid name", app)
	}
}

func TestParsePulse(t *testing.T) {
	msg := func(seq, last string) *nats.Msg {
		m := &nats.Msg{Subject: PulseLiveSubject, Header: nats.Header{}}
		if seq != "" {
			m.Header.Set(jetstream.SequenceHeader, seq)
		}
		if last != "" {
			m.Header.Set(jetstream.LastSequenceHeader, last)
		}
		return m
	}
	if p, err := ParsePulse(msg("42", "41")); err != nil || p != (Pulse{Seq: 42, Last: 41}) {
		t.Fatalf("%+v %v", p, err)
	}
	if p, err := ParsePulse(msg("7", "0")); err != nil || p != (Pulse{Seq: 7}) {
		t.Fatalf("%+v %v", p, err)
	}
	for _, bad := range [][2]string{{"", "1"}, {"0", "0"}, {"x", "1"}, {"5", ""}, {"5", "-1"}} {
		if _, err := ParsePulse(msg(bad[0], bad[1])); err == nil {
			t.Fatalf("ParsePulse accepted seq %q last %q", bad[0], bad[1])
		}
	}
}

// On a cluster, Open makes a replicated stream and its pulse, and a store
// that attaches to them (a gateway's) also confirms with the stream's
// leader the reads that end a backlog: a replica that is behind may answer
// "nothing there" (attach once forgot, and a gateway whose NATS node had
// just come back from a route break ended a catch-up before the message
// stored meanwhile).
func TestAttachOnAClusterReadsLikeOpen(t *testing.T) {
	url := natstest.StartCluster(t)
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := Open(c, natstest.Connect(t, url), config.Default().Store)
	if err != nil {
		t.Fatal(err)
	}
	if !s.replicated {
		t.Fatal("Open on a 3-node cluster made an unreplicated store")
	}
	if _, err := s.stream.GetLastMsgForSubject(c, PulseScheduleSubject); err != nil {
		t.Fatalf("Open on a cluster made no pulse: %v", err)
	}
	a, err := Attach(c, natstest.Connect(t, url))
	if err != nil {
		t.Fatal(err)
	}
	staleReplica(t, a)
	res, err := s.PublishAll(c, []Publish{{App: "demo", Channel: "u.alice", Data: []byte("one")}, {App: "demo", Channel: "u.alice", Data: []byte("two")}})
	if err != nil {
		t.Fatal(err)
	}
	subj, last := StoredSubject("demo", "u.alice"), res[1].Seq
	for i := 0; i < 40; i++ {
		if seq, err := a.LastSeq(c, subj); err != nil || seq != last {
			t.Fatalf("the attached store's LastSeq = %d, %v; want %d", seq, err, last)
		}
	}
}
