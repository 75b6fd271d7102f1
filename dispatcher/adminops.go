package dispatcher

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/valyala/fasthttp"

	"herald/config"
	"herald/offline"
	"herald/token"
)

// Operations endpoints of the admin API, used by `herald ctl` and the
// dashboard: a user's channels and devices, a channel's messages, replay,
// gateways and drain, store and cluster stats, device tokens.

type deviceReport struct {
	Device string `json:"device"`
	Cursor uint64 `json:"cursor"`
	Lag    uint64 `json:"lag"` // messages stored after the cursor
}

type channelReport struct {
	Channel string         `json:"channel"`
	Stored  uint64         `json:"stored"`
	Devices []deviceReport `json:"devices"`
}

type userReport struct {
	App          string          `json:"app"`
	User         string          `json:"user"`
	ServerTopics []string        `json:"server_topics"`
	Channels     []channelReport `json:"channels"`
}

// userReport answers GET /v1/admin/apps/{app}/users/{user}: every channel
// the user's devices hold a cursor on (and the user and broadcast channels,
// and its server-side topics), with the messages stored and each device's
// cursor and lag.
func (ds *Dispatcher) userReport(rctx context.Context, ctx *fasthttp.RequestCtx, app, user string) {
	if _, err := ds.d.Store.GetApp(rctx, app); err != nil {
		ds.adminChanged(ctx, app, "", err, 0, nil)
		return
	}
	cursors, err := ds.d.Store.UserCursors(rctx, app, user)
	if err != nil {
		ds.storeFailed(ctx, "user report", err)
		return
	}
	topics, err := ds.d.Store.UserTopics(rctx, app, user)
	if err != nil {
		ds.storeFailed(ctx, "user report", err)
		return
	}
	rep := userReport{App: app, User: user, ServerTopics: topics, Channels: []channelReport{}}
	names := []string{offline.UserChannel(user), offline.BroadcastChannel}
	for _, t := range topics {
		names = append(names, offline.TopicChannel(t))
	}
	for ch := range cursors {
		if !slices.Contains(names, ch) {
			names = append(names, ch)
		}
	}
	slices.Sort(names[2:])
	for _, ch := range names {
		stored, err := ds.d.Store.CountAfter(rctx, app, ch, 0)
		if err != nil {
			ds.storeFailed(ctx, "user report", err)
			return
		}
		cr := channelReport{Channel: ch, Stored: stored, Devices: []deviceReport{}}
		for dev, seq := range cursors[ch] {
			lag, err := ds.d.Store.CountAfter(rctx, app, ch, seq)
			if err != nil {
				ds.storeFailed(ctx, "user report", err)
				return
			}
			cr.Devices = append(cr.Devices, deviceReport{Device: dev, Cursor: seq, Lag: lag})
		}
		slices.SortFunc(cr.Devices, func(a, b deviceReport) int { return strings.Compare(a.Device, b.Device) })
		rep.Channels = append(rep.Channels, cr)
	}
	writeJSON(ctx, fasthttp.StatusOK, &rep)
}

type storedMessageJSON struct {
	Seq        uint64     `json:"seq"`
	Time       time.Time  `json:"time"`
	Expires    *time.Time `json:"expires,omitempty"`
	Size       int        `json:"size"`
	Data       *string    `json:"data,omitempty"`
	DataBase64 *string    `json:"data_base64,omitempty"`
}

