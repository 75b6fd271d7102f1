// Package config holds herald's configuration: one struct per component with
// documented defaults, and the loading of a YAML file, HERALD_* environment
// variables and command-line flags (in increasing precedence), with errors
// that name the bad field.
package config

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"time"

	"herald/wire"
)

// Config is the whole configuration of a herald process. Each role uses the
// parts it needs.
type Config struct {
	// Data is the directory of the embedded JetStream file store. Default "./data".
	Data string `yaml:"data"`
	// Dev seeds the demo app (key demo-key, device secret demo-secret) and
	// refuses every listen address that is not loopback.
	Dev bool `yaml:"dev"`
	// LogLevel is debug, info, warn or error. Default info.
	LogLevel string `yaml:"log_level"`

	// GCPercent, when > 0, sets the Go GC target (as GOGC does) unless GOGC
	// is set in the environment. The gateway role defaults to 50: a process
	// holding idle connections is memory-bound, and a lower target keeps
	// its RSS near its live heap at little CPU cost.
	GCPercent int `yaml:"gc_percent"`
	// MetricsListen is where a role without the HTTP API (a standalone
	// gateway) serves /metrics, /healthz and /readyz. Empty: none.
	MetricsListen string `yaml:"metrics_listen"`

	NATS    NATS    `yaml:"nats"`
	Store   Store   `yaml:"store"`
	API     API     `yaml:"api"`
	Gateway Gateway `yaml:"gateway"`
	// Apps are seeded into the apps bucket at start (in addition to demo with Dev).
	Apps []App `yaml:"apps"`
}

// NATS configures the embedded server (serve) or the server to reach (other roles).
type NATS struct {
	// Listen is the embedded server's client address. Default
	// "127.0.0.1:4222"; port 0 picks a free port.
	Listen string `yaml:"listen"`
	// URL is the NATS server list the gateway and dispatcher roles connect
	// to (comma-separated). Empty for serve, which uses its embedded server.
	URL string `yaml:"url"`
}

// Store configures the JetStream stream that holds every channel's messages.
type Store struct {
	// MaxAge is how long a message is kept at most. Default 7 days.
	MaxAge time.Duration `yaml:"max_age"`
	// MaxPerChannel is the offline backlog kept per channel; older messages
	// are dropped first. Default 10000.
	MaxPerChannel int64 `yaml:"max_per_channel"`
	// DuplicateWindow is how long an idempotency key is remembered. Default 2m.
	DuplicateWindow time.Duration `yaml:"duplicate_window"`
	// Replicas is the stream and KV replication factor. 0 (the default)
	// chooses: 3 when the NATS cluster has 3 or more servers, else 1.
	Replicas int `yaml:"replicas"`
}

// API configures the dispatcher's HTTP API.
type API struct {
	// Listen is the HTTP address. Default "127.0.0.1:8080".
	Listen string `yaml:"listen"`
	// MaxPayload is the default largest message payload in bytes (after
	// base64 decoding); an app may set its own. Default 4096.
	MaxPayload int `yaml:"max_payload"`
	// MaxBody is the largest HTTP request body. Default 1 MiB.
	MaxBody int `yaml:"max_body"`
	// ReadTimeout bounds reading a whole request (slow clients). Default 10s.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// PublishTimeout bounds waiting for the store's acknowledgements. Default 5s.
	PublishTimeout time.Duration `yaml:"publish_timeout"`
	// AdminKeys are the Bearer keys of the admin API (/v1/admin/apps).
	// Empty: the admin API is off (403). --dev adds DevAdminKey.
	AdminKeys []string `yaml:"admin_keys"`
	// PublishRate is the default publish rate of an app in messages per
	// second (token bucket, per dispatcher process); an app may set its
	// own. 0: unlimited. Default 0.
	PublishRate float64 `yaml:"publish_rate"`
	// TLS serves the HTTP API over HTTPS when a certificate is given.
	TLS TLS `yaml:"tls"`
	// Locator configures GET /v1/gateways, where devices ask which
	// gateways to probe.
	Locator Locator `yaml:"locator"`
}

// Locator configures the gateway locator.
type Locator struct {
	// Probe is how many candidates a device is given (and probes at once).
	// Default 3.
	Probe int `yaml:"probe"`
	// Canary sends a fixed share of devices — by a hash of app and device,
	// so a device stays on its side — to the gateways of a version (gray
	// release). The other devices go to gateways of no canary version.
	Canary []Canary `yaml:"canary"`
}

