package dispatcher

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"

	"herald/config"
	"herald/offline"
)

// Limits of one publish request.
const (
	MaxUsersPerPush = 1000
	MaxIDLen        = config.MaxIDLen
	MinTTL          = time.Second
)

// pushRequest is the body of POST /v1/apps/{app}/push.
type pushRequest struct {
	Users      []string `json:"users"`
	Topic      string   `json:"topic"`
	Broadcast  bool     `json:"broadcast"`
	Data       *string  `json:"data"`
	DataBase64 *string  `json:"data_base64"`
	ID         string   `json:"id"`
	TTL        string   `json:"ttl"`
	At         string   `json:"at"`
}

type pushedMessage struct {
	User      string `json:"user,omitempty"`
	Topic     string `json:"topic,omitempty"`
	Channel   string `json:"channel"`
	Seq       uint64 `json:"seq"`
	Duplicate bool   `json:"duplicate,omitempty"`
}

type scheduledMessage struct {
	User     string    `json:"user,omitempty"`
	Topic    string    `json:"topic,omitempty"`
	Channel  string    `json:"channel"`
	Schedule string    `json:"schedule"`
	At       time.Time `json:"at"`
}

type pushResponse struct {
	Messages  []pushedMessage    `json:"messages"`
	Scheduled []scheduledMessage `json:"scheduled,omitempty"`
	Duplicate bool               `json:"duplicate"`
}

// target is one channel a push goes to.
type target struct{ user, topic, channel string }

// handlePush stores a message for each target user and answers 200 only once
// JetStream acknowledged every store.
func (ds *Dispatcher) handlePush(ctx *fasthttp.RequestCtx, appName string) {
	app, ok := ds.authApp(ctx, appName)
	if !ok {
		return
	}

	limit := ds.cfg.MaxPayload
	if app.MaxPayload > 0 {
		limit = app.MaxPayload
	}
	p, perr := parsePush(ctx.PostBody(), limit, ds.storeCfg.MaxAge, time.Now())
	if perr != nil {
		writeError(ctx, perr.status, perr.code, perr.msg)
		return
	}
	req, payload, targets, ttl := &p.req, p.payload, p.targets, p.ttl
	if wait := ds.limiter.take(app, len(targets), time.Now()); wait > 0 {
		ds.m.rateLimited.Inc()
		ctx.Response.Header.Set("Retry-After", strconv.Itoa(int((wait+time.Second-1)/time.Second)))
		writeError(ctx, fasthttp.StatusTooManyRequests, "rate_limited", fmt.Sprintf("app %s is over its publish rate; retry in %v", app.Name, wait.Round(time.Millisecond)))
		return
	}
	if !p.at.IsZero() {
		ds.schedule(ctx, app, req, targets, p.at, ttl, payload)
		return
	}

	msgs := make([]offline.Publish, len(targets))
	for i, tg := range targets {
		msgs[i] = offline.Publish{App: app.Name, Channel: tg.channel, Data: payload, TTL: ttl}
		if req.ID != "" {
			// One id per target: the duplicate window is per message, and
			// the same request stores one message per channel.
			msgs[i].ID = req.ID + ":" + tg.channel
		}
	}
	pctx, cancel := context.WithTimeout(context.Background(), ds.cfg.PublishTimeout)
	defer cancel()
	stored, err := ds.d.Store.PublishAll(pctx, msgs)
	if err != nil {
		ds.m.storeErr.Inc()
		ds.log.Warn("publish not stored", "app", app.Name, "err", err)
		writeError(ctx, fasthttp.StatusServiceUnavailable, "store_unavailable", "the message store did not acknowledge; retry with the same id")
		return
	}
	resp := pushResponse{Messages: make([]pushedMessage, len(targets))}
	for i, tg := range targets {
		resp.Messages[i] = pushedMessage{User: tg.user, Topic: tg.topic, Channel: tg.channel, Seq: stored[i].Seq, Duplicate: stored[i].Duplicate}
		if stored[i].Duplicate {
			resp.Duplicate = true
			ds.m.dups.Inc()
		} else {
			ds.m.published.Inc()
		}
	}
	writeJSON(ctx, fasthttp.StatusOK, &resp)
}