// channelMessages answers GET /v1/admin/apps/{app}/channels/{channel}/messages?after=&max=.
func (ds *Dispatcher) channelMessages(rctx context.Context, ctx *fasthttp.RequestCtx, app, channel string) {
	if kind, name, ok := offline.ParseChannel(channel); !ok || (kind != offline.KindBroadcast && !config.ValidName(name)) {
		writeError(ctx, fasthttp.StatusBadRequest, "invalid_channel", "invalid channel "+quote(channel)+": u.<user>, t.<topic> or b.all")
		return
	}
	args := ctx.QueryArgs()
	after, max := uint64(0), 100
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
	msgs, pending, err := ds.d.Store.Fetch(rctx, offline.StoredSubject(app, channel), after+1, max)
	if err != nil {
		ds.storeFailed(ctx, "messages", err)
		return
	}
	out := struct {
		Channel  string              `json:"channel"`
		Messages []storedMessageJSON `json:"messages"`
		More     uint64              `json:"more"`
	}{Channel: channel, Messages: make([]storedMessageJSON, 0, len(msgs)), More: pending}
	for _, m := range msgs {
		j := storedMessageJSON{Seq: m.Seq, Time: m.Time, Size: len(m.Data)}
		if !m.Expires.IsZero() {
			e := m.Expires
			j.Expires = &e
		}
		if utf8.Valid(m.Data) {
			s := string(m.Data)
			j.Data = &s
		} else {
			s := base64.StdEncoding.EncodeToString(m.Data)
			j.DataBase64 = &s
		}
		out.Messages = append(out.Messages, j)
	}
	writeJSON(ctx, fasthttp.StatusOK, &out)
}

type replayRequest struct {
	Device  string `json:"device"`
	FromSeq uint64 `json:"from_seq"`
	Since   string `json:"since"`
}

// replay answers POST /v1/admin/apps/{app}/users/{user}/replay: an order
// per device (the one given, or every device holding a cursor on the user
// channel) to re-deliver the user channel from a sequence or a time on. The
// gateway holding the device carries it out now (RESYNC, then the messages
// again) or at its next CONNECT.
func (ds *Dispatcher) replay(rctx context.Context, ctx *fasthttp.RequestCtx, app, user string) {
	var req replayRequest
	if !decodeBody(ctx, &req, "a replay") {
		return
	}
	if (req.FromSeq == 0) == (req.Since == "") {
		writeError(ctx, fasthttp.StatusBadRequest, "invalid_replay", "give exactly one of from_seq (a sequence >= 1) and since (a duration such as \"2h\")")
		return
	}
	if req.Device != "" && !config.ValidName(req.Device) {
		writeError(ctx, fasthttp.StatusBadRequest, "invalid_device", "invalid device name "+quote(req.Device))
		return
	}
	if _, err := ds.d.Store.GetApp(rctx, app); err != nil {
		ds.adminChanged(ctx, app, "", err, 0, nil)
		return
	}
	channel := offline.UserChannel(user)
	from := req.FromSeq
	if req.Since != "" {
		d, err := time.ParseDuration(req.Since)
		if err != nil || d <= 0 || d > ds.storeCfg.MaxAge+time.Hour {
			writeError(ctx, fasthttp.StatusBadRequest, "invalid_since", "since must be a positive duration such as \"2h\", within store.max_age")
			return
		}
		from, err = ds.d.Store.FirstSeqSince(rctx, offline.StoredSubject(app, channel), time.Now().Add(-d))
		if err != nil {
			ds.storeFailed(ctx, "replay", err)
			return
		}
		if from == 0 {
			writeError(ctx, fasthttp.StatusConflict, "nothing_stored", fmt.Sprintf("no message of %s stored in the last %v", channel, d))
			return
		}
	}
	devices := []string{req.Device}
	if req.Device == "" {
		var err error
		if devices, err = ds.d.Store.Devices(rctx, app, user, channel); err != nil {
			ds.storeFailed(ctx, "replay", err)
			return
		}
		if len(devices) == 0 {
			writeError(ctx, fasthttp.StatusNotFound, "no_devices", "the user has no device with a cursor; name one with device")
			return
		}
	}
	slices.Sort(devices)
	now := time.Now().UTC()
	for _, dev := range devices {
		if err := ds.d.Store.PutReplay(rctx, offline.Replay{App: app, User: user, Device: dev, From: from, At: now}); err != nil {
			ds.storeFailed(ctx, "replay", err)
			return
		}
	}
	ds.m.adminChanges.Inc()
	ds.log.Info("admin: replay ordered", "app", app, "user", user, "devices", len(devices), "from", from)
	writeJSON(ctx, fasthttp.StatusAccepted, map[string]any{"channel": channel, "from_seq": from, "devices": devices})
}

