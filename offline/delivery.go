package offline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// More errors returned by the store.
var (
	// ErrNotFound means there is no such message, schedule or key for the app.
	ErrNotFound = errors.New("not found")
	// ErrExpired means the message existed and is no longer stored.
	ErrExpired = errors.New("expired")
	// ErrRecalled means the message was recalled.
	ErrRecalled = errors.New("recalled")
	// ErrTooManyTopics means a user is at the topic limit.
	ErrTooManyTopics = errors.New("too many topics")
)

// MaxTopicsPerUser bounds the server-side topics of one user.
const MaxTopicsPerUser = 256

// Message reads the stored message seq of app. A message that is gone
// answers ErrRecalled when it was recalled and ErrExpired when its TTL or
// the stream's limits removed it; a seq the stream never reached, or a
// message of another app, answers ErrNotFound.
func (s *Store) Message(ctx context.Context, app string, seq uint64) (Message, error) {
	raw, err := s.stream.GetMsg(ctx, seq)
	if err == nil {
		a, _, ok := ChannelOfStored(raw.Subject)
		if !ok || a != app {
			return Message{}, ErrNotFound
		}
		m := Message{Seq: raw.Sequence, Subject: raw.Subject, Time: raw.Time, Data: raw.Data, Header: raw.Header}
		if m.setExpires(); !m.Expires.IsZero() && !m.Expires.After(time.Now()) {
			return m, ErrExpired // expired, not yet removed by the server
		}
		return m, nil
	}
	if !errors.Is(err, jetstream.ErrMsgNotFound) {
		return Message{}, fmt.Errorf("%w: message %d: %v", ErrUnavailable, seq, err)
	}
	if r, rerr := s.recall(ctx, app, seq); rerr == nil {
		return Message{Seq: seq, Subject: StoredSubject(app, r.Channel)}, ErrRecalled
	}
	info, err := s.stream.Info(ctx)
	if err != nil {
		return Message{}, fmt.Errorf("%w: stream info: %v", ErrUnavailable, err)
	}
	if seq == 0 || seq > info.State.LastSeq {
		return Message{}, ErrNotFound
	}
	return Message{Seq: seq}, ErrExpired
}

type recallRecord struct {
	Channel string    `json:"channel"`
	At      time.Time `json:"at"`
}

func recallKey(app string, seq uint64) string { return app + "." + strconv.FormatUint(seq, 10) }

func (s *Store) recall(ctx context.Context, app string, seq uint64) (recallRecord, error) {
	e, err := s.recalls.Get(ctx, recallKey(app, seq))
	if err != nil {
		return recallRecord{}, err
	}
	var r recallRecord
	err = json.Unmarshal(e.Value(), &r)
	return r, err
}

// Recall deletes the stored message seq of app, records the recall for
// delivery status, and tells the gateways holding its channel, which send
// REVOKE to devices that already got it. It returns the message's channel.
func (s *Store) Recall(ctx context.Context, app string, seq uint64) (string, error) {
	m, err := s.Message(ctx, app, seq)
	if err != nil {
		return "", err
	}
	_, channel, _ := ChannelOfStored(m.Subject)
	// Record first: a status read between the delete and the record must
	// not call a recalled message expired.
	rec, _ := json.Marshal(recallRecord{Channel: channel, At: time.Now().UTC()})
	if _, err := s.recalls.Put(ctx, recallKey(app, seq), rec); err != nil {
		return "", fmt.Errorf("%w: recall record: %v", ErrUnavailable, err)
	}
	if err := s.stream.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return "", fmt.Errorf("%w: delete %d: %v", ErrUnavailable, seq, err)
	}
	notice := &nats.Msg{Subject: LiveSubject(app, channel), Header: nats.Header{}}
	notice.Header.Set(RevokeHeader, strconv.FormatUint(seq, 10))
	if err := s.nc.PublishMsg(notice); err != nil {
		return channel, fmt.Errorf("%w: revoke notice: %v", ErrUnavailable, err)
	}
	return channel, s.nc.Flush()
}

// WatchRecalls streams recalls made from now on (the KV bucket's updates,
// through an ordered consumer that resumes after reconnects and leader
// changes); ParseRecall reads an entry.
func (s *Store) WatchRecalls(ctx context.Context) (jetstream.KeyWatcher, error) {
	w, err := s.recalls.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		return nil, fmt.Errorf("%w: watch recalls: %v", ErrUnavailable, err)
	}
	return w, nil
}

// ParseRecall reads a recall record: the app and seq from its key
// ("<app>.<seq>"), the channel from its value.
func ParseRecall(key string, value []byte) (app string, seq uint64, channel string, ok bool) {
	i := strings.LastIndexByte(key, '.')
	if i <= 0 {
		return "", 0, "", false
	}
	seq, err := strconv.ParseUint(key[i+1:], 10, 64)
	if err != nil || seq == 0 || recallKey(key[:i], seq) != key { // as recallKey writes it: no leading zeros
		return "", 0, "", false
	}
	var r recallRecord
	if json.Unmarshal(value, &r) != nil {
		return "", 0, "", false
	}
	if _, _, ok := ParseChannel(r.Channel); !ok {
		return "", 0, "", false
	}
	return key[:i], seq, r.Channel, true
}