// Canary is one gray-release rule.
type Canary struct {
	Version string  `yaml:"version"`
	Share   float64 `yaml:"share"` // 0..1
}

// TLS names a PEM certificate (chain) and its private key. Both empty: plain TCP.
type TLS struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// Enabled reports whether a certificate is configured.
func (t TLS) Enabled() bool { return t.Cert != "" || t.Key != "" }

// Gateway configures the device gateway.
type Gateway struct {
	// Listen is the device TCP address. Default "127.0.0.1:7070".
	Listen string `yaml:"listen"`
	// WSListen is the WebSocket address (same frames in binary messages).
	// Default "127.0.0.1:7071"; empty disables WebSocket.
	WSListen string `yaml:"ws_listen"`
	// WSOrigins, when not empty, are the Origin values a WebSocket upgrade
	// must carry ("*" allows any); requests without Origin are refused then.
	WSOrigins []string `yaml:"ws_origins"`
	// ReusePort sets SO_REUSEPORT so several gateway processes share Listen.
	ReusePort bool `yaml:"reuse_port"`
	// ConnectTimeout is how long a new connection may take to send CONNECT. Default 10s.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// HeartbeatMin, HeartbeatMax and Heartbeat bound the device's PING
	// interval and give its starting value. Defaults 5s, 10m, 30s.
	HeartbeatMin time.Duration `yaml:"heartbeat_min"`
	HeartbeatMax time.Duration `yaml:"heartbeat_max"`
	Heartbeat    time.Duration `yaml:"heartbeat"`
	// MaxFrame is the largest frame body accepted from a device. Default 64 KiB.
	MaxFrame int `yaml:"max_frame"`
	// MaxOutBytes bounds a connection's pending output; a device over it
	// is closed as a slow consumer. Default 256 KiB.
	MaxOutBytes int `yaml:"max_out_bytes"`
	// Workers is the size of the pool that serves socket readiness.
	// Default 4 × GOMAXPROCS.
	Workers int `yaml:"workers"`
	// CatchupWorkers bounds concurrent reads from the store. Default 16.
	CatchupWorkers int `yaml:"catchup_workers"`
	// CursorFlush is how often acknowledged cursors are written to the KV
	// bucket (coalesced). Default 1s.
	CursorFlush time.Duration `yaml:"cursor_flush"`
	// NotifyBacklog is how many stored messages a gateway replays inline on
	// one channel when a device catches up; with more waiting it sends
	// NOTIFY and the device pulls pages with SYNC. Default 1000.
	NotifyBacklog int `yaml:"notify_backlog"`
	// InlineLimit is the largest payload sent inline in a PUSH without the
	// device asking; a larger message is announced with NOTIFY and pulled
	// with SYNC. Default 16 KiB.
	InlineLimit int `yaml:"inline_limit"`
	// UserTimeout is TCP_USER_TIMEOUT: how long sent data may stay
	// unacknowledged by the peer's kernel before the socket is dropped. Default 30s.
	UserTimeout time.Duration `yaml:"user_timeout"`
	// MaxFrameRate is how many frames a device may send per second (ACKs
	// are not counted: they are cumulative and cost nothing when stale);
	// above it the device gets ERROR rate_limited and is closed. Default 100.
	MaxFrameRate int `yaml:"max_frame_rate"`
	// MaxConnsPerIP bounds the connections (authenticated or not) from
	// one source address; over it a new connection is refused at once.
	// 0: unlimited (mobile carriers put many devices behind one address).
	// Default 0.
	MaxConnsPerIP int `yaml:"max_conns_per_ip"`
	// TLS serves the device TCP and WebSocket (wss) listeners over TLS
	// when a certificate is given.
	TLS TLS `yaml:"tls"`
	// ID names the gateway in the registry and to `herald ctl`. Default:
	// the host name and a random suffix.
	ID string `yaml:"id"`
	// Capacity is the number of connections that counts as full load
	// (the registry's load = connections / capacity). Default 100000.
	Capacity int `yaml:"capacity"`
	// Advertise is the device address the registry offers (host:port);
	// default the TCP listener's address.
	Advertise string `yaml:"advertise"`
	// DrainBatch and DrainInterval pace a drain: GOAWAY to DrainBatch
	// devices, then a pause of DrainInterval (with jitter). Defaults 500, 100ms.
	DrainBatch    int           `yaml:"drain_batch"`
	DrainInterval time.Duration `yaml:"drain_interval"`
	// DrainTimeout bounds a drain; devices left then are closed. Default 60s.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// ProbeThreshold is the load (connections / capacity) above which the
	// gateway delays its PROBE_REPLY, in proportion to the excess, up to
	// ProbeMaxDelay at full load. Defaults 0.8 and 1s.
	ProbeThreshold float64       `yaml:"probe_threshold"`
	ProbeMaxDelay  time.Duration `yaml:"probe_max_delay"`
}

