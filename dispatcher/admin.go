package dispatcher

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"herald/config"
	"herald/offline"
)

// The admin API manages apps: /v1/admin/apps[/{app}[/keys[/{id}]|/secrets]],
// authorized by an admin key (api.admin_keys). Apps live in the apps KV
// bucket; every node follows it with a watch, so a change (a new key, a
// revoked one, a rotated secret, new limits) applies everywhere within
// moments and without a restart. Secrets and keys are answered once, when
// they are generated, and never listed.

// Bounds of the admin API.
const (
	maxKeysPerApp    = 16
	maxSecretsPerApp = 8
	minCredentialLen = 16
	defaultGrace     = 24 * time.Hour
	maxGrace         = 30 * 24 * time.Hour
)

// appView is an app as the admin API shows it: key ids, never keys;
// the number of secrets, never secrets.
type appView struct {
	Name    string      `json:"name"`
	Keys    []string    `json:"keys"`
	Secrets int         `json:"secrets"`
	Retire  []time.Time `json:"retiring_until,omitempty"`
	config.Limits
	Origins      []string `json:"origins,omitempty"`
	ServerTopics bool     `json:"server_topics,omitempty"`
}

func viewOf(a *offline.App) appView {
	v := appView{Name: a.Name, Keys: []string{}, Secrets: len(a.Secrets), Limits: a.Limits, Origins: a.Origins, ServerTopics: a.ServerTopics}
	for _, h := range a.KeyHashes {
		v.Keys = append(v.Keys, offline.KeyID(h))
	}
	for _, r := range a.Retiring {
		v.Retire = append(v.Retire, r.Until)
	}
	return v
}

// createRequest is the body of POST /v1/admin/apps. Keys and secrets are
// generated when not given.
type createRequest struct {
	Name    string   `json:"name"`
	Keys    []string `json:"keys"`
	Secrets []string `json:"secrets"`
	config.Limits
	Origins []string `json:"origins"`
}

type createResponse struct {
	App    appView `json:"app"`
	Key    string  `json:"key,omitempty"`
	Secret string  `json:"secret,omitempty"`
}

// patchRequest is the body of PATCH /v1/admin/apps/{app}: only the fields
// given change.
type patchRequest struct {
	PublishRate  *float64  `json:"publish_rate"`
	PublishBurst *int      `json:"publish_burst"`
	MaxPayload   *int      `json:"max_payload"`
	MaxTopics    *int      `json:"max_topics"`
	MaxDevices   *int      `json:"max_devices"`
	Origins      *[]string `json:"origins"`
}

type keyRequest struct {
	Key string `json:"key"`
}

type keyResponse struct {
	ID  string `json:"id"`
	Key string `json:"key,omitempty"`
}

type rotateRequest struct {
	Secret string `json:"secret"`
	Grace  string `json:"grace"`
}

type rotateResponse struct {
	App           appView   `json:"app"`
	Secret        string    `json:"secret,omitempty"`
	RetiringUntil time.Time `json:"retiring_until"`
}