// DeviceCursors returns, for each device of user that acknowledged anything
// on channel, its acknowledged cursor (as last written by its gateway).
func (s *Store) DeviceCursors(ctx context.Context, app, user, channel string) (map[string]uint64, error) {
	devices, err := s.Devices(ctx, app, user, channel)
	if err != nil {
		return nil, err
	}
	out := make(map[string]uint64, len(devices))
	for _, device := range devices {
		seq, err := s.Cursor(ctx, CursorKey(app, user, device, channel))
		if err != nil {
			return nil, err
		}
		out[device] = seq
	}
	return out, nil
}

// Devices lists the devices of user holding a cursor on channel (one key
// listing, no value reads).
func (s *Store) Devices(ctx context.Context, app, user, channel string) ([]string, error) {
	lister, err := s.cursors.ListKeysFiltered(ctx, CursorKey(app, user, "*", channel))
	if err != nil {
		return nil, fmt.Errorf("%w: cursors: %v", ErrUnavailable, err)
	}
	var out []string
	prefix := app + "." + user + "."
	for key := range lister.Keys() {
		if device, _, ok := strings.Cut(strings.TrimPrefix(key, prefix), "."); ok {
			out = append(out, device)
		}
	}
	return out, nil
}

// UserTopics lists the server-side topics of user, sorted.
func (s *Store) UserTopics(ctx context.Context, app, user string) ([]string, error) {
	topics, _, err := s.userTopics(ctx, app, user)
	return topics, err
}

func (s *Store) userTopics(ctx context.Context, app, user string) ([]string, uint64, error) {
	var e jetstream.KeyValueEntry
	err := askAgain(ctx, func(actx context.Context) (err error) {
		e, err = s.topics.Get(actx, app+"."+user)
		return err
	})
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("%w: topics: %v", ErrUnavailable, err)
	}
	var topics []string
	if err := json.Unmarshal(e.Value(), &topics); err != nil {
		return nil, 0, fmt.Errorf("offline: topics of %s.%s hold %q", app, user, e.Value())
	}
	return topics, e.Revision(), nil
}

// SetUserTopic adds (on) or removes (!on) a server-side topic of user and
// reports whether anything changed. Concurrent changes are resolved with
// compare-and-set.
func (s *Store) SetUserTopic(ctx context.Context, app, user, topic string, on bool) (changed bool, err error) {
	key := app + "." + user
	for attempt := 0; attempt < 5; attempt++ {
		topics, rev, err := s.userTopics(ctx, app, user)
		if err != nil {
			return false, err
		}
		i, found := slices.BinarySearch(topics, topic)
		switch {
		case on && found, !on && !found:
			return false, nil
		case on && len(topics) >= MaxTopicsPerUser:
			return false, ErrTooManyTopics
		case on:
			topics = slices.Insert(topics, i, topic)
		default:
			topics = slices.Delete(topics, i, i+1)
		}
		val, _ := json.Marshal(topics)
		if rev == 0 {
			_, err = s.topics.Create(ctx, key, val)
		} else {
			_, err = s.topics.Update(ctx, key, val, rev)
		}
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !isWrongSequence(err) {
			return false, fmt.Errorf("%w: topics: %v", ErrUnavailable, err)
		}
	}
	return false, fmt.Errorf("%w: topics of %s changed concurrently too often", ErrUnavailable, key)
}

// Schedule describes a scheduled push.
type Schedule struct {
	ID      string        `json:"id"`
	Channel string        `json:"channel"`
	At      time.Time     `json:"at"`
	TTL     time.Duration `json:"-"`
	Data    []byte        `json:"-"`
	Seq     uint64        `json:"seq"` // the schedule message's own sequence
}

// ScheduleAt stores a message for delivery at t on app's channel through a
// JetStream message schedule: the server publishes it to the channel at t
// (it then gets its own sequence, is republished to gateways and stored
// like any other) and removes the schedule. Publishing the same id again
// replaces the schedule.
func (s *Store) ScheduleAt(ctx context.Context, app, channel, id string, at time.Time, ttl time.Duration, data []byte) (uint64, error) {
	m := &nats.Msg{Subject: SchedSubject(app, channel, id), Data: data, Header: nats.Header{}}
	m.Header.Set("Nats-Schedule", "@at "+at.UTC().Format(time.RFC3339))
	m.Header.Set("Nats-Schedule-Target", StoredSubject(app, channel))
	if ttl > 0 {
		m.Header.Set("Nats-Schedule-TTL", ttlHeader(ttl))
	}
	ack, err := s.js.PublishMsg(ctx, m, jetstream.WithExpectStream(StreamName))
	if err != nil {
		return 0, fmt.Errorf("%w: schedule: %v", ErrUnavailable, err)
	}
	return ack.Sequence, nil
}

