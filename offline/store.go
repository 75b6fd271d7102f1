// Package offline is herald's storage layer on JetStream: the HERALD stream
// that keeps every channel's messages (sequence-numbered, with TTLs, a
// per-channel backlog limit and a duplicate window), the KV buckets of device
// cursors and apps, and catch-up reads for reconnecting devices.
package offline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"herald/config"
)

// Errors returned by the store.
var (
	// ErrUnavailable means JetStream did not answer or refused the operation;
	// nothing may be assumed stored.
	ErrUnavailable = errors.New("store unavailable")
)

// Store is a handle on the stream and buckets. It is safe for concurrent use.
type Store struct {
	muxOnce sync.Once
	mux     *replyMux
	muxErr  error
	ackOnce sync.Once
	acks    *ackMux
	ackErr  error
	nc      *nats.Conn
	js      jetstream.JetStream
	stream  jetstream.Stream
	up      jetstream.Stream
	cursors jetstream.KeyValue
	apps    jetstream.KeyValue
	topics  jetstream.KeyValue
	recalls jetstream.KeyValue
	gws     jetstream.KeyValue // gateway registry (registry.go)
	replays jetstream.KeyValue // pending operator replays (replay.go)
	// replicated: the streams have more than one replica. Direct Get is
	// then answered by any replica, and a follower that is behind (one
	// just restarted and catching up serves from 90% on) can say "nothing
	// there" about messages the leader already acknowledged; a reader must
	// not take such an answer as the end of a backlog (leader.go).
	replicated bool
}

// StreamConfig is the HERALD stream's configuration for cfg.
func StreamConfig(cfg config.Store) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              StreamName,
		Description:       "herald channels: every message a device may receive",
		Subjects:          []string{storedPrefix + ">", schedPrefix + ">"},
		Storage:           jetstream.FileStorage,
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardOld,
		MaxAge:            cfg.MaxAge,
		MaxMsgsPerSubject: cfg.MaxPerChannel,
		Duplicates:        cfg.DuplicateWindow,
		Replicas:          cfg.Replicas,
		AllowDirect:       true,
		AllowMsgTTL:       true,
		AllowMsgSchedules: true,
		RePublish:         &jetstream.RePublish{Source: storedPrefix + ">", Destination: livePrefix + ">"},
	}
}

// UpStreamConfig is the HERALD_UP stream's configuration: device-to-backend
// messages, deduplicated by the device's id within the duplicate window,
// announced (headers only) on herald.uplive.<app> for long-polls.
func UpStreamConfig(cfg config.Store) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        UpStreamName,
		Description: "herald upstream: messages from devices to their app's backend",
		Subjects:    []string{upPrefix + ">"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      cfg.MaxAge,
		Duplicates:  cfg.DuplicateWindow,
		Replicas:    cfg.Replicas,
		AllowDirect: true,
		RePublish:   &jetstream.RePublish{Source: upPrefix + ">", Destination: upLivePrefix + ">", HeadersOnly: true},
	}
}

// maxAsyncPending bounds the publishes a process waits on at once (pushes
// of many users, UPs of many devices); nats.go's default of 4,000 stalls a
// single 5,000-message catch-up test and a busy gateway's UPs.
const maxAsyncPending = 1 << 16

// AutoReplicas is the replication factor for the cluster nc is connected
// to: 3 when it has 3 or more servers (as the servers announce each other
// to clients), 1 for a single server.
func AutoReplicas(nc *nats.Conn) int {
	if nc.ConnectedClusterName() == "" {
		return 1
	}
	seen := map[string]bool{}
	for _, u := range nc.Servers() {
		seen[u] = true
	}
	if len(seen) >= 3 {
		return 3
	}
	return 1
}

// ensure runs one create-or-update of a stream or bucket, retrying
// (noPeersWait apart, a fresh 5 s deadline each) until ctx ends: when two
// processes create the same replicated stream at the same moment (two
// dispatchers starting together), JetStream may leave one request
// unanswered (nats-io/nats.go#949); the retry finds the stream made and
// updates it. It also tries again while JetStream says no peers are there
// to place the replicas: a cluster that has just started may still count
// a peer as offline (TestMakeCluster saw a dispatcher stop on it once).
func ensure[T any](ctx context.Context, create func(context.Context) (T, error)) (T, error) {
	again := func(err error) bool { return errors.Is(err, context.DeadlineExceeded) || noPeers(err) }
	return retry(ctx, attemptTimeout, noPeersWait, again, create)
}

