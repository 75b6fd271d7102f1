package offline

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Cursor reads a device's cursor: the highest sequence it acknowledged on a
// channel, 0 when it has none.
func (s *Store) Cursor(ctx context.Context, key string) (uint64, error) {
	seq, _, err := s.cursor(ctx, key)
	return seq, err
}

func (s *Store) cursor(ctx context.Context, key string) (seq, rev uint64, err error) {
	var e jetstream.KeyValueEntry
	err = askAgain(ctx, func(actx context.Context) (err error) {
		e, err = s.cursors.Get(actx, key)
		return err
	})
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("%w: cursor %s: %v", ErrUnavailable, key, err)
	}
	seq, err = strconv.ParseUint(string(e.Value()), 10, 64)
	if err != nil {
		return 0, e.Revision(), fmt.Errorf("offline: cursor %s holds %q", key, e.Value())
	}
	return seq, e.Revision(), nil
}

// AdvanceCursor moves a cursor forward to seq. A cursor never moves back:
// when the stored one is already >= seq nothing is written and moved is
// false. Concurrent writers (a device briefly on two gateways) are resolved
// with compare-and-set on the key's revision.
func (s *Store) AdvanceCursor(ctx context.Context, key string, seq uint64) (moved bool, err error) {
	moved, _, err = s.advanceCursor(ctx, key, seq)
	return moved, err
}

// advanceCursor is AdvanceCursor that also returns the revision it wrote
// (0 when it wrote nothing).
func (s *Store) advanceCursor(ctx context.Context, key string, seq uint64) (moved bool, rev uint64, err error) {
	for attempt := 0; attempt < 5; attempt++ {
		cur, rev, err := s.cursor(ctx, key)
		if err != nil && rev == 0 {
			return false, 0, err
		}
		if err == nil && cur >= seq {
			// Not written: rev holds cur, not seq, and a later
			// compare-and-set on it could move the cursor back to
			// something between seq and cur. The caller learns no rev.
			return false, 0, nil
		}
		val := []byte(strconv.FormatUint(seq, 10))
		var nrev uint64
		if rev == 0 {
			nrev, err = s.cursors.Create(ctx, key, val)
		} else {
			nrev, err = s.cursors.Update(ctx, key, val, rev)
		}
		if err == nil {
			return true, nrev, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !isWrongSequence(err) {
			return false, 0, fmt.Errorf("%w: cursor %s: %v", ErrUnavailable, key, err)
		}
	}
	return false, 0, fmt.Errorf("%w: cursor %s: too much contention", ErrUnavailable, key)
}

// cursorSubjectPrefix is where nats.go's KV puts a cursor key (no
// JetStream domain or API prefix: herald configures none).
const cursorSubjectPrefix = "$KV." + CursorsBucket + "."

// CursorWrite is one cursor for AdvanceCursors: move Key to Seq. Rev is the
// revision of the caller's last write of Key, which stored a seq below
// Seq (0: unknown); on return it is the revision of this write, 0 when
// nothing was written (the stored cursor was already at or past Seq, or
// Err says why).
type CursorWrite struct {
	Key string
	Seq uint64
	Rev uint64
	Err error
}

// AdvanceCursors is AdvanceCursor for many cursors at once, for a gateway
// writing every acknowledged cursor each second. A cursor whose revision
// is known is written in one compare-and-set publish, all of them
// pipelined, instead of a read and a write in turn; a cursor whose
// revision is unknown, or moved (another gateway wrote it), goes through
// AdvanceCursor's read-compare-write. A cursor never moves back either
// way: a write that finds a newer revision is re-read and compared.
func (s *Store) AdvanceCursors(ctx context.Context, ws []CursorWrite) {
	type pending struct {
		i   int
		fut jetstream.PubAckFuture
	}
	var sent []pending
	for i := range ws {
		w := &ws[i]
		w.Err = nil
		if w.Rev == 0 {
			continue
		}
		m := &nats.Msg{Subject: cursorSubjectPrefix + w.Key, Data: []byte(strconv.FormatUint(w.Seq, 10))}
		fut, err := s.js.PublishMsgAsync(m, jetstream.WithExpectLastSequencePerSubject(w.Rev))
		if err != nil {
			w.Rev = 0 // the careful way below
			continue
		}
		sent = append(sent, pending{i, fut})
	}
	for _, p := range sent {
		w := &ws[p.i]
		select {
		case ack := <-p.fut.Ok():
			w.Rev = ack.Sequence
		case <-p.fut.Err():
			w.Rev = 0 // moved by someone else, or lost: the careful way below
		case <-ctx.Done():
			w.Rev, w.Err = 0, fmt.Errorf("%w: cursor %s: %v", ErrUnavailable, w.Key, ctx.Err())
		}
	}
	for i := range ws {
		w := &ws[i]
		if w.Rev != 0 || w.Err != nil {
			continue
		}
		_, w.Rev, w.Err = s.advanceCursor(ctx, w.Key, w.Seq)
	}
}

func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// DeleteCursor removes a device's cursor on a channel (after UNSUB).
func (s *Store) DeleteCursor(ctx context.Context, key string) error {
	if err := s.cursors.Delete(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("%w: cursor %s: %v", ErrUnavailable, key, err)
	}
	return nil
}
