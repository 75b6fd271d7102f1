package dispatcher

import (
	"context"
	"encoding/base64"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/valyala/fasthttp"

	"herald/config"
	"herald/offline"
)

// Long-poll and page bounds of GET /upstream.
const (
	defaultUpPage = 100
	maxUpPage     = 1000
	maxUpWait     = 60 * time.Second
)

// routeApp serves the per-app endpoints other than push. It returns the
// route name for metrics.
func (ds *Dispatcher) routeApp(ctx *fasthttp.RequestCtx, appName, rest string) string {
	parts := strings.Split(rest, "/")
	var route string
	var allow string
	switch {
	case len(parts) == 3 && parts[0] == "users" && parts[2] == "topics":
		route, allow = "user_topics", "GET"
	case len(parts) == 4 && parts[0] == "users" && parts[2] == "topics":
		route, allow = "user_topic", "PUT, DELETE"
	case len(parts) == 2 && parts[0] == "messages":
		route, allow = "message", "GET, DELETE"
	case len(parts) == 1 && parts[0] == "schedules":
		route, allow = "schedules", "GET"
	case len(parts) == 2 && parts[0] == "schedules":
		route, allow = "schedule", "DELETE"
	case len(parts) == 1 && parts[0] == "upstream":
		route, allow = "upstream", "GET"
	default:
		writeError(ctx, fasthttp.StatusNotFound, "not_found", "no such endpoint: "+quote(string(ctx.Path())))
		return "other"
	}
	method := string(ctx.Method())
	if !strings.Contains(allow, method) {
		ds.methodNotAllowed(ctx, allow)
		return route
	}
	app, ok := ds.authApp(ctx, appName)
	if !ok {
		return route
	}
	rctx, cancel := context.WithTimeout(ds.ctx, 10*time.Second)
	defer cancel()
	switch route {
	case "user_topics":
		ds.getTopics(rctx, ctx, app, parts[1])
	case "user_topic":
		ds.setTopic(rctx, ctx, app, parts[1], parts[3], method == "PUT")
	case "message":
		seq, err := strconv.ParseUint(parts[1], 10, 64)
		if err != nil || seq == 0 {
			writeError(ctx, fasthttp.StatusBadRequest, "invalid_seq", "the message sequence must be a positive integer")
			return route
		}
		if method == "GET" {
			ds.messageStatus(rctx, ctx, app, seq)
		} else {
			ds.recall(rctx, ctx, app, seq)
		}
	case "schedules":
		ds.listSchedules(rctx, ctx, app)
	case "schedule":
		ds.cancelSchedule(rctx, ctx, app, parts[1])
	case "upstream":
		cancel()
		ds.upstream(ctx, app)
	}
	return route
}

