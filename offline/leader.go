package offline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// Reads that end a backlog must not trust a lagging replica. With more
// than one replica, Direct Get (fetch, and nats.go's last-message lookup)
// is answered by whichever replica's server is nearest — a client on a
// node that just restarted reads that node's copy, which serves from 90%
// caught up on — so "nothing (more) there" may only mean "not here yet".
// Taken as the end, a catch-up switches the device to live delivery and a
// message stored while the gateway's live subscription was down (a NATS
// node failing over) is never sent. The stream's leader has every message
// it acknowledged: these answers are confirmed with it.

// leaderGet asks the stream's leader for the first message of subject at
// or after seq, or, with seq 0, the last message of subject (no
// wildcards). found is false when there is none.
func (s *Store) leaderGet(ctx context.Context, stream, subject string, seq uint64) (m Message, found bool, err error) {
	req := map[string]any{"last_by_subj": subject}
	if seq > 0 {
		req = map[string]any{"seq": seq, "next_by_subj": subject}
	}
	body, _ := json.Marshal(req)
	var reply *nats.Msg
	err = askAgain(ctx, func(actx context.Context) (err error) {
		reply, err = s.nc.RequestWithContext(actx, "$JS.API.STREAM.MSG.GET."+stream, body)
		return err
	})
	if err != nil {
		return Message{}, false, fmt.Errorf("%w: leader get %s: %v", ErrUnavailable, subject, err)
	}
	return parseLeaderGet(reply.Data)
}

// How long askAgain waits for the first answer, and at most for a later
// one. A variable for its test.
var askWaits = struct{ first, max time.Duration }{time.Second, 4 * time.Second}

// askAgain runs req (a request that is safe to repeat) with a context that
// ends a second from now and, while it fails only by that end and ctx is
// alive, again with twice the wait, up to 4 s. An answer can be lost on its
// way: a route that broke and came back drops what was crossing it, and
// the leader's node drops an answer to a reply subscription it does not
// know yet (just after a reconnect, nats.go makes it again and the
// interest travels on). Asking again then costs a second or a few where
// waiting for ctx would cost its whole deadline.
func askAgain(ctx context.Context, req func(context.Context) error) error {
	for wait := askWaits.first; ; wait = min(2*wait, askWaits.max) {
		actx, cancel := context.WithTimeout(ctx, wait)
		err := req(actx)
		cancel()
		if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
	}
}

// msgGetResponse is JetStream's STREAM.MSG.GET answer.
type msgGetResponse struct {
	Message *struct {
		Subject string    `json:"subject"`
		Seq     uint64    `json:"seq"`
		Header  []byte    `json:"hdrs"`
		Data    []byte    `json:"data"`
		Time    time.Time `json:"time"`
	} `json:"message"`
	Error *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
}

// JetStream's error code for "no message found".
const jsNoMessageFound = 10037

func parseLeaderGet(data []byte) (Message, bool, error) {
	var r msgGetResponse
	if err := json.Unmarshal(data, &r); err != nil {
		return Message{}, false, fmt.Errorf("offline: leader get: %v", err)
	}
	switch {
	case r.Error != nil && (r.Error.ErrCode == jsNoMessageFound || r.Error.Code == 404):
		return Message{}, false, nil
	case r.Error != nil:
		return Message{}, false, fmt.Errorf("%w: leader get: %d %s", ErrUnavailable, r.Error.ErrCode, r.Error.Description)
	case r.Message == nil || r.Message.Seq == 0:
		return Message{}, false, fmt.Errorf("offline: leader get: an answer without a message")
	}
	m := Message{Seq: r.Message.Seq, Subject: r.Message.Subject, Data: r.Message.Data, Time: r.Message.Time}
	if len(r.Message.Header) > 0 {
		h, err := nats.DecodeHeadersMsg(r.Message.Header)
		if err != nil {
			return Message{}, false, fmt.Errorf("offline: leader get: headers: %v", err)
		}
		m.Header = h
		m.setExpires()
	}
	return m, true, nil
}

// confirmEnd checks a direct read that reached the end of subject (from
// from, up to max messages; pending is the replica's count of more) with
// the leader when the stream is replicated. If the leader has a message
// the replica did not, it is added (room permitting) and pending becomes
// at least 1, so the caller reads on instead of taking the range as done.
func (s *Store) confirmEnd(ctx context.Context, stream, subject string, from uint64, max int, msgs []Message, pending uint64) ([]Message, uint64, error) {
	if !s.replicated || pending > 0 {
		return msgs, pending, nil
	}
	next := from
	if n := len(msgs); n > 0 {
		next = msgs[n-1].Seq + 1
	}
	m, found, err := s.leaderGet(ctx, stream, subject, next)
	if err != nil {
		return msgs, 0, err
	}
	if !found {
		return msgs, 0, nil
	}
	if len(msgs) < max {
		msgs = append(msgs, m)
	}
	return msgs, 1, nil
}

// leaderHasMore says whether the leader has a message of subject (wildcards
// allowed) from seq up to upTo, when the stream is replicated: a scan's
// consumer, on whichever replica it was placed, counted none.
func (s *Store) leaderHasMore(ctx context.Context, subject string, seq, upTo uint64) (bool, error) {
	if !s.replicated || seq > upTo {
		return false, nil
	}
	m, found, err := s.leaderGet(ctx, StreamName, subject, seq)
	if err != nil {
		return false, err
	}
	return found && m.Seq <= upTo, nil
}