// jsErrNoPeers is JetStream's "no suitable peers for placement"
// (nats-server's JSClusterNoPeersErr), which nats.go has no name for.
const jsErrNoPeers jetstream.ErrorCode = 10005

const noPeersWait = 250 * time.Millisecond

// attemptTimeout is how long one JetStream request at start (a stream or
// bucket made, updated or looked up) may go unanswered before it is sent
// again.
const attemptTimeout = 5 * time.Second

// noPeers reports whether err is JetStream finding no peers to place
// replicas on.
func noPeers(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrNoPeers
}

// Open creates or updates the stream and buckets and returns a Store.
func Open(ctx context.Context, nc *nats.Conn, cfg config.Store) (*Store, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(maxAsyncPending))
	if err != nil {
		return nil, fmt.Errorf("offline: %w", err)
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = AutoReplicas(nc)
	}
	stream, err := ensure(ctx, func(ctx context.Context) (jetstream.Stream, error) {
		return js.CreateOrUpdateStream(ctx, StreamConfig(cfg))
	})
	if err != nil {
		return nil, fmt.Errorf("offline: cannot create stream %s: %w", StreamName, err)
	}
	up, err := ensure(ctx, func(ctx context.Context) (jetstream.Stream, error) {
		return js.CreateOrUpdateStream(ctx, UpStreamConfig(cfg))
	})
	if err != nil {
		return nil, fmt.Errorf("offline: cannot create stream %s: %w", UpStreamName, err)
	}
	s := &Store{nc: nc, js: js, stream: stream, up: up, replicated: cfg.Replicas > 1}
	for _, b := range s.buckets(cfg) {
		kv, err := ensure(ctx, func(ctx context.Context) (jetstream.KeyValue, error) {
			return js.CreateOrUpdateKeyValue(ctx, b.cfg)
		})
		if err != nil {
			return nil, fmt.Errorf("offline: cannot create bucket %s: %w", b.cfg.Bucket, err)
		}
		*b.kv = kv
	}
	if nc.ConnectedClusterName() != "" {
		if _, err := ensure(ctx, func(ctx context.Context) (struct{}, error) { return struct{}{}, s.EnsurePulse(ctx) }); err != nil {
			return nil, fmt.Errorf("offline: %w", err)
		}
	}
	return s, nil
}

// bucket is one of the store's KV buckets: its configuration and the
// Store field that holds it.
type bucket struct {
	cfg jetstream.KeyValueConfig
	kv  *jetstream.KeyValue
}

// buckets lists the KV buckets Open creates and attach binds.
func (s *Store) buckets(cfg config.Store) []bucket {
	kv := func(name, desc string, history uint8, storage jetstream.StorageType, ttl time.Duration, field *jetstream.KeyValue) bucket {
		return bucket{cfg: jetstream.KeyValueConfig{Bucket: name, Description: desc, History: history, Storage: storage, Replicas: cfg.Replicas, TTL: ttl}, kv: field}
	}
	return []bucket{
		// A cursor outlives the messages it points into.
		kv(CursorsBucket, "herald device cursors: highest acknowledged seq per device and channel", 1, jetstream.FileStorage, cfg.MaxAge+24*time.Hour, &s.cursors),
		kv(AppsBucket, "herald apps: hashed publisher keys, device secrets, limits", 5, jetstream.FileStorage, 0, &s.apps),
		kv(TopicsBucket, "herald server-side topic subscriptions: the topics of each user", 1, jetstream.FileStorage, 0, &s.topics),
		// A recall is worth reporting as long as the message could have lived.
		kv(RecallsBucket, "herald recalled messages, for delivery status", 1, jetstream.FileStorage, cfg.MaxAge, &s.recalls),
		// A gateway that stops refreshing its entry disappears.
		kv(GatewaysBucket, "herald gateway registry: each live gateway refreshes its entry", 1, jetstream.MemoryStorage, GatewayTTL, &s.gws),
		// A replay of messages that are gone means nothing.
		kv(ReplaysBucket, "herald pending operator replays, per device", 1, jetstream.FileStorage, cfg.MaxAge, &s.replays),
	}
}