// authApp finds the app and checks the publisher key, answering 404/401.
func (ds *Dispatcher) authApp(ctx *fasthttp.RequestCtx, appName string) (*offline.App, bool) {
	app, ok := ds.d.Apps.Get(appName)
	if !config.ValidName(appName) || !ok {
		writeError(ctx, fasthttp.StatusNotFound, "unknown_app", "no app named "+quote(appName))
		return nil, false
	}
	if !authorized(ctx, app) {
		ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="herald"`)
		writeError(ctx, fasthttp.StatusUnauthorized, "unauthorized", "missing or wrong publisher key")
		return nil, false
	}
	return app, true
}

func (ds *Dispatcher) storeFailed(ctx *fasthttp.RequestCtx, what string, err error) {
	ds.m.storeErr.Inc()
	ds.log.Warn("store request failed", "what", what, "err", err)
	writeError(ctx, fasthttp.StatusServiceUnavailable, "store_unavailable", "the store did not answer; retry")
}

type topicsResponse struct {
	User   string   `json:"user"`
	Topics []string `json:"topics"`
}

func (ds *Dispatcher) getTopics(rctx context.Context, ctx *fasthttp.RequestCtx, app *offline.App, user string) {
	if !config.ValidName(user) {
		writeError(ctx, fasthttp.StatusBadRequest, "invalid_user", "invalid user name "+quote(user)+": 1-128 of A-Z a-z 0-9 _ -")
		return
	}
	topics, err := ds.d.Store.UserTopics(rctx, app.Name, user)
	if err != nil {
		ds.storeFailed(ctx, "topics", err)
		return
	}
	if topics == nil {
		topics = []string{}
	}
	writeJSON(ctx, fasthttp.StatusOK, &topicsResponse{User: user, Topics: topics})
}

// setTopic subscribes (PUT) or unsubscribes (DELETE) a user server-side. It
// applies to the user's devices at their next CONNECT.
func (ds *Dispatcher) setTopic(rctx context.Context, ctx *fasthttp.RequestCtx, app *offline.App, user, topic string, on bool) {
	switch {
	case !config.ValidName(user):
		writeError(ctx, fasthttp.StatusBadRequest, "invalid_user", "invalid user name "+quote(user)+": 1-128 of A-Z a-z 0-9 _ -")
		return
	case !config.ValidName(topic):
		writeError(ctx, fasthttp.StatusBadRequest, "invalid_topic", "invalid topic name "+quote(topic)+": 1-128 of A-Z a-z 0-9 _ -")
		return
	}
	if on && !app.ServerTopics {
		// Gateways read users' topics only for apps marked so; mark first
		// and let the apps watch deliver it, so the user's next CONNECT
		// anywhere sees the topic.
		if err := ds.d.Store.MarkServerTopics(rctx, app.Name); err != nil {
			ds.storeFailed(ctx, "apps", err)
			return
		}
		for i := 0; i < 200; i++ {
			if a, ok := ds.d.Apps.Get(app.Name); ok && a.ServerTopics {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	_, err := ds.d.Store.SetUserTopic(rctx, app.Name, user, topic, on)
	switch {
	case errors.Is(err, offline.ErrTooManyTopics):
		writeError(ctx, fasthttp.StatusConflict, "too_many_topics", "a user may have at most "+strconv.Itoa(offline.MaxTopicsPerUser)+" server-side topics")
		return
	case err != nil:
		ds.storeFailed(ctx, "topics", err)
		return
	}
	ds.getTopics(rctx, ctx, app, user)
}

type deviceStatus struct {
	Device string `json:"device"`
	Cursor uint64 `json:"cursor"`
	Acked  bool   `json:"acked"`
}

type messageStatus struct {
	Seq       uint64         `json:"seq"`
	State     string         `json:"state"` // stored, expired, recalled
	Channel   string         `json:"channel,omitempty"`
	StoredAt  *time.Time     `json:"stored_at,omitempty"`
	ExpiresAt *time.Time     `json:"expires_at,omitempty"`
	Devices   []deviceStatus `json:"devices,omitempty"`
}

// messageStatus answers stored/expired/recalled and, for a user channel,
// which of the user's devices acknowledged the message (their cursors as
// last written by the gateways, every cursor_flush).
func (ds *Dispatcher) messageStatus(rctx context.Context, ctx *fasthttp.RequestCtx, app *offline.App, seq uint64) {
	m, err := ds.d.Store.Message(rctx, app.Name, seq)
	st := messageStatus{Seq: seq, State: "stored"}
	switch {
	case errors.Is(err, offline.ErrNotFound):
		writeError(ctx, fasthttp.StatusNotFound, "unknown_message", "app "+quote(app.Name)+" has no message "+strconv.FormatUint(seq, 10))
		return
	case errors.Is(err, offline.ErrExpired):
		st.State = "expired"
	case errors.Is(err, offline.ErrRecalled):
		st.State = "recalled"
	case err != nil:
		ds.storeFailed(ctx, "message", err)
		return
	}
	if m.Subject != "" {
		_, st.Channel, _ = offline.ChannelOfStored(m.Subject)
	}
	if !m.Time.IsZero() {
		t := m.Time.UTC()
		st.StoredAt = &t
	}
	if !m.Expires.IsZero() {
		t := m.Expires.UTC()
		st.ExpiresAt = &t
	}
	if kind, user, ok := offline.ParseChannel(st.Channel); ok && kind == offline.KindUser {
		cursors, err := ds.d.Store.DeviceCursors(rctx, app.Name, user, st.Channel)
		if err != nil {
			ds.storeFailed(ctx, "cursors", err)
			return
		}
		st.Devices = []deviceStatus{}
		for dev, cur := range cursors {
			st.Devices = append(st.Devices, deviceStatus{Device: dev, Cursor: cur, Acked: cur >= seq})
		}
		slices.SortFunc(st.Devices, func(a, b deviceStatus) int { return strings.Compare(a.Device, b.Device) })
	}
	writeJSON(ctx, fasthttp.StatusOK, &st)
}

// recall deletes a stored message; gateways send REVOKE to the devices that
// got it. Recalling a recalled message again answers the same.
func (ds *Dispatcher) recall(rctx context.Context, ctx *fasthttp.RequestCtx, app *offline.App, seq uint64) {
	channel, err := ds.d.Store.Recall(rctx, app.Name, seq)
	switch {
	case errors.Is(err, offline.ErrNotFound):
		writeError(ctx, fasthttp.StatusNotFound, "unknown_message", "app "+quote(app.Name)+" has no message "+strconv.FormatUint(seq, 10))
		return
	case errors.Is(err, offline.ErrExpired):
		writeError(ctx, fasthttp.StatusGone, "expired", "message "+strconv.FormatUint(seq, 10)+" expired: it is no longer stored and cannot be recalled")
		return
	case errors.Is(err, offline.ErrRecalled):
		ds.messageStatus(rctx, ctx, app, seq)
		return
	case err != nil:
		ds.storeFailed(ctx, "recall", err)
		return
	}
	ds.m.recalled.Inc()
	writeJSON(ctx, fasthttp.StatusOK, &messageStatus{Seq: seq, State: "recalled", Channel: channel})
}

type schedulesResponse struct {
	Schedules []offline.Schedule `json:"schedules"`
}

func (ds *Dispatcher) listSchedules(rctx context.Context, ctx *fasthttp.RequestCtx, app *offline.App) {
	list, err := ds.d.Store.Schedules(rctx, app.Name)
	if err != nil {
		ds.storeFailed(ctx, "schedules", err)
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, &schedulesResponse{Schedules: list})
}

func (ds *Dispatcher) cancelSchedule(rctx context.Context, ctx *fasthttp.RequestCtx, app *offline.App, id string) {
	if !config.ValidName(id) {
		writeError(ctx, fasthttp.StatusBadRequest, "invalid_schedule", "invalid schedule id "+quote(id))
		return
	}
	err := ds.d.Store.CancelSchedule(rctx, app.Name, id)
	switch {
	case errors.Is(err, offline.ErrNotFound):
		writeError(ctx, fasthttp.StatusNotFound, "unknown_schedule", "no pending schedule "+quote(id)+" (never made, cancelled, or already delivered)")
	case err != nil:
		ds.storeFailed(ctx, "schedule", err)
	default:
		writeJSON(ctx, fasthttp.StatusOK, map[string]any{"schedule": id, "cancelled": true})
	}
}

type upMessageJSON struct {
	offline.UpMessage
	Data       *string `json:"data,omitempty"`
	DataBase64 *string `json:"data_base64,omitempty"`
}

type upstreamResponse struct {
	Messages []upMessageJSON `json:"messages"`
	// Last is the sequence to pass as after next time.
	Last uint64 `json:"last"`
}

// upstream answers GET /upstream?after=&max=&wait=: the upstream messages of
// the app after a sequence; with wait, it holds the request until one
// arrives or wait passes (long-poll).
func (ds *Dispatcher) upstream(ctx *fasthttp.RequestCtx, app *offline.App) {
	args := ctx.QueryArgs()
	after, max, wait := uint64(0), defaultUpPage, time.Duration(0)
	var err error
	if v := args.Peek("after"); len(v) > 0 {
		if after, err = strconv.ParseUint(string(v), 10, 64); err != nil {
			writeError(ctx, fasthttp.StatusBadRequest, "invalid_after", "after must be a sequence number")
			return
		}
	}
	if v := args.Peek("max"); len(v) > 0 {
		if max, err = strconv.Atoi(string(v)); err != nil || max < 1 || max > maxUpPage {
			writeError(ctx, fasthttp.StatusBadRequest, "invalid_max", "max must be 1-"+strconv.Itoa(maxUpPage))
			return
		}
	}
	if v := args.Peek("wait"); len(v) > 0 {
		if wait, err = time.ParseDuration(string(v)); err != nil || wait < 0 || wait > maxUpWait {
			writeError(ctx, fasthttp.StatusBadRequest, "invalid_wait", "wait must be a duration up to "+maxUpWait.String())
			return
		}
	}
	rctx, cancel := context.WithTimeout(ds.ctx, wait+10*time.Second)
	defer cancel()
	// Listen before reading, so a message stored in between wakes us.
	var woke chan *nats.Msg
	if wait > 0 {
		woke = make(chan *nats.Msg, 1)
		sub, err := ds.d.NC.ChanSubscribe(offline.UpLiveSubject(app.Name), woke)
		if err != nil {
			ds.storeFailed(ctx, "upstream", err)
			return
		}
		defer func() { _ = sub.Unsubscribe() }()
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		msgs, err := ds.d.Store.FetchUp(rctx, app.Name, after, max)
		if err != nil {
			ds.storeFailed(ctx, "upstream", err)
			return
		}
		if len(msgs) > 0 || wait == 0 {
			resp := upstreamResponse{Messages: make([]upMessageJSON, len(msgs)), Last: after}
			for i, m := range msgs {
				resp.Messages[i].UpMessage = m
				if utf8.Valid(m.Data) {
					s := string(m.Data)
					resp.Messages[i].Data = &s
				} else {
					s := base64.StdEncoding.EncodeToString(m.Data)
					resp.Messages[i].DataBase64 = &s
				}
				resp.Last = m.Seq
			}
			writeJSON(ctx, fasthttp.StatusOK, &resp)
			return
		}
		select {
		case <-woke:
		case <-deadline.C:
			wait = 0 // one last read, then answer
		case <-ds.ctx.Done():
			wait = 0
		}
	}
}
