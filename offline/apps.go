package offline

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"herald/config"
)

// App is an app as stored in the apps bucket. Publisher keys are kept only
// as SHA-256 hashes; device secrets are kept as given (HS256 needs them).
type App struct {
	Name      string   `json:"name"`
	KeyHashes []string `json:"key_hashes"`
	// Secrets are the device-token secrets tokens are signed with now.
	Secrets []string `json:"secrets"`
	// Retiring are secrets replaced by a rotation, still accepted until
	// their time: devices with old tokens keep connecting meanwhile.
	Retiring []RetiringSecret `json:"retiring,omitempty"`
	config.Limits
	// Origins, when not empty, are the Origin values a WebSocket device
	// of the app must come from ("*" allows any).
	Origins []string `json:"origins,omitempty"`
	// ServerTopics is set once the API subscribed any user of the app to
	// a topic: only then do gateways read a user's topics at CONNECT (a
	// KV read per connection that apps without server-side topics skip).
	ServerTopics bool `json:"server_topics,omitempty"`
}

// RetiringSecret is a rotated-out device secret and when it stops working.
type RetiringSecret struct {
	Secret string    `json:"secret"`
	Until  time.Time `json:"until"`
}

// KeyID names a publisher key without revealing it: the first 12 hex
// digits of its hash.
func KeyID(hash string) string {
	if len(hash) < 12 {
		return hash
	}
	return hash[:12]
}

// OriginAllowed reports whether a WebSocket device of the app may come
// from origin (always, when the app lists none).
func (a *App) OriginAllowed(origin string) bool {
	if len(a.Origins) == 0 {
		return true
	}
	for _, o := range a.Origins {
		if o == "*" || strings.EqualFold(o, origin) {
			return true
		}
	}
	return false
}

// HashKey is the stored form of a publisher key.
func HashKey(key string) string {
	h := sha256.Sum256([]byte(key))
	return hex.EncodeToString(h[:])
}

// CheckKey reports whether key is one of the app's publisher keys.
func (a *App) CheckKey(key string) bool {
	h := HashKey(key)
	ok := 0
	for _, k := range a.KeyHashes {
		ok |= subtle.ConstantTimeCompare([]byte(k), []byte(h))
	}
	return ok == 1
}

// SecretBytes returns the device secrets accepted at now, as byte slices
// for token.Verify: the current ones, then those still in their grace period.
func (a *App) SecretBytes(now time.Time) [][]byte {
	out := make([][]byte, 0, len(a.Secrets)+len(a.Retiring))
	for _, s := range a.Secrets {
		out = append(out, []byte(s))
	}
	for _, r := range a.Retiring {
		if now.Before(r.Until) {
			out = append(out, []byte(r.Secret))
		}
	}
	return out
}

// ErrAppExists is returned by CreateApp for a name already taken.
var ErrAppExists = errors.New("offline: app exists")

// ErrNoApp is returned for an app the bucket does not hold.
var ErrNoApp = errors.New("offline: no such app")

// CreateApp writes a new app; ErrAppExists if the name is taken.
func (s *Store) CreateApp(ctx context.Context, a App) error {
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	if _, err := s.apps.Create(ctx, a.Name, b); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return ErrAppExists
		}
		return fmt.Errorf("%w: create app %s: %v", ErrUnavailable, a.Name, err)
	}
	return nil
}

// UpdateApp applies fn to the stored app and writes it back if the record
// did not change meanwhile (compare-and-set, retried), so concurrent admin
// changes and the ServerTopics flag never overwrite each other. fn returning
// errSkip leaves the record as it is.
func (s *Store) UpdateApp(ctx context.Context, name string, fn func(*App) error) (App, error) {
	for attempt := 0; attempt < 8; attempt++ {
		e, err := s.apps.Get(ctx, name)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return App{}, ErrNoApp
		}
		if err != nil {
			return App{}, fmt.Errorf("%w: app %s: %v", ErrUnavailable, name, err)
		}
		a, err := decodeApp(name, e.Value())
		if err != nil {
			return App{}, err
		}
		if err := fn(&a); errors.Is(err, errSkip) {
			return a, nil
		} else if err != nil {
			return a, err
		}
		b, _ := json.Marshal(a)
		if _, err := s.apps.Update(ctx, name, b, e.Revision()); err == nil {
			return a, nil
		} else if !isWrongSequence(err) && !errors.Is(err, jetstream.ErrKeyExists) {
			return App{}, fmt.Errorf("%w: app %s: %v", ErrUnavailable, name, err)
		}
	}
	return App{}, fmt.Errorf("%w: app %s changed concurrently too often", ErrUnavailable, name)
}

var errSkip = errors.New("skip")