// routeAdmin serves /v1/admin/. It returns the route name for metrics.
func (ds *Dispatcher) routeAdmin(ctx *fasthttp.RequestCtx, path string) string {
	parts := strings.Split(strings.TrimPrefix(path, "/v1/admin/"), "/")
	var route, allow string
	is := func(pattern ...string) bool {
		if len(parts) != len(pattern) {
			return false
		}
		for i, p := range pattern {
			if p != "*" && p != parts[i] {
				return false
			}
		}
		return true
	}
	switch {
	case is("apps"):
		route, allow = "admin_apps", "GET, POST"
	case is("apps", "*"):
		route, allow = "admin_app", "GET, PATCH, DELETE"
	case is("apps", "*", "keys"):
		route, allow = "admin_keys", "POST"
	case is("apps", "*", "keys", "*"):
		route, allow = "admin_key", "DELETE"
	case is("apps", "*", "secrets"):
		route, allow = "admin_secrets", "POST"
	case is("apps", "*", "tokens"):
		route, allow = "admin_tokens", "POST"
	case is("apps", "*", "users", "*"):
		route, allow = "admin_user", "GET"
	case is("apps", "*", "users", "*", "replay"):
		route, allow = "admin_replay", "POST"
	case is("apps", "*", "channels", "*", "messages"):
		route, allow = "admin_messages", "GET"
	case is("gateways"):
		route, allow = "admin_gateways", "GET"
	case is("gateways", "*", "drain"):
		route, allow = "admin_drain", "POST"
	case is("stream"):
		route, allow = "admin_stream", "GET"
	case is("stats"):
		route, allow = "admin_stats", "GET"
	default:
		writeError(ctx, fasthttp.StatusNotFound, "not_found", "no such endpoint: "+quote(path))
		return "other"
	}
	method := string(ctx.Method())
	if !strings.Contains(allow, method) {
		ds.methodNotAllowed(ctx, allow)
		return route
	}
	if !ds.authAdmin(ctx) {
		return route
	}
	var name string
	if len(parts) > 1 {
		name = parts[1]
		if !config.ValidName(name) {
			writeError(ctx, fasthttp.StatusBadRequest, "invalid_name", "names are 1-128 of A-Z a-z 0-9 _ -")
			return route
		}
	}
	if len(parts) > 3 && parts[0] == "apps" && !config.ValidName(parts[3]) && parts[2] == "users" {
		writeError(ctx, fasthttp.StatusBadRequest, "invalid_user", "invalid user name "+quote(parts[3])+": 1-128 of A-Z a-z 0-9 _ -")
		return route
	}
	rctx, cancel := context.WithTimeout(ds.ctx, 10*time.Second)
	defer cancel()
	switch {
	case route == "admin_apps" && method == "GET":
		apps := ds.d.Apps.List()
		out := struct {
			Apps []appView `json:"apps"`
		}{Apps: make([]appView, 0, len(apps))}
		for _, a := range apps {
			out.Apps = append(out.Apps, viewOf(a))
		}
		writeJSON(ctx, fasthttp.StatusOK, &out)
	case route == "admin_apps":
		ds.createApp(rctx, ctx)
	case route == "admin_app" && method == "GET":
		// From the bucket, not the watched copy: read your own writes.
		a, err := ds.d.Store.GetApp(rctx, name)
		v := viewOf(&a)
		ds.adminChanged(ctx, name, "", err, fasthttp.StatusOK, &v)
	case route == "admin_app" && method == "PATCH":
		ds.patchApp(rctx, ctx, name)
	case route == "admin_app":
		ds.adminChanged(ctx, name, "app deleted", ds.d.Store.DeleteApp(rctx, name), fasthttp.StatusNoContent, nil)
	case route == "admin_keys":
		ds.addKey(rctx, ctx, name)
	case route == "admin_key":
		ds.removeKey(rctx, ctx, name, parts[3])
	case route == "admin_secrets":
		ds.rotateSecret(rctx, ctx, name)
	case route == "admin_tokens":
		ds.mintToken(ctx, name)
	case route == "admin_user":
		ds.userReport(rctx, ctx, name, parts[3])
	case route == "admin_replay":
		ds.replay(rctx, ctx, name, parts[3])
	case route == "admin_messages":
		ds.channelMessages(rctx, ctx, name, parts[3])
	case route == "admin_gateways":
		gws, err := ds.d.Store.Gateways(rctx)
		ds.adminChanged(ctx, "", "", err, fasthttp.StatusOK, map[string]any{"gateways": gws})
	case route == "admin_drain":
		ds.drain(ctx, name)
	case route == "admin_stream":
		st, err := ds.d.Store.Stats(rctx)
		ds.adminChanged(ctx, "", "", err, fasthttp.StatusOK, &st)
	case route == "admin_stats":
		ds.stats(rctx, ctx)
	}
	return route
}