// drain asks gateway id (over NATS) to drain.
func (ds *Dispatcher) drain(ctx *fasthttp.RequestCtx, id string) {
	m, err := ds.d.NC.Request(offline.GatewayControlSubject(id), []byte("drain"), 5*time.Second)
	switch {
	case err == nats.ErrNoResponders:
		writeError(ctx, fasthttp.StatusNotFound, "unknown_gateway", "no gateway "+quote(id)+" answers")
		return
	case err != nil:
		ds.storeFailed(ctx, "drain", err)
		return
	}
	var info offline.GatewayInfo
	if json.Unmarshal(m.Data, &info) != nil {
		ds.storeFailed(ctx, "drain", fmt.Errorf("bad answer from gateway %s", id))
		return
	}
	ds.m.adminChanges.Inc()
	ds.log.Info("admin: gateway drain", "gateway", id)
	writeJSON(ctx, fasthttp.StatusAccepted, &info)
}

// stats answers GET /v1/admin/stats: what the dashboard draws, read at
// once — the stream's newest sequence (publishes/s across every
// dispatcher, from its change), the gateways (connections, deliveries,
// p99), the NATS servers known to this connection.
func (ds *Dispatcher) stats(rctx context.Context, ctx *fasthttp.RequestCtx) {
	st, err := ds.d.Store.Stats(rctx)
	if err != nil {
		ds.storeFailed(ctx, "stats", err)
		return
	}
	gws, err := ds.d.Store.Gateways(rctx)
	if err != nil {
		ds.storeFailed(ctx, "stats", err)
		return
	}
	var last uint64
	if len(st.Streams) > 0 {
		last = st.Streams[0].LastSeq
	}
	nc := ds.d.NC
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{
		"time":        time.Now().UTC(),
		"stored_seq":  last,
		"gateways":    gws,
		"streams":     st.Streams,
		"buckets":     st.Buckets,
		"nats":        map[string]any{"connected": nc.ConnectedUrlRedacted(), "server_id": nc.ConnectedServerId(), "servers": nc.Servers(), "cluster": nc.ConnectedClusterName()},
		"dispatchers": map[string]any{"published": ds.m.published.Get(), "rate_limited": ds.m.rateLimited.Get()},
	})
}

type tokenRequest struct {
	User   string `json:"user"`
	Device string `json:"device"`
	TTL    string `json:"ttl"`
}

// mintToken answers POST /v1/admin/apps/{app}/tokens: a device token signed
// with the app's current secret (for the demo page, tests and support).
func (ds *Dispatcher) mintToken(ctx *fasthttp.RequestCtx, app string) {
	var req tokenRequest
	if !decodeBody(ctx, &req, "a token request") {
		return
	}
	if !config.ValidName(req.User) || (req.Device != "" && !config.ValidName(req.Device)) {
		writeError(ctx, fasthttp.StatusBadRequest, "invalid_name", "user (and device) must be 1-128 of A-Z a-z 0-9 _ -")
		return
	}
	ttl := time.Hour
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 || d > 30*24*time.Hour {
			writeError(ctx, fasthttp.StatusBadRequest, "invalid_ttl", "ttl must be a duration up to 720h")
			return
		}
		ttl = d
	}
	a, ok := ds.d.Apps.Get(app)
	if !ok || len(a.Secrets) == 0 {
		writeError(ctx, fasthttp.StatusNotFound, "unknown_app", "no app named "+quote(app))
		return
	}
	tok, err := token.Sign([]byte(a.Secrets[0]), app, req.User, req.Device, ttl)
	if err != nil {
		ds.storeFailed(ctx, "token", err)
		return
	}
	writeJSON(ctx, fasthttp.StatusCreated, map[string]any{"token": tok, "expires": time.Now().Add(ttl).UTC()})
}