// Replicated reports whether the stream has more than one replica (NATS
// is a cluster).
func (s *Store) Replicated() bool { return s.replicated }

// Attach binds to a stream and buckets another role created, waiting for
// them until ctx ends. Gateways attach: only the roles that own the
// configuration (serve, dispatcher) create or update the stream.
func Attach(ctx context.Context, nc *nats.Conn) (*Store, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(maxAsyncPending))
	if err != nil {
		return nil, fmt.Errorf("offline: %w", err)
	}
	anyErr := func(error) bool { return true } // not made yet, or unanswered
	s, err := retry(ctx, attemptTimeout, 250*time.Millisecond, anyErr, func(ctx context.Context) (*Store, error) { return attach(ctx, js) })
	if err != nil {
		return nil, fmt.Errorf("offline: stream %s and buckets not found (is a dispatcher or herald serve running?): %w", StreamName, err)
	}
	s.nc = nc
	return s, nil
}

// retry calls try until it succeeds, again says its error is not worth
// another call, or ctx ends, waiting wait between calls, and returns the
// last result. Each call has attempt to answer: JetStream may leave a
// request unanswered (see ensure), and with the whole ctx per call one
// such lookup would hold a gateway's start for all of its 30 s.
// (TestLostPulsesFillLostLiveCopies once saw a gateway of a cluster that
// had just made its streams print nothing for 30 s; its output did not
// say which step waited.)
func retry[T any](ctx context.Context, attempt, wait time.Duration, again func(error) bool, try func(context.Context) (T, error)) (T, error) {
	for {
		actx, cancel := context.WithTimeout(ctx, attempt)
		v, err := try(actx)
		cancel()
		if err == nil || !again(err) {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(wait):
		}
	}
}

func attach(ctx context.Context, js jetstream.JetStream) (*Store, error) {
	stream, err := js.Stream(ctx, StreamName)
	if err != nil {
		return nil, err
	}
	up, err := js.Stream(ctx, UpStreamName)
	if err != nil {
		return nil, err
	}
	// Replicated as the stream is: a gateway's catch-ups must not take a
	// lagging replica's "nothing there" for the end (leader.go).
	s := &Store{js: js, stream: stream, up: up, replicated: stream.CachedInfo().Config.Replicas > 1}
	for _, b := range s.buckets(config.Store{}) {
		if *b.kv, err = js.KeyValue(ctx, b.cfg.Bucket); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Message is a stored message.
type Message struct {
	Seq     uint64
	Subject string
	Time    time.Time // when it was stored
	Expires time.Time // zero when it has no TTL
	Data    []byte
	Header  nats.Header
}

// Publish describes one message to store.
type Publish struct {
	App, Channel string
	Data         []byte
	// ID makes the publish idempotent within the duplicate window.
	ID string
	// TTL expires the message after this long (0 = the stream's MaxAge).
	TTL time.Duration
}

// ttlHeader is the Nats-TTL value of a TTL.
func ttlHeader(d time.Duration) string { return strconv.FormatInt(int64(d/time.Second), 10) }

// Stored is the store's answer to one Publish.
type Stored struct {
	Seq       uint64
	Duplicate bool
}

// PublishAll stores every message and returns once JetStream acknowledged
// them all (or ctx ended). Results are in the order of msgs. On error, some
// messages may be stored: retrying with the same IDs stores each once.
func (s *Store) PublishAll(ctx context.Context, msgs []Publish) ([]Stored, error) {
	m, err := s.pubAcks()
	if err != nil {
		return nil, err
	}
	b, reply, done := m.open(len(msgs))
	defer done()
	for i := range msgs {
		p := &msgs[i]
		// No Nats-Expected-Stream header: the PubAck names the stream, checked
		// in route, and a plain message is cheaper for both ends (this is the
		// publish hot path; most messages carry no header at all).
		nm := &nats.Msg{Subject: StoredSubject(p.App, p.Channel), Reply: reply(i), Data: p.Data}
		if p.ID != "" || p.TTL > 0 {
			nm.Header = nats.Header{}
		}
		if p.ID != "" {
			nm.Header.Set(jetstream.MsgIDHeader, p.ID)
		}
		if p.TTL > 0 {
			nm.Header.Set(jetstream.MsgTTLHeader, ttlHeader(p.TTL))
		}
		b.msgs[i] = nm // written before its reply can come: route reads it under m.mu after that
		if err := s.nc.PublishMsg(nm); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
	}
	select {
	case <-b.done:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())
	}
	if b.err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, b.err)
	}
	return b.out, nil
}

