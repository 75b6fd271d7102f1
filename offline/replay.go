package offline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Replay is an operator's order to re-deliver a device's user channel from
// sequence From (herald ctl replay). It waits in the bucket herald-replays
// under ReplayKey until the gateway holding the device (now, or at its
// next CONNECT) has sent RESYNC and the device has acknowledged a message
// from From on; then the gateway deletes it.
type Replay struct {
	App    string    `json:"app"`
	User   string    `json:"user"`
	Device string    `json:"device"`
	From   uint64    `json:"from"`
	At     time.Time `json:"at"`
	// Rev is the order's revision in the bucket (set by WatchReplays):
	// DoneReplay deletes only that revision, not a newer order.
	Rev uint64 `json:"-"`
}

// ReplayKey is "<app>.<user>.<device>", like a connection's key.
func ReplayKey(app, user, device string) string { return app + "." + user + "." + device }

// PutReplay records a replay order.
func (s *Store) PutReplay(ctx context.Context, r Replay) error {
	b, _ := json.Marshal(r)
	if _, err := s.replays.Put(ctx, ReplayKey(r.App, r.User, r.Device), b); err != nil {
		return fmt.Errorf("%w: replay: %v", ErrUnavailable, err)
	}
	return nil
}

// DoneReplay deletes a replay order once carried out: revision rev of key
// (0: whatever is there). A newer order for the same device stays.
func (s *Store) DoneReplay(ctx context.Context, key string, rev uint64) error {
	var opts []jetstream.KVDeleteOpt
	if rev > 0 {
		opts = append(opts, jetstream.LastRevision(rev))
	}
	err := s.replays.Delete(ctx, key, opts...)
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) && !isWrongSequence(err) {
		return fmt.Errorf("%w: replay done: %v", ErrUnavailable, err)
	}
	return nil
}

// WatchReplays calls fn for every pending replay order and every later
// change (r nil: deleted), until stop. ctx bounds only the start.
func (s *Store) WatchReplays(ctx context.Context, log *slog.Logger, fn func(key string, r *Replay)) (stop func(), err error) {
	w, err := s.replays.WatchAll(context.WithoutCancel(ctx))
	if err != nil {
		return nil, fmt.Errorf("%w: watch replays: %v", ErrUnavailable, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for e := range w.Updates() {
			if e == nil {
				continue
			}
			if e.Operation() != jetstream.KeyValuePut {
				fn(e.Key(), nil)
				continue
			}
			var r Replay
			if err := json.Unmarshal(e.Value(), &r); err != nil {
				log.Error("replays bucket holds an invalid order; ignored", "key", e.Key(), "err", err)
				continue
			}
			r.Rev = e.Revision()
			fn(e.Key(), &r)
		}
	}()
	return func() { _ = w.Stop(); <-done }, nil
}

// FirstSeqSince returns the sequence of the first message of subject
// stored at or after t, 0 when there is none.
func (s *Store) FirstSeqSince(ctx context.Context, subject string, t time.Time) (uint64, error) {
	cons, err := s.js.OrderedConsumer(ctx, StreamName, jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{subject},
		DeliverPolicy:     jetstream.DeliverByStartTimePolicy,
		OptStartTime:      &t,
		InactiveThreshold: 10 * time.Second,
		MaxResetAttempts:  2, // fail rather than retry without end (see Scan)
	})
	if err != nil {
		return 0, fmt.Errorf("%w: since %s: %v", ErrUnavailable, subject, err)
	}
	fetched, err := cons.FetchNoWait(1)
	if err != nil {
		return 0, fmt.Errorf("%w: since %s: %v", ErrUnavailable, subject, err)
	}
	var seq uint64
	for jm := range fetched.Messages() {
		if md, err := jm.Metadata(); err == nil {
			seq = md.Sequence.Stream
		}
	}
	if err := fetched.Error(); err != nil {
		return 0, fmt.Errorf("%w: since %s: %v", ErrUnavailable, subject, err)
	}
	return seq, nil
}

// StoreStats are the stream's and buckets' sizes (herald ctl stream).
type StoreStats struct {
	Streams []StreamStats `json:"streams"`
	Buckets []BucketStats `json:"buckets"`
}

// StreamStats is one stream's state.
type StreamStats struct {
	Name      string    `json:"name"`
	Messages  uint64    `json:"messages"`
	Bytes     uint64    `json:"bytes"`
	FirstSeq  uint64    `json:"first_seq"`
	LastSeq   uint64    `json:"last_seq"`
	Subjects  uint64    `json:"subjects"`
	Consumers int       `json:"consumers"`
	Replicas  int       `json:"replicas"`
	Created   time.Time `json:"created"`
}

// BucketStats is one KV bucket's state.
type BucketStats struct {
	Name   string `json:"name"`
	Values uint64 `json:"values"`
	Bytes  uint64 `json:"bytes"`
}

// Stats reads the state of herald's streams and buckets.
func (s *Store) Stats(ctx context.Context) (StoreStats, error) {
	var out StoreStats
	for _, st := range []jetstream.Stream{s.stream, s.up} {
		info, err := st.Info(ctx)
		if err != nil {
			return out, fmt.Errorf("%w: stream info: %v", ErrUnavailable, err)
		}
		out.Streams = append(out.Streams, StreamStats{
			Name: info.Config.Name, Messages: info.State.Msgs, Bytes: info.State.Bytes,
			FirstSeq: info.State.FirstSeq, LastSeq: info.State.LastSeq, Subjects: info.State.NumSubjects,
			Consumers: info.State.Consumers, Replicas: info.Config.Replicas, Created: info.Created,
		})
	}
	for _, kv := range []jetstream.KeyValue{s.apps, s.cursors, s.topics, s.recalls, s.gws, s.replays} {
		st, err := kv.Status(ctx)
		if err != nil {
			return out, fmt.Errorf("%w: bucket status: %v", ErrUnavailable, err)
		}
		out.Buckets = append(out.Buckets, BucketStats{Name: st.Bucket(), Values: st.Values(), Bytes: st.Bytes()})
	}
	return out, nil
}