// authAdmin checks "Authorization: Bearer <admin key>".
func (ds *Dispatcher) authAdmin(ctx *fasthttp.RequestCtx) bool {
	if len(ds.admins) == 0 {
		writeError(ctx, fasthttp.StatusForbidden, "admin_disabled", "the admin API is off: set api.admin_keys")
		return false
	}
	key, ok := bearer(ctx)
	h := []byte(offline.HashKey(key))
	match := 0
	for _, a := range ds.admins {
		match |= subtle.ConstantTimeCompare([]byte(a), h)
	}
	if !ok || match != 1 {
		ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="herald-admin"`)
		writeError(ctx, fasthttp.StatusUnauthorized, "unauthorized", "missing or wrong admin key")
		return false
	}
	return true
}

// adminChanged answers an admin call: the error mapped to its status, or
// status with body v. A change (what not empty) is counted and logged.
func (ds *Dispatcher) adminChanged(ctx *fasthttp.RequestCtx, app, what string, err error, status int, v any) {
	var ae *adminError
	switch {
	case errors.As(err, &ae):
		writeError(ctx, ae.status, ae.code, ae.msg)
	case errors.Is(err, offline.ErrNoApp):
		writeError(ctx, fasthttp.StatusNotFound, "unknown_app", "no app named "+quote(app))
	case errors.Is(err, offline.ErrAppExists):
		writeError(ctx, fasthttp.StatusConflict, "app_exists", "an app named "+quote(app)+" exists")
	case err != nil:
		ds.storeFailed(ctx, "admin", err)
	default:
		if what != "" {
			ds.m.adminChanges.Inc()
			ds.log.Info("admin: "+what, "app", app)
		}
		if v == nil {
			ctx.SetStatusCode(status)
			return
		}
		writeJSON(ctx, status, v)
	}
}

// adminError is a refusal decided while applying a change.
type adminError struct {
	status    int
	code, msg string
}

func (e *adminError) Error() string { return e.msg }

func badAdmin(code, format string, args ...any) error {
	return &adminError{status: fasthttp.StatusBadRequest, code: code, msg: fmt.Sprintf(format, args...)}
}

func (ds *Dispatcher) createApp(rctx context.Context, ctx *fasthttp.RequestCtx) {
	var req createRequest
	if !decodeBody(ctx, &req, "an app") {
		return
	}
	if !config.ValidName(req.Name) {
		writeError(ctx, fasthttp.StatusBadRequest, "invalid_name", "name must be 1-128 of A-Z a-z 0-9 _ -")
		return
	}
	var resp createResponse
	if len(req.Keys) == 0 {
		resp.Key = "hk_" + randomToken(24)
		req.Keys = []string{resp.Key}
	}
	if len(req.Secrets) == 0 {
		resp.Secret = randomToken(32)
		req.Secrets = []string{resp.Secret}
	}
	if err := checkCredentials(req.Keys, req.Secrets); err != nil {
		ds.adminChanged(ctx, req.Name, "", err, 0, nil)
		return
	}
	if err := req.Limits.Check(""); err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, "invalid_limit", strings.TrimPrefix(err.Error(), "config: "))
		return
	}
	a := offline.App{Name: req.Name, Secrets: req.Secrets, Limits: req.Limits, Origins: req.Origins}
	for _, k := range req.Keys {
		a.KeyHashes = append(a.KeyHashes, offline.HashKey(k))
	}
	resp.App = viewOf(&a)
	ds.adminChanged(ctx, req.Name, "app created", ds.d.Store.CreateApp(rctx, a), fasthttp.StatusCreated, &resp)
}

func checkCredentials(keys, secrets []string) error {
	switch {
	case len(keys) > maxKeysPerApp:
		return badAdmin("too_many_keys", "at most %d publisher keys", maxKeysPerApp)
	case len(secrets) > maxSecretsPerApp:
		return badAdmin("too_many_secrets", "at most %d device secrets", maxSecretsPerApp)
	}
	for _, c := range append(keys[:len(keys):len(keys)], secrets...) {
		if len(c) < minCredentialLen || len(c) > 256 || strings.TrimSpace(c) != c {
			return badAdmin("weak_credential", "keys and secrets must be %d-256 characters without surrounding spaces", minCredentialLen)
		}
	}
	return nil
}

func (ds *Dispatcher) patchApp(rctx context.Context, ctx *fasthttp.RequestCtx, name string) {
	var req patchRequest
	if !decodeBody(ctx, &req, "an app change") {
		return
	}
	a, err := ds.d.Store.UpdateApp(rctx, name, func(a *offline.App) error {
		l := a.Limits
		set := func(dst *int, v *int) {
			if v != nil {
				*dst = *v
			}
		}
		if req.PublishRate != nil {
			l.PublishRate = *req.PublishRate
		}
		set(&l.PublishBurst, req.PublishBurst)
		set(&l.MaxPayload, req.MaxPayload)
		set(&l.MaxTopics, req.MaxTopics)
		set(&l.MaxDevices, req.MaxDevices)
		if err := l.Check(""); err != nil {
			return badAdmin("invalid_limit", "%s", strings.TrimPrefix(err.Error(), "config: "))
		}
		a.Limits = l
		if req.Origins != nil {
			a.Origins = *req.Origins
		}
		return nil
	})
	v := viewOf(&a)
	ds.adminChanged(ctx, name, "app limits changed", err, fasthttp.StatusOK, &v)
}

func (ds *Dispatcher) addKey(rctx context.Context, ctx *fasthttp.RequestCtx, name string) {
	var req keyRequest
	if len(ctx.PostBody()) > 0 && !decodeBody(ctx, &req, "a key") {
		return
	}
	var resp keyResponse
	if req.Key == "" {
		req.Key = "hk_" + randomToken(24)
		resp.Key = req.Key
	}
	hash := offline.HashKey(req.Key)
	resp.ID = offline.KeyID(hash)
	_, err := ds.d.Store.UpdateApp(rctx, name, func(a *offline.App) error {
		if len(a.KeyHashes) >= maxKeysPerApp {
			return badAdmin("too_many_keys", "at most %d publisher keys", maxKeysPerApp)
		}
		if err := checkCredentials([]string{req.Key}, nil); err != nil {
			return err
		}
		for _, h := range a.KeyHashes {
			if offline.KeyID(h) == resp.ID {
				return &adminError{status: fasthttp.StatusConflict, code: "key_exists", msg: "the app has this key already"}
			}
		}
		a.KeyHashes = append(a.KeyHashes, hash)
		return nil
	})
	ds.adminChanged(ctx, name, "publisher key added", err, fasthttp.StatusCreated, &resp)
}

func (ds *Dispatcher) removeKey(rctx context.Context, ctx *fasthttp.RequestCtx, name, id string) {
	_, err := ds.d.Store.UpdateApp(rctx, name, func(a *offline.App) error {
		i := -1
		for j, h := range a.KeyHashes {
			if offline.KeyID(h) == id {
				i = j
			}
		}
		switch {
		case i < 0:
			return &adminError{status: fasthttp.StatusNotFound, code: "unknown_key", msg: "the app has no key with id " + quote(id)}
		case len(a.KeyHashes) == 1:
			return &adminError{status: fasthttp.StatusConflict, code: "last_key", msg: "an app keeps at least one publisher key: add the new one first"}
		}
		a.KeyHashes = append(a.KeyHashes[:i], a.KeyHashes[i+1:]...)
		return nil
	})
	ds.adminChanged(ctx, name, "publisher key revoked", err, fasthttp.StatusNoContent, nil)
}

// rotateSecret makes a new device secret the one tokens are signed with;
// the current ones keep verifying tokens until the grace period ends, so
// devices are not disconnected and reconnect with old tokens meanwhile.
func (ds *Dispatcher) rotateSecret(rctx context.Context, ctx *fasthttp.RequestCtx, name string) {
	var req rotateRequest
	if len(ctx.PostBody()) > 0 && !decodeBody(ctx, &req, "a rotation") {
		return
	}
	grace := defaultGrace
	if req.Grace != "" {
		d, err := time.ParseDuration(req.Grace)
		if err != nil || d < 0 || d > maxGrace {
			writeError(ctx, fasthttp.StatusBadRequest, "invalid_grace", fmt.Sprintf("grace must be a duration such as \"24h\" within [0, %v]", maxGrace))
			return
		}
		grace = d
	}
	var resp rotateResponse
	if req.Secret == "" {
		req.Secret = randomToken(32)
		resp.Secret = req.Secret
	}
	if err := checkCredentials(nil, []string{req.Secret}); err != nil {
		ds.adminChanged(ctx, name, "", err, 0, nil)
		return
	}
	now := time.Now()
	resp.RetiringUntil = now.Add(grace).UTC()
	a, err := ds.d.Store.UpdateApp(rctx, name, func(a *offline.App) error {
		var keep []offline.RetiringSecret
		for _, r := range a.Retiring {
			if now.Before(r.Until) {
				keep = append(keep, r)
			}
		}
		for _, s := range a.Secrets {
			if s == req.Secret {
				return &adminError{status: fasthttp.StatusConflict, code: "secret_exists", msg: "this secret is the current one already"}
			}
			if grace > 0 {
				keep = append(keep, offline.RetiringSecret{Secret: s, Until: resp.RetiringUntil})
			}
		}
		if len(keep) >= maxSecretsPerApp {
			return &adminError{status: fasthttp.StatusConflict, code: "too_many_secrets", msg: "too many secrets in their grace period; wait for them to end"}
		}
		a.Secrets, a.Retiring = []string{req.Secret}, keep
		return nil
	})
	resp.App = viewOf(&a)
	ds.adminChanged(ctx, name, "device secret rotated", err, fasthttp.StatusCreated, &resp)
}

// decodeBody decodes a JSON request body strictly (unknown fields and
// trailing values are errors), answering 400 when it cannot.
func decodeBody(ctx *fasthttp.RequestCtx, v any, what string) bool {
	if err := decodeStrict(ctx.PostBody(), v); err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, "bad_json", "request body is not valid JSON for "+what+": "+err.Error())
		return false
	}
	return true
}

// decodeStrict decodes one JSON value into v; unknown fields and trailing
// values are errors, described without echoing the body.
func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errors.New(jsonProblem(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// randomToken is n random bytes, base64url without padding.
func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}