// Schedules lists app's pending schedules, soonest first.
func (s *Store) Schedules(ctx context.Context, app string) ([]Schedule, error) {
	info, err := s.stream.Info(ctx, jetstream.WithSubjectFilter(SchedWildcard(app)))
	if err != nil {
		return nil, fmt.Errorf("%w: schedules: %v", ErrUnavailable, err)
	}
	out := make([]Schedule, 0, len(info.State.Subjects))
	for subj := range info.State.Subjects {
		m, err := s.stream.GetLastMsgForSubject(ctx, subj)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // fired meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("%w: schedule %s: %v", ErrUnavailable, subj, err)
		}
		_, channel, id, ok := ParseSchedSubject(subj)
		if !ok {
			continue
		}
		at, _ := time.Parse(time.RFC3339, strings.TrimPrefix(m.Header.Get("Nats-Schedule"), "@at "))
		out = append(out, Schedule{ID: id, Channel: channel, At: at, Seq: m.Sequence, Data: m.Data})
	}
	slices.SortFunc(out, func(a, b Schedule) int { return a.At.Compare(b.At) })
	return out, nil
}

// CancelSchedule removes a pending schedule of app. ErrNotFound: no such
// schedule (never made, cancelled, or already fired). The schedule's
// subject ends with its id, so one Direct Get on
// herald.sched.<app>.*.*.<id> finds it, however many are pending.
func (s *Store) CancelSchedule(ctx context.Context, app, id string) error {
	if id == "" || strings.ContainsAny(id, ".*> \t") {
		return ErrNotFound
	}
	msgs, _, err := s.Fetch(ctx, schedPrefix+app+".*.*."+id, 1, 1)
	if err != nil {
		return fmt.Errorf("%w: cancel %s: %v", ErrUnavailable, id, err)
	}
	if len(msgs) == 0 {
		return ErrNotFound
	}
	err = s.stream.DeleteMsg(ctx, msgs[0].Seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("%w: cancel %s: %v", ErrUnavailable, id, err)
	}
	return nil
}

// UpMessage is a device's upstream message as stored.
type UpMessage struct {
	Seq    uint64    `json:"seq"`
	User   string    `json:"user"`
	Device string    `json:"device"`
	ID     string    `json:"id"`
	Time   time.Time `json:"time"`
	Data   []byte    `json:"-"`
}

// PublishUp stores an upstream message of app without waiting: the future
// says when JetStream acknowledged it. The dedup key is the device's id, so a
// device retrying an UP stores it once within the duplicate window.
func (s *Store) PublishUp(app, user, device, id string, data []byte) (jetstream.PubAckFuture, error) {
	m := &nats.Msg{Subject: UpSubject(app), Data: data, Header: nats.Header{}}
	m.Header.Set(jetstream.MsgIDHeader, app+"."+device+"."+id)
	m.Header.Set(UpUserHeader, user)
	m.Header.Set(UpDeviceHeader, device)
	m.Header.Set(UpIDHeader, id)
	f, err := s.js.PublishMsgAsync(m, jetstream.WithExpectStream(UpStreamName))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return f, nil
}

// FetchUp reads up to max upstream messages of app after seq after.
func (s *Store) FetchUp(ctx context.Context, app string, after uint64, max int) ([]UpMessage, error) {
	msgs, _, err := s.fetch(ctx, UpStreamName, UpSubject(app), after+1, max)
	if err != nil {
		return nil, err
	}
	out := make([]UpMessage, len(msgs))
	for i, m := range msgs {
		out[i] = UpMessage{Seq: m.Seq, Time: m.Time, Data: m.Data,
			User: m.Header.Get(UpUserHeader), Device: m.Header.Get(UpDeviceHeader), ID: m.Header.Get(UpIDHeader)}
	}
	return out, nil
}

// UserCursors returns every cursor of user's devices: channel → device → seq.
func (s *Store) UserCursors(ctx context.Context, app, user string) (map[string]map[string]uint64, error) {
	prefix := app + "." + user + "."
	lister, err := s.cursors.ListKeysFiltered(ctx, prefix+">")
	if err != nil {
		return nil, fmt.Errorf("%w: cursors: %v", ErrUnavailable, err)
	}
	out := map[string]map[string]uint64{}
	for key := range lister.Keys() {
		device, channel, ok := strings.Cut(strings.TrimPrefix(key, prefix), ".")
		if !ok {
			continue
		}
		seq, err := s.Cursor(ctx, key)
		if err != nil {
			return nil, err
		}
		if out[channel] == nil {
			out[channel] = map[string]uint64{}
		}
		out[channel][device] = seq
	}
	return out, nil
}

// CountAfter is how many messages of channel are stored after seq.
func (s *Store) CountAfter(ctx context.Context, app, channel string, seq uint64) (uint64, error) {
	msgs, pending, err := s.Fetch(ctx, StoredSubject(app, channel), seq+1, 1)
	if err != nil {
		return 0, err
	}
	return uint64(len(msgs)) + pending, nil
}