// directGet is the body of a JetStream Direct Get request.
type directGet struct {
	Seq      uint64 `json:"seq,omitempty"`
	NextFor  string `json:"next_by_subj,omitempty"`
	Batch    int    `json:"batch,omitempty"`
	MaxBytes int    `json:"max_bytes,omitempty"`
}

// Fetch reads up to max messages of subject with seq >= from, in order,
// with one Direct Get batch request. It returns how many more messages
// matched after the batch (pending) as the server counted them. No messages
// and no error means there is nothing at or after from.
//
// Replies come through the store's one reply subscription (see replyMux),
// not a subscription per request: a nats.go SubscribeSync allocates a
// 64k-slot channel, which a reconnect storm would turn into gigabytes of
// garbage.
func (s *Store) Fetch(ctx context.Context, subject string, from uint64, max int) (msgs []Message, pending uint64, err error) {
	return s.fetch(ctx, StreamName, subject, from, max)
}

// StreamLastSeq is the sequence of the last message stored in the stream.
func (s *Store) StreamLastSeq(ctx context.Context) (uint64, error) {
	var info *jetstream.StreamInfo
	err := askAgain(ctx, func(actx context.Context) (err error) {
		info, err = s.stream.Info(actx)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("%w: stream info: %v", ErrUnavailable, err)
	}
	return info.State.LastSeq, nil
}

func (s *Store) fetch(ctx context.Context, stream, subject string, from uint64, max int) (msgs []Message, pending uint64, err error) {
	if from == 0 {
		from = 1
	}
	mux, err := s.replies()
	if err != nil {
		return nil, 0, err
	}
	req, _ := json.Marshal(directGet{Seq: from, NextFor: subject, Batch: max, MaxBytes: 1 << 20})
	// A read: asked again when its answer is lost (leader.go), from the
	// start and on a new reply subject, so a late part of the first
	// answer reaches no one.
	err = askAgain(ctx, func(actx context.Context) (err error) {
		msgs, pending, err = s.directGet(actx, mux, stream, req, max)
		return err
	})
	if err != nil {
		return msgs, 0, err
	}
	return s.confirmEnd(ctx, stream, subject, from, max, msgs, pending)
}

// directGet sends one Direct Get batch request and collects its answer up
// to the end of the batch: the messages, and how many more matched after
// them (0 when the server said there are none).
func (s *Store) directGet(ctx context.Context, mux *replyMux, stream string, req []byte, max int) (msgs []Message, pending uint64, err error) {
	reply, ch, done := mux.open(max + 2)
	defer done()
	if err := s.nc.PublishRequest("$JS.API.DIRECT.GET."+stream, reply, req); err != nil {
		return nil, 0, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	for {
		var m *nats.Msg
		select {
		case m = <-ch:
		case <-ctx.Done():
			return msgs, 0, fmt.Errorf("%w: direct get: %w", ErrUnavailable, ctx.Err())
		}
		switch m.Header.Get("Status") {
		case "":
		case "404":
			return msgs, 0, nil
		case "204": // end of batch
			pending, _ = strconv.ParseUint(m.Header.Get("Nats-Num-Pending"), 10, 64)
			return msgs, pending, nil
		case "408":
			return msgs, 0, fmt.Errorf("%w: direct get: %s", ErrUnavailable, m.Header.Get("Description"))
		default:
			return msgs, 0, fmt.Errorf("%w: direct get: status %s %s", ErrUnavailable, m.Header.Get("Status"), m.Header.Get("Description"))
		}
		msg, err := fromHeaders(m.Header, m.Data)
		if err != nil {
			return msgs, 0, err
		}
		msgs = append(msgs, msg)
	}
}

// LastSeq is the sequence of the last stored message on subject, 0 when
// there is none. It is an indexed lookup, not a scan: Direct Get
// last_by_subj, or with replicas the leader's (leader.go).
func (s *Store) LastSeq(ctx context.Context, subject string) (uint64, error) {
	if s.replicated {
		m, found, err := s.leaderGet(ctx, StreamName, subject, 0)
		if err != nil || !found {
			return 0, err
		}
		return m.Seq, nil
	}
	var m *jetstream.RawStreamMsg
	err := askAgain(ctx, func(actx context.Context) (err error) {
		m, err = s.stream.GetLastMsgForSubject(actx, subject)
		return err
	})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("%w: last of %s: %v", ErrUnavailable, subject, err)
	}
	return m.Sequence, nil
}

// fromHeaders builds a Message from a republished or Direct Get message.
func fromHeaders(h nats.Header, data []byte) (Message, error) {
	seq, err := strconv.ParseUint(h.Get(jetstream.SequenceHeader), 10, 64)
	if err != nil {
		return Message{}, fmt.Errorf("offline: message without a valid %s header", jetstream.SequenceHeader)
	}
	m := Message{Seq: seq, Subject: h.Get(jetstream.SubjectHeader), Data: data, Header: h}
	if ts := h.Get(jetstream.TimeStampHeaer); ts != "" {
		m.Time, _ = time.Parse(time.RFC3339Nano, ts)
	}
	m.setExpires()
	return m, nil
}

// setExpires sets Expires from the message's Nats-TTL header and its
// stored time (no header, a bad value or no time: it never expires).
func (m *Message) setExpires() {
	if ttl := m.Header.Get(jetstream.MsgTTLHeader); ttl != "" && !m.Time.IsZero() {
		if d, ok := ParseTTL(ttl); ok {
			m.Expires = m.Time.Add(d)
		}
	}
}

// ParseTTL parses a Nats-TTL header value: seconds, or a Go duration.
func ParseTTL(s string) (time.Duration, bool) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && n > 0 {
		return time.Duration(n) * time.Second, true
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return d, true
	}
	return 0, false
}