// App is an app seeded from configuration: written to the apps bucket when
// the bucket does not hold it yet; afterwards the admin API owns it.
type App struct {
	Name string `yaml:"name"`
	// Keys are publisher keys (Bearer tokens for the HTTP API), kept hashed.
	Keys []string `yaml:"keys"`
	// Secrets are device-token HS256 secrets; several during a rotation.
	Secrets []string `yaml:"secrets"`
	// Limits of the app; 0 means the process default.
	Limits `yaml:",inline"`
	// Origins, when not empty, are the Origin values a WebSocket device of
	// this app must come from ("*" allows any).
	Origins []string `yaml:"origins"`
}

// Limits are an app's limits. Zero values mean: the process default
// (api.max_payload, api.publish_rate) or unlimited.
type Limits struct {
	// PublishRate is messages per second the app may publish (token
	// bucket per dispatcher process). 0: api.publish_rate.
	PublishRate float64 `yaml:"publish_rate" json:"publish_rate,omitempty"`
	// PublishBurst is the bucket's size. 0: one second of PublishRate.
	PublishBurst int `yaml:"publish_burst" json:"publish_burst,omitempty"`
	// MaxPayload overrides api.max_payload for this app when > 0.
	MaxPayload int `yaml:"max_payload" json:"max_payload,omitempty"`
	// MaxTopics bounds the topics one device may hold (SUB over it:
	// ERROR too_many_channels). 0: the connection's 254 topic slots.
	MaxTopics int `yaml:"max_topics" json:"max_topics,omitempty"`
	// MaxDevices bounds the devices of one user (a device counts once it
	// acknowledged a message of its user channel). 0: unlimited.
	MaxDevices int `yaml:"max_devices" json:"max_devices,omitempty"`
}

// Check returns the first invalid limit, naming its field under prefix.
func (l Limits) Check(prefix string) error {
	switch {
	case l.PublishRate < 0:
		return fieldErr(prefix+"publish_rate", "must be >= 0")
	case l.PublishBurst < 0:
		return fieldErr(prefix+"publish_burst", "must be >= 0")
	case l.MaxPayload < 0:
		return fieldErr(prefix+"max_payload", "must be >= 0")
	case l.MaxTopics < 0 || l.MaxTopics > MaxTopicSlots:
		return fieldErr(prefix+"max_topics", "must be within [0, %d]", MaxTopicSlots)
	case l.MaxDevices < 0:
		return fieldErr(prefix+"max_devices", "must be >= 0")
	}
	return nil
}

// MaxTopicSlots is how many topic channels one connection can hold in its
// life (256 slots, two taken by the user and broadcast channels).
const MaxTopicSlots = 254

// Demo app credentials seeded by Dev.
const (
	DemoApp    = "demo"
	DemoKey    = "demo-key"
	DemoSecret = "demo-secret"
	// DevAdminKey is the admin API key of --dev.
	DevAdminKey = "dev-admin-key"
)

// Default returns the configuration with every default filled in.
func Default() Config {
	return Config{
		Data:     "./data",
		LogLevel: "info",
		NATS:     NATS{Listen: "127.0.0.1:4222"},
		Store: Store{
			MaxAge:          7 * 24 * time.Hour,
			MaxPerChannel:   10000,
			DuplicateWindow: 2 * time.Minute,
		},
		API: API{
			Listen:         "127.0.0.1:8080",
			MaxPayload:     4096,
			MaxBody:        1 << 20,
			ReadTimeout:    10 * time.Second,
			PublishTimeout: 5 * time.Second,
			Locator:        Locator{Probe: 3},
		},
		Gateway: Gateway{
			Listen:         "127.0.0.1:7070",
			WSListen:       "127.0.0.1:7071",
			ConnectTimeout: 10 * time.Second,
			HeartbeatMin:   5 * time.Second,
			HeartbeatMax:   10 * time.Minute,
			Heartbeat:      30 * time.Second,
			MaxFrame:       64 << 10,
			MaxOutBytes:    256 << 10,
			Workers:        4 * runtime.GOMAXPROCS(0),
			CatchupWorkers: 16,
			CursorFlush:    time.Second,
			NotifyBacklog:  1000,
			InlineLimit:    16 << 10,
			UserTimeout:    30 * time.Second,
			MaxFrameRate:   100,
			Capacity:       100000,
			DrainBatch:     500,
			DrainInterval:  100 * time.Millisecond,
			DrainTimeout:   time.Minute,
			ProbeThreshold: 0.8,
			ProbeMaxDelay:  time.Second,
		},
	}
}