// parsedPush is a validated push request.
type parsedPush struct {
	req     pushRequest
	payload []byte
	targets []target
	ttl     time.Duration
	at      time.Time // zero: store now
}

// pushError is why a push body is refused.
type pushError struct {
	status    int
	code, msg string
}

func badPush(code, msg string) *pushError {
	return &pushError{status: fasthttp.StatusBadRequest, code: code, msg: msg}
}

// parsePush decodes and validates a push body: strict JSON, one target
// kind, names that are valid subject tokens, the payload within maxPayload,
// ttl and at within maxAge of now. It touches nothing else (FuzzParsePush).
func parsePush(body []byte, maxPayload int, maxAge time.Duration, now time.Time) (*parsedPush, *pushError) {
	p := &parsedPush{}
	if err := decodeStrict(body, &p.req); err != nil {
		return nil, badPush("bad_json", "request body is not valid JSON for a push: "+err.Error())
	}
	req := &p.req
	var perr *pushError
	if p.payload, perr = checkPayload(req, maxPayload); perr != nil {
		return nil, perr
	}
	targets, code, msg := pushTargets(req)
	if code != "" {
		return nil, badPush(code, msg)
	}
	p.targets = targets
	if req.ID != "" && !config.ValidID(req.ID) {
		return nil, badPush("invalid_id", fmt.Sprintf("id must be 1-%d printable ASCII characters without spaces", MaxIDLen))
	}
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d < MinTTL || d > maxAge {
			return nil, badPush("invalid_ttl", fmt.Sprintf("ttl must be a duration such as \"1h\" between %v and %v", MinTTL, maxAge))
		}
		p.ttl = d.Truncate(time.Second)
	}
	if req.At != "" {
		at, err := time.Parse(time.RFC3339, req.At)
		if err != nil || !at.After(now) || at.After(now.Add(maxAge)) {
			return nil, badPush("invalid_at",
				fmt.Sprintf("at must be an RFC 3339 time such as %q, in the future and within store.max_age (%v)",
					now.Add(time.Hour).UTC().Format(time.RFC3339), maxAge))
		}
		p.at = at
	}
	return p, nil
}

// authorized checks "Authorization: Bearer <key>" against the app's keys.
func authorized(ctx *fasthttp.RequestCtx, app *offline.App) bool {
	key, ok := bearer(ctx)
	return ok && app.CheckKey(key)
}

// bearer is the key of "Authorization: Bearer <key>".
func bearer(ctx *fasthttp.RequestCtx) (string, bool) {
	h := ctx.Request.Header.Peek(fasthttp.HeaderAuthorization)
	const prefix = "Bearer "
	if len(h) <= len(prefix) || !bytes.EqualFold(h[:len(prefix)], []byte(prefix)) {
		return "", false
	}
	return string(bytes.TrimSpace(h[len(prefix):])), true
}

// checkPayload decodes data or data_base64 and checks the size limit.
func checkPayload(req *pushRequest, limit int) ([]byte, *pushError) {
	var b []byte
	switch {
	case req.Data != nil && req.DataBase64 != nil:
		return nil, badPush("invalid_data", "give either data or data_base64, not both")
	case req.Data == nil && req.DataBase64 == nil:
		return nil, badPush("invalid_data", "data or data_base64 is required")
	case req.Data != nil:
		b = []byte(*req.Data)
	default:
		var err error
		b, err = base64.StdEncoding.DecodeString(*req.DataBase64)
		if err != nil {
			return nil, badPush("invalid_data", "data_base64 is not valid standard base64")
		}
	}
	if len(b) > limit {
		return nil, &pushError{status: fasthttp.StatusRequestEntityTooLarge, code: "payload_too_large", msg: fmt.Sprintf("payload is %d bytes; the limit is %d", len(b), limit)}
	}
	return b, nil
}

