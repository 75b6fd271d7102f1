package offline

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"
)

// Cursor reads a device's cursor: the highest sequence it acknowledged on a
// channel, 0 when it has none.
func (s *Store) Cursor(ctx context.Context, key string) (uint64, error) {
	seq, _, err := s.cursor(ctx, key)
	return seq, err
}

func (s *Store) cursor(ctx context.Context, key string) (seq, rev uint64, err error) {
	e, err := s.cursors.Get(ctx, key)
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
	for attempt := 0; attempt < 5; attempt++ {
		cur, rev, err := s.cursor(ctx, key)
		if err != nil && rev == 0 {
			return false, err
		}
		if err == nil && cur >= seq {
			return false, nil
		}
		val := []byte(strconv.FormatUint(seq, 10))
		if rev == 0 {
			_, err = s.cursors.Create(ctx, key, val)
		} else {
			_, err = s.cursors.Update(ctx, key, val, rev)
		}
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !isWrongSequence(err) {
			return false, fmt.Errorf("%w: cursor %s: %v", ErrUnavailable, key, err)
		}
	}
	return false, fmt.Errorf("%w: cursor %s: too much contention", ErrUnavailable, key)
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
