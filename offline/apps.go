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
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// App is an app as stored in the apps bucket. Publisher keys are kept only
// as SHA-256 hashes; device secrets are kept as given (HS256 needs them).
type App struct {
	Name       string   `json:"name"`
	KeyHashes  []string `json:"key_hashes"`
	Secrets    []string `json:"secrets"`
	MaxPayload int      `json:"max_payload,omitempty"`
	// ServerTopics is set once the API subscribed any user of the app to
	// a topic: only then do gateways read a user's topics at CONNECT (a
	// KV read per connection that apps without server-side topics skip).
	ServerTopics bool `json:"server_topics,omitempty"`
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

// SecretBytes returns the device secrets as byte slices for token.Verify.
func (a *App) SecretBytes() [][]byte {
	out := make([][]byte, len(a.Secrets))
	for i, s := range a.Secrets {
		out[i] = []byte(s)
	}
	return out
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
	for attempt := 0; attempt < 5; attempt++ {
		e, err := s.apps.Get(ctx, name)
		if err != nil {
			return fmt.Errorf("%w: app %s: %v", ErrUnavailable, name, err)
		}
		var a App
		if err := json.Unmarshal(e.Value(), &a); err != nil {
			return fmt.Errorf("offline: app %s: %v", name, err)
		}
		if a.ServerTopics {
			return nil
		}
		a.ServerTopics = true
		b, _ := json.Marshal(a)
		if _, err := s.apps.Update(ctx, name, b, e.Revision()); err == nil {
			return nil
		} else if !isWrongSequence(err) && !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("%w: app %s: %v", ErrUnavailable, name, err)
		}
	}
	return fmt.Errorf("%w: app %s changed concurrently too often", ErrUnavailable, name)
}