// FieldError is a configuration error that names its field.
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return fmt.Sprintf("config: %s: %v", e.Field, e.Err) }
func (e *FieldError) Unwrap() error { return e.Err }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Err: fmt.Errorf(format, args...)}
}

// ValidName reports whether s may be used as an app, user, device or topic
// name: 1–128 of A-Z a-z 0-9 _ -. Names become subject tokens and KV keys,
// so no '.', '*', '>' or whitespace. The device protocol defines it
// (wire.ValidName): the SDK checks the channel names a server sends.
func ValidName(s string) bool { return wire.ValidName(s) }

// MaxIDLen is the longest idempotency id (of a push or an UP).
const MaxIDLen = 128

// ValidID reports whether id may be used as an idempotency id: 1-128
// printable ASCII characters without spaces.
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > MaxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return false
		}
	}
	return true
}

// Validate checks every field the roles use and returns the first problem.
func (c *Config) Validate() error {
	var errs []error
	addr := func(field, v string, allowEmpty bool) {
		if v == "" {
			if !allowEmpty {
				errs = append(errs, fieldErr(field, "an address is required"))
			}
			return
		}
		host, _, err := net.SplitHostPort(v)
		if err != nil {
			errs = append(errs, fieldErr(field, "invalid address %q: want host:port", v))
			return
		}
		if c.Dev && !isLoopback(host) {
			errs = append(errs, fieldErr(field, "--dev listens on loopback only, not %q", v))
		}
	}
	addr("api.listen", c.API.Listen, false)
	addr("gateway.listen", c.Gateway.Listen, false)
	addr("gateway.ws_listen", c.Gateway.WSListen, true)
	addr("nats.listen", c.NATS.Listen, true)
	addr("metrics_listen", c.MetricsListen, true)
	positive := func(field string, v int64) {
		if v <= 0 {
			errs = append(errs, fieldErr(field, "must be > 0, got %d", v))
		}
	}
	positive("store.max_age", int64(c.Store.MaxAge))
	positive("store.max_per_channel", c.Store.MaxPerChannel)
	positive("store.duplicate_window", int64(c.Store.DuplicateWindow))
	if c.Store.Replicas < 0 || c.Store.Replicas > 5 {
		errs = append(errs, fieldErr("store.replicas", "must be within [0, 5] (0: automatic)"))
	}
	positive("api.max_payload", int64(c.API.MaxPayload))
	positive("api.max_body", int64(c.API.MaxBody))
	positive("api.read_timeout", int64(c.API.ReadTimeout))
	positive("api.publish_timeout", int64(c.API.PublishTimeout))
	positive("gateway.connect_timeout", int64(c.Gateway.ConnectTimeout))
	positive("gateway.heartbeat_min", int64(c.Gateway.HeartbeatMin))
	positive("gateway.max_frame", int64(c.Gateway.MaxFrame))
	positive("gateway.max_out_bytes", int64(c.Gateway.MaxOutBytes))
	positive("gateway.workers", int64(c.Gateway.Workers))
	positive("gateway.catchup_workers", int64(c.Gateway.CatchupWorkers))
	positive("gateway.cursor_flush", int64(c.Gateway.CursorFlush))
	positive("gateway.notify_backlog", int64(c.Gateway.NotifyBacklog))
	positive("gateway.inline_limit", int64(c.Gateway.InlineLimit))
	if c.Gateway.HeartbeatMax > 65535*time.Second {
		errs = append(errs, fieldErr("gateway.heartbeat_max", "must be at most 65535s (about 18h)"))
	}
	if c.Gateway.HeartbeatMax < c.Gateway.HeartbeatMin {
		errs = append(errs, fieldErr("gateway.heartbeat_max", "must be >= heartbeat_min (%v)", c.Gateway.HeartbeatMin))
	}
	if c.Gateway.Heartbeat < c.Gateway.HeartbeatMin || c.Gateway.Heartbeat > c.Gateway.HeartbeatMax {
		errs = append(errs, fieldErr("gateway.heartbeat", "must be within [heartbeat_min, heartbeat_max]"))
	}
	if c.API.MaxPayload > c.API.MaxBody {
		errs = append(errs, fieldErr("api.max_payload", "must not exceed api.max_body (%d)", c.API.MaxBody))
	}
	if c.Gateway.MaxFrameRate <= 0 || c.Gateway.MaxFrameRate > 65535 {
		errs = append(errs, fieldErr("gateway.max_frame_rate", "must be within [1, 65535]"))
	}
	if c.Gateway.ID != "" && !ValidName(c.Gateway.ID) {
		errs = append(errs, fieldErr("gateway.id", "invalid id %q: 1-128 of A-Z a-z 0-9 _ -", c.Gateway.ID))
	}
	if c.Gateway.Capacity <= 0 || c.Gateway.DrainBatch <= 0 || c.Gateway.DrainInterval <= 0 || c.Gateway.DrainTimeout <= 0 {
		errs = append(errs, fieldErr("gateway.capacity", "capacity, drain_batch, drain_interval and drain_timeout must be > 0"))
	}
	if c.Gateway.ProbeThreshold <= 0 || c.Gateway.ProbeThreshold >= 1 || c.Gateway.ProbeMaxDelay < 0 {
		errs = append(errs, fieldErr("gateway.probe_threshold", "must be within (0, 1), and probe_max_delay >= 0"))
	}
	if c.Gateway.MaxConnsPerIP < 0 {
		errs = append(errs, fieldErr("gateway.max_conns_per_ip", "must be >= 0"))
	}
	if c.API.Locator.Probe < 1 || c.API.Locator.Probe > 16 {
		errs = append(errs, fieldErr("api.locator.probe", "must be within [1, 16]"))
	}
	share := 0.0
	for i, r := range c.API.Locator.Canary {
		share += r.Share
		if r.Version == "" || r.Share <= 0 || share > 1 {
			errs = append(errs, fieldErr(fmt.Sprintf("api.locator.canary[%d]", i), "a version and a share in (0, 1] are required; shares add up to at most 1"))
		}
	}
	if c.API.PublishRate < 0 {
		errs = append(errs, fieldErr("api.publish_rate", "must be >= 0"))
	}
	for _, t := range []struct {
		field string
		tls   TLS
	}{{"api.tls", c.API.TLS}, {"gateway.tls", c.Gateway.TLS}} {
		if t.tls.Enabled() && (t.tls.Cert == "" || t.tls.Key == "") {
			errs = append(errs, fieldErr(t.field, "both cert and key are required"))
		}
	}
	for i, k := range c.API.AdminKeys {
		if len(k) < 8 {
			errs = append(errs, fieldErr(fmt.Sprintf("api.admin_keys[%d]", i), "an admin key must be at least 8 characters"))
		}
	}
	if c.Gateway.MaxFrame > 16<<20 {
		errs = append(errs, fieldErr("gateway.max_frame", "must be <= 16 MiB"))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fieldErr("log_level", "want debug, info, warn or error, got %q", c.LogLevel))
	}
	seen := map[string]bool{}
	for i, a := range c.Apps {
		f := fmt.Sprintf("apps[%d]", i)
		switch {
		case !ValidName(a.Name):
			errs = append(errs, fieldErr(f+".name", "invalid app name %q: 1-128 of A-Z a-z 0-9 _ -", a.Name))
		case seen[a.Name]:
			errs = append(errs, fieldErr(f+".name", "app %q listed twice", a.Name))
		case len(a.Keys) == 0:
			errs = append(errs, fieldErr(f+".keys", "at least one publisher key is required"))
		case len(a.Secrets) == 0:
			errs = append(errs, fieldErr(f+".secrets", "at least one device secret is required"))
		default:
			if err := a.Limits.Check(f + "."); err != nil {
				errs = append(errs, err)
			}
		}
		seen[a.Name] = true
	}
	return errors.Join(errs...)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