// schedule stores the push as one JetStream message schedule per target:
// the server publishes each to its channel at the given time.
func (ds *Dispatcher) schedule(ctx *fasthttp.RequestCtx, app *offline.App, req *pushRequest, targets []target, at time.Time, ttl time.Duration, payload []byte) {
	pctx, cancel := context.WithTimeout(context.Background(), ds.cfg.PublishTimeout)
	defer cancel()
	resp := pushResponse{Messages: []pushedMessage{}}
	for _, tg := range targets {
		id := scheduleID(req.ID, tg.channel)
		if _, err := ds.d.Store.ScheduleAt(pctx, app.Name, tg.channel, id, at, ttl, payload); err != nil {
			ds.m.storeErr.Inc()
			ds.log.Warn("schedule not stored", "app", app.Name, "err", err)
			writeError(ctx, fasthttp.StatusServiceUnavailable, "store_unavailable", "the message store did not acknowledge; retry with the same id")
			return
		}
		ds.m.scheduled.Inc()
		resp.Scheduled = append(resp.Scheduled, scheduledMessage{User: tg.user, Topic: tg.topic, Channel: tg.channel, Schedule: id, At: at.UTC()})
	}
	writeJSON(ctx, fasthttp.StatusOK, &resp)
}

// scheduleID names a schedule: derived from the request's id (so a retry
// replaces the same schedule instead of adding one) or random.
func scheduleID(reqID, channel string) string {
	if reqID == "" {
		var b [12]byte
		_, _ = rand.Read(b[:])
		return hex.EncodeToString(b[:])
	}
	h := sha256.Sum256([]byte(reqID + "\x00" + channel))
	return hex.EncodeToString(h[:12])
}

// pushTargets checks that exactly one kind of target is given and returns
// the channels.
func pushTargets(req *pushRequest) (out []target, code, msg string) {
	n := 0
	if req.Users != nil {
		n++
	}
	if req.Topic != "" {
		n++
	}
	if req.Broadcast {
		n++
	}
	switch {
	case n == 0:
		return nil, "missing_target", "give users, topic or broadcast"
	case n > 1:
		return nil, "conflicting_targets", "give only one of users, topic and broadcast"
	case req.Broadcast:
		return []target{{channel: offline.BroadcastChannel}}, "", ""
	case req.Topic != "":
		if !config.ValidName(req.Topic) {
			return nil, "invalid_topic", "invalid topic name " + quote(req.Topic) + ": 1-128 of A-Z a-z 0-9 _ -"
		}
		return []target{{topic: req.Topic, channel: offline.TopicChannel(req.Topic)}}, "", ""
	}
	users, code, msg := validUsers(req.Users)
	if code != "" {
		return nil, code, msg
	}
	out = make([]target, 0, len(users))
	for _, u := range users {
		out = append(out, target{user: u, channel: offline.UserChannel(u)})
	}
	return out, "", ""
}

// validUsers checks names and drops repeats, keeping the first order.
func validUsers(users []string) (out []string, code, msg string) {
	if len(users) == 0 {
		return nil, "missing_target", "users must name at least one user"
	}
	if len(users) > MaxUsersPerPush {
		return nil, "too_many_users", fmt.Sprintf("at most %d users per request", MaxUsersPerPush)
	}
	seen := make(map[string]bool, len(users))
	out = make([]string, 0, len(users))
	for _, u := range users {
		if !config.ValidName(u) {
			return nil, "invalid_user", "invalid user name " + quote(u) + ": 1-128 of A-Z a-z 0-9 _ -"
		}
		if !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	return out, "", ""
}

// quote shows a client-given name in an error without echoing megabytes or
// control characters.
func quote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	if !utf8.ValidString(s) {
		s = "(invalid utf-8)"
	}
	return fmt.Sprintf("%q", s)
}

// jsonProblem describes a decode error without echoing the body.
func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("field %q must be %s", te.Field, te.Type.String())
	case errors.Is(err, io.EOF):
		return "empty body"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "truncated JSON"
	default:
		s := err.Error()
		if len(s) > 120 {
			s = s[:120]
		}
		return s
	}
}