// GetApp reads an app from the bucket (the admin API reads its own writes
// this way; the hot paths use the watched copy, Apps).
func (s *Store) GetApp(ctx context.Context, name string) (App, error) {
	e, err := s.apps.Get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return App{}, ErrNoApp
	}
	if err != nil {
		return App{}, fmt.Errorf("%w: app %s: %v", ErrUnavailable, name, err)
	}
	return decodeApp(name, e.Value())
}

func decodeApp(name string, b []byte) (App, error) {
	var a App
	if err := json.Unmarshal(b, &a); err != nil {
		return App{}, fmt.Errorf("offline: app %s: %v", name, err)
	}
	return a, nil
}

// DeleteApp removes an app: its keys and tokens stop working at once on
// every node (the watch). Its stored messages age out with store.max_age.
func (s *Store) DeleteApp(ctx context.Context, name string) error {
	if _, err := s.apps.Get(ctx, name); errors.Is(err, jetstream.ErrKeyNotFound) {
		return ErrNoApp
	}
	if err := s.apps.Delete(ctx, name); err != nil {
		return fmt.Errorf("%w: delete app %s: %v", ErrUnavailable, name, err)
	}
	return nil
}

// SeedApp writes a from configuration unless the bucket already holds an
// app of that name (then the admin API owns it: a restart must not undo a
// key rotation). It reports whether it wrote.
func (s *Store) SeedApp(ctx context.Context, a App) (bool, error) {
	err := s.CreateApp(ctx, a)
	if errors.Is(err, ErrAppExists) {
		return false, nil
	}
	return err == nil, err
}

// PutApp writes an app to the apps bucket, keeping what the running system
// learnt about it (ServerTopics).
func (s *Store) PutApp(ctx context.Context, a App) error {
	if e, err := s.apps.Get(ctx, a.Name); err == nil {
		var old App
		if json.Unmarshal(e.Value(), &old) == nil {
			a.ServerTopics = a.ServerTopics || old.ServerTopics
		}
	}
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	if _, err := s.apps.Put(ctx, a.Name, b); err != nil {
		return fmt.Errorf("%w: put app %s: %v", ErrUnavailable, a.Name, err)
	}
	return nil
}

// Apps is a live, read-mostly copy of the apps bucket, kept current by a
// KV watch. Gateways and dispatchers look apps up here, never in KV per request.
type Apps struct {
	mu   sync.RWMutex
	apps map[string]*App
	stop func()
	done chan struct{}
}

// WatchApps loads every app and keeps the copy current until Stop. ctx
// bounds only the initial load: the watch itself must outlive it (nats.go
// unsubscribes a watch when its context ends).
func (s *Store) WatchApps(ctx context.Context, log *slog.Logger) (*Apps, error) {
	w, err := s.apps.WatchAll(context.WithoutCancel(ctx))
	if err != nil {
		return nil, fmt.Errorf("%w: watch apps: %v", ErrUnavailable, err)
	}
	a := &Apps{apps: map[string]*App{}, stop: func() { _ = w.Stop() }, done: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		defer close(a.done)
		initial := true
		for e := range w.Updates() {
			if e == nil { // end of the initial values
				if initial {
					initial = false
					close(ready)
				}
				continue
			}
			a.apply(e, log)
		}
		if initial {
			close(ready)
		}
	}()
	select {
	case <-ready:
		return a, nil
	case <-ctx.Done():
		a.Stop()
		return nil, errors.New("offline: apps bucket did not load in time")
	}
}

func (a *Apps) apply(e jetstream.KeyValueEntry, log *slog.Logger) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		delete(a.apps, e.Key())
		return
	}
	var app App
	if err := json.Unmarshal(e.Value(), &app); err != nil {
		log.Error("apps bucket holds an invalid app; ignored", "app", e.Key(), "err", err)
		return
	}
	a.apps[e.Key()] = &app
}

// Get returns the app named name. The returned App must not be modified.
func (a *Apps) Get(name string) (*App, bool) {
	a.mu.RLock()
	app, ok := a.apps[name]
	a.mu.RUnlock()
	return app, ok
}

// Stop ends the watch.
func (a *Apps) Stop() {
	a.stop()
	<-a.done
}

// MarkServerTopics sets the app's ServerTopics flag (compare-and-set on the
// record, so a concurrent change of keys is not overwritten).
func (s *Store) MarkServerTopics(ctx context.Context, name string) error {
	_, err := s.UpdateApp(ctx, name, func(a *App) error {
		if a.ServerTopics {
			return errSkip
		}
		a.ServerTopics = true
		return nil
	})
	return err
}

// List returns every app, sorted by name.
func (a *Apps) List() []*App {
	a.mu.RLock()
	out := make([]*App, 0, len(a.apps))
	for _, app := range a.apps {
		out = append(out, app)
	}
	a.mu.RUnlock()
	slices.SortFunc(out, func(x, y *App) int { return strings.Compare(x.Name, y.Name) })
	return out
}