// Live describes a republished message as a gateway receives it.
type Live struct {
	Message
	// Last is the sequence of the previous message on the same subject when
	// this one was stored (0 for the first): the gap detector.
	Last uint64
}

// ParseLive reads a message received on a live subject.
func ParseLive(m *nats.Msg) (Live, error) {
	msg, err := fromHeaders(m.Header, m.Data)
	if err != nil {
		return Live{}, err
	}
	last, err := strconv.ParseUint(m.Header.Get(jetstream.LastSequenceHeader), 10, 64)
	if err != nil {
		return Live{}, fmt.Errorf("offline: live message without a valid %s header", jetstream.LastSequenceHeader)
	}
	return Live{Message: msg, Last: last}, nil
}

// Scan hands fn every stored message of subject (wildcards allowed) from
// sequence from up to upTo, in order, through a consumer: the server
// streams them with their metadata in the reply subject, so a long range
// costs neither a header rewrite per message nor a pending count per
// batch, as Direct Get batches do. fn returning false stops the scan. An
// error means the range was not read to its end.
func (s *Store) Scan(ctx context.Context, subject string, from, upTo uint64, fn func(*Message) bool) error {
	if from == 0 {
		from = 1
	}
	if from > upTo {
		return nil
	}
	// A prefix wildcard ("herald.ch.<app>.>", the shared scan's) is matched
	// here, not by the server: for a filtered consumer nats-server finds
	// each next message by matching the filter against every subject of
	// the block when the block holds more than four messages per subject,
	// which a storm's range does (4,000 devices × 10 messages: 3.8 s to
	// scan 40,000 messages, against 1.1 s for 180,000 from 18,000 devices);
	// unfiltered it walks the block. What else is in the range (other
	// apps, schedules) crosses to this process and is skipped.
	filter, prefix := []string{subject}, ""
	if p, ok := strings.CutSuffix(subject, ">"); ok && !strings.ContainsAny(p, "*>") {
		filter, prefix = nil, p
	}
	// One ephemeral pull consumer for the whole scan (AckNone, in memory,
	// one replica): an ordered consumer in fetch mode is deleted and made
	// again on every fetch, which while a cluster recovers costs seconds
	// per fetch. Named here, so that asking again after a lost answer
	// (askAgain) finds the consumer the first request made instead of
	// making a second one.
	var cons jetstream.Consumer
	cfg := jetstream.ConsumerConfig{
		Name:              nuid.Next(),
		FilterSubjects:    filter,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       from,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: 30 * time.Second,
		MemoryStorage:     true,
		Replicas:          1,
	}
	err := askAgain(ctx, func(actx context.Context) (err error) {
		cons, err = s.js.CreateConsumer(actx, StreamName, cfg)
		return err
	})
	if err != nil {
		return fmt.Errorf("%w: scan %s: consumer: %v", ErrUnavailable, subject, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		_ = s.js.DeleteConsumer(dctx, StreamName, cons.CachedInfo().Name)
		cancel()
	}()
	if cons.CachedInfo().NumPending == 0 {
		// Nothing of subject from `from` on — on the consumer's replica.
		if more, err := s.leaderHasMore(ctx, subject, from, upTo); err != nil || !more {
			return err
		}
	}
	// A no-wait fetch can come back empty while messages remain (the
	// server had not produced them yet, under load): only the consumer's
	// pending count — 0 once the last matching message was delivered — or
	// reaching upTo ends the scan. Empty fetches are retried a while, then
	// the scan fails: a caller must never take the range as read.
	empty := 0
	// The consumer numbers what it delivers 1, 2, 3…; AckNone, it counts
	// a message delivered when it sends it. A message lost on its way (a
	// route that broke while the fetch crossed it) leaves a hole in those
	// numbers, and the next fetch goes on after it: the scan must stop
	// there, or the devices would get the messages after the hole and
	// never the one in it. The caller then reads one by one from what
	// each device was sent.
	delivered := uint64(0)
	for {
		fetched, err := cons.FetchNoWait(scanBatch)
		if err != nil {
			return fmt.Errorf("%w: scan %s: %v", ErrUnavailable, subject, err)
		}
		n := 0
		for jm := range fetched.Messages() {
			n++
			md, err := jm.Metadata()
			if err != nil {
				return fmt.Errorf("offline: scan %s: %v", subject, err)
			}
			if delivered++; md.Sequence.Consumer != delivered {
				return fmt.Errorf("%w: scan %s: message %d of the consumer came after %d: some were lost on their way", ErrUnavailable, subject, md.Sequence.Consumer, delivered-1)
			}
			m := Message{Seq: md.Sequence.Stream, Subject: jm.Subject(), Time: md.Timestamp}
			if prefix == "" || strings.HasPrefix(m.Subject, prefix) {
				m.Data, m.Header = jm.Data(), jm.Headers()
				m.setExpires()
				if !fn(&m) {
					return nil
				}
			}
			if m.Seq >= upTo || md.NumPending == 0 {
				more := false
				if m.Seq < upTo {
					// The consumer's replica may be behind the leader:
					// then read on (empty fetches end in an error, and
					// the caller reads one by one).
					if more, err = s.leaderHasMore(ctx, subject, m.Seq+1, upTo); err != nil {
						return err
					}
				}
				if !more {
					// Drain what this fetch still delivers, then stop.
					for range fetched.Messages() {
					}
					return nil
				}
			}
		}
		if err := fetched.Error(); err != nil {
			return fmt.Errorf("%w: scan %s: %v", ErrUnavailable, subject, err)
		}
		if n > 0 {
			empty = 0
		} else {
			if empty++; empty > scanEmptyRetries {
				return fmt.Errorf("%w: scan %s stopped before the end of its range", ErrUnavailable, subject)
			}
			select {
			case <-time.After(scanEmptyWait):
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w: scan %s: %v", ErrUnavailable, subject, ctx.Err())
		}
	}
}

// How long Scan waits on empty fetches before it gives up (then its caller
// reads one by one).
const (
	scanEmptyRetries = 10
	scanEmptyWait    = 50 * time.Millisecond
)

// How many messages one fetch of Scan asks for. A variable for a test.
var scanBatch = 4096
