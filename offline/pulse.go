package offline

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The stream's pulse. Live copies are core NATS messages from the stream's
// leader to each gateway's NATS server; a copy lost on the way (a route
// between two NATS nodes that breaks and heals while the leader stays)
// leaves a hole that gap detection (Nats-Last-Sequence) finds only at the
// channel's next message. The pulse is a channel that always has a next
// message: a JetStream message schedule (@every PulseInterval) makes the
// leader itself store a message on PulseSubject, which RePublish sends to
// every gateway on PulseLiveSubject through the same routes as the
// channels' copies. A gateway that sees a pulse whose Nats-Last-Sequence is
// not the last pulse it saw has lost copies on that path and re-syncs
// every channel from the store.
//
// "$herald" is not a valid app name (wire.ValidName), so no app's channel,
// schedule or wildcard can match these subjects.
const (
	PulseInterval = time.Second
	// PulseTTL expires stored pulses: only the last one matters.
	PulseTTL             = time.Minute
	pulseName            = "$herald.pulse"
	PulseScheduleSubject = schedPrefix + pulseName
	PulseSubject         = storedPrefix + pulseName
	PulseLiveSubject     = livePrefix + pulseName
)

// EnsurePulse creates the pulse's schedule unless it is there. Open calls
// it when NATS is a cluster: a single server has no routes to lose copies
// on, and pulses would only use up sequence numbers.
func (s *Store) EnsurePulse(ctx context.Context) error {
	m := &nats.Msg{Subject: PulseScheduleSubject, Header: nats.Header{}}
	m.Header.Set("Nats-Schedule", "@every "+PulseInterval.String())
	m.Header.Set("Nats-Schedule-Target", PulseSubject)
	m.Header.Set("Nats-Schedule-TTL", ttlHeader(PulseTTL))
	_, err := s.js.PublishMsg(ctx, m, jetstream.WithExpectStream(StreamName), jetstream.WithExpectLastSequencePerSubject(0))
	if err != nil && !isWrongSequence(err) {
		return fmt.Errorf("%w: the stream's pulse: %w", ErrUnavailable, err)
	}
	return nil
}

// Pulse is one pulse as a gateway receives it.
type Pulse struct {
	Seq  uint64 // its sequence in the stream
	Last uint64 // the previous pulse's sequence when it was stored (0: none left)
}

// ParsePulse reads a message received on PulseLiveSubject.
func ParsePulse(m *nats.Msg) (Pulse, error) {
	seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
	if err != nil || seq == 0 {
		return Pulse{}, fmt.Errorf("offline: pulse without a valid %s header", jetstream.SequenceHeader)
	}
	last, err := strconv.ParseUint(m.Header.Get(jetstream.LastSequenceHeader), 10, 64)
	if err != nil {
		return Pulse{}, fmt.Errorf("offline: pulse without a valid %s header", jetstream.LastSequenceHeader)
	}
	return Pulse{Seq: seq, Last: last}, nil
}
