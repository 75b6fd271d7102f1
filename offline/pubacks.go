package offline

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// ackMux collects the PubAcks of PublishAll batches through one wildcard
// subscription: message i of batch b replies to "<prefix><b>_<i>" (base 36).
// Compared with jetstream.PublishMsgAsync it keeps one waiting entry per
// batch instead of a future, a map entry and two channels per message.
//
// A batch id is never used twice, so a reply can only reach the batch it
// was meant for or no one. JetStream may answer a message more than once:
// a stream leader elected after a failover answers the messages it applies
// then, some of them already answered by the old leader. And a batch given
// up on (its ctx ended) may still get a late reply. (Ids were once reused
// to keep nats-server's subject caches warm; TestChaos then saw the API
// answer one user's push with another user's seq after a NATS node was
// killed. docs/benchmarks.md has what the reuse saved.)
type ackMux struct {
	nc      *nats.Conn
	prefix  string // "_INBOX.<nuid>."
	sub     *nats.Subscription
	mu      sync.Mutex
	next    uint64 // last batch id
	waiting map[uint64]*ackBatch
}

// ackBatch is one PublishAll's replies.
type ackBatch struct {
	msgs    []*nats.Msg // kept to publish again after "no responders"
	out     []Stored
	got     []bool
	retries []uint8
	left    int
	err     error
	done    chan struct{}
}

// While a stream's leader is being elected JetStream may not answer at all
// ("no responders"): such a message is published again, as nats.go's own
// async publish does (DefaultPubRetryAttempts, DefaultPubRetryWait).
const (
	noRespondersRetries = 2
	noRespondersWait    = 250 * time.Millisecond
)

func (s *Store) pubAcks() (*ackMux, error) {
	s.ackOnce.Do(func() {
		m := &ackMux{nc: s.nc, prefix: s.nc.NewInbox() + ".", waiting: map[uint64]*ackBatch{}}
		m.sub, s.ackErr = s.nc.Subscribe(m.prefix+"*", m.route)
		if s.ackErr != nil {
			s.ackErr = fmt.Errorf("%w: ack subscription: %v", ErrUnavailable, s.ackErr)
			return
		}
		_ = m.sub.SetPendingLimits(-1, -1) // bounded by the batches in flight
		s.acks = m
	})
	return s.acks, s.ackErr
}

// open registers a batch of n messages; reply(i) is message i's reply
// subject; the caller puts message i in b.msgs[i] before publishing it;
// done unregisters the batch.
func (m *ackMux) open(n int) (b *ackBatch, reply func(i int) string, done func()) {
	b = &ackBatch{msgs: make([]*nats.Msg, n), out: make([]Stored, n), got: make([]bool, n), retries: make([]uint8, n), left: n, done: make(chan struct{})}
	m.mu.Lock()
	m.next++
	id := m.next
	m.waiting[id] = b
	m.mu.Unlock()
	base := m.prefix + strconv.FormatUint(id, 36) + "_"
	return b, func(i int) string { return base + strconv.FormatUint(uint64(i), 36) }, func() {
		m.mu.Lock()
		delete(m.waiting, id)
		m.mu.Unlock()
	}
}

// pubAck is JetStream's answer to a publish.
type pubAck struct {
	Stream    string `json:"stream"`
	Seq       uint64 `json:"seq"`
	Duplicate bool   `json:"duplicate"`
	Error     *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
}

// plainAckPrefix is how JetStream (nats-server's stream.go, mset.pubAck)
// begins the PubAck of a message stored in the HERALD stream of a server
// without a JetStream domain.
const plainAckPrefix = `{"stream":"` + StreamName + `","seq":`

// plainPubAck reads the PubAck of a plainly stored message —
// {"stream":"HERALD","seq":N}, byte for byte as JetStream writes it —
// without encoding/json, which cost the dispatcher more than the rest of
// its PubAck handling together. Anything else (a duplicate, an error,
// another stream, a domain, other spacing) is not ok and goes through
// json.Unmarshal.
func plainPubAck(b []byte) (seq uint64, ok bool) {
	if len(b) < len(plainAckPrefix)+2 || string(b[:len(plainAckPrefix)]) != plainAckPrefix || b[len(b)-1] != '}' {
		return 0, false
	}
	digits := b[len(plainAckPrefix) : len(b)-1]
	if len(digits) > 19 || (len(digits) > 1 && digits[0] == '0') {
		return 0, false // 19 digits cannot overflow a uint64; JSON numbers have no leading zeros
	}
	for _, d := range digits {
		if d < '0' || d > '9' {
			return 0, false
		}
		seq = seq*10 + uint64(d-'0')
	}
	return seq, seq > 0
}

var errNoResponders = errors.New("no JetStream stream answered (no responders)")

func (m *ackMux) route(msg *nats.Msg) {
	token := msg.Subject[len(m.prefix):]
	bs, is, ok := strings.Cut(token, "_")
	if !ok {
		return
	}
	id, err1 := strconv.ParseUint(bs, 36, 64)
	i, err2 := strconv.ParseUint(is, 36, 32)
	if err1 != nil || err2 != nil {
		return
	}
	var st Stored
	var err error
	if len(msg.Data) == 0 && msg.Header.Get("Status") == "503" {
		err = errNoResponders
	} else if seq, ok := plainPubAck(msg.Data); ok {
		st = Stored{Seq: seq}
	} else {
		var a pubAck
		switch e := json.Unmarshal(msg.Data, &a); {
		case e != nil:
			err = fmt.Errorf("bad PubAck %q: %v", msg.Data, e)
		case a.Error != nil:
			err = fmt.Errorf("JetStream refused the message: %s (code %d, err_code %d)", a.Error.Description, a.Error.Code, a.Error.ErrCode)
		case a.Stream != StreamName:
			err = fmt.Errorf("stored by stream %q, not %s: another stream captures herald's subjects", a.Stream, StreamName)
		default:
			st = Stored{Seq: a.Seq, Duplicate: a.Duplicate}
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	b := m.waiting[id]
	if b == nil || int(i) >= len(b.out) || b.got[i] {
		return // the caller gave up, or a repeated reply
	}
	if errors.Is(err, errNoResponders) && b.retries[i] < noRespondersRetries && b.msgs[i] != nil {
		b.retries[i]++
		again := b.msgs[i]
		time.AfterFunc(noRespondersWait, func() { _ = m.nc.PublishMsg(again) })
		return // its next reply decides
	}
	b.got[i] = true
	b.out[i] = st
	if err != nil && b.err == nil {
		b.err = err
	}
	if b.left--; b.left == 0 {
		close(b.done)
	}
}
