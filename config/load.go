package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// option is one setting reachable by flag and environment variable.
type option struct {
	key   string // the YAML key, used in errors
	flag  string // the flag name, without dashes
	usage string
	ptr   any // *string, *int, *int64, *float64, *bool or *time.Duration
}

func (o option) env() string {
	return "HERALD_" + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(o.flag))
}

func (o option) set(s string) error {
	var err error
	switch p := o.ptr.(type) {
	case *string:
		*p = s
	case *int:
		*p, err = strconv.Atoi(s)
	case *int64:
		*p, err = strconv.ParseInt(s, 10, 64)
	case *float64:
		*p, err = strconv.ParseFloat(s, 64)
	case *bool:
		*p, err = strconv.ParseBool(s)
	case *time.Duration:
		*p, err = time.ParseDuration(s)
	default:
		panic(fmt.Sprintf("config: option %s has unsupported type %T", o.key, o.ptr))
	}
	if err != nil {
		return &FieldError{Field: o.key, Err: fmt.Errorf("invalid value %q", s)}
	}
	return nil
}

// options lists the settings a role exposes as flags. Everything else is
// reachable through the config file.
func (c *Config) options(role string) []option {
	common := []option{
		{"log_level", "log-level", "log level: debug, info, warn or error", &c.LogLevel},
		{"gc_percent", "gc-percent", "Go GC target percent (0: runtime default; GOGC wins)", &c.GCPercent},
	}
	gw := []option{
		{"gateway.listen", "tcp", "device TCP address", &c.Gateway.Listen},
		{"gateway.ws_listen", "ws", "device WebSocket address (empty: off)", &c.Gateway.WSListen},
		{"gateway.reuse_port", "reuse-port", "share the device port with other gateway processes (SO_REUSEPORT)", &c.Gateway.ReusePort},
		{"gateway.max_frame", "max-frame", "largest frame body accepted from a device", &c.Gateway.MaxFrame},
		{"gateway.connect_timeout", "connect-timeout", "time allowed for CONNECT after accept", &c.Gateway.ConnectTimeout},
		{"gateway.notify_backlog", "notify-backlog", "messages replayed inline per channel; more: NOTIFY, the device SYNCs", &c.Gateway.NotifyBacklog},
		{"gateway.inline_limit", "inline-limit", "largest payload pushed inline; larger: NOTIFY, the device SYNCs", &c.Gateway.InlineLimit},
		{"gateway.max_frame_rate", "max-frame-rate", "frames per second a device may send (ACKs not counted)", &c.Gateway.MaxFrameRate},
		{"gateway.max_conns_per_ip", "max-conns-per-ip", "connections per source address (0: unlimited)", &c.Gateway.MaxConnsPerIP},
		{"gateway.tls.cert", "tls-cert", "PEM certificate for the device listeners (TLS, wss)", &c.Gateway.TLS.Cert},
		{"gateway.tls.key", "tls-key", "PEM private key for the device listeners", &c.Gateway.TLS.Key},
	}
	api := []option{
		{"api.listen", "http", "HTTP API address", &c.API.Listen},
		{"api.max_payload", "max-payload", "largest message payload in bytes", &c.API.MaxPayload},
		{"api.publish_rate", "publish-rate", "default publish rate of an app, messages/s (0: unlimited)", &c.API.PublishRate},
		{"api.tls.cert", "api-tls-cert", "PEM certificate for the HTTP API (HTTPS)", &c.API.TLS.Cert},
		{"api.tls.key", "api-tls-key", "PEM private key for the HTTP API", &c.API.TLS.Key},
	}
	store := []option{
		{"store.max_age", "max-age", "how long messages are kept", &c.Store.MaxAge},
		{"store.max_per_channel", "max-per-channel", "offline backlog kept per channel", &c.Store.MaxPerChannel},
	}
	switch role {
	case "serve":
		out := append(common,
			option{"data", "data", "JetStream store directory", &c.Data},
			option{"dev", "dev", "seed the demo app and listen on loopback only", &c.Dev},
			option{"nats.listen", "nats-listen", "embedded NATS client address", &c.NATS.Listen},
			option{"metrics_listen", "metrics", "extra address for /metrics and /debug/pprof (empty: off)", &c.MetricsListen},
		)
		out = append(out, api...)
		out = append(out, store...)
		return append(out, gw...)
	case "gateway":
		out := append(common,
			option{"nats.url", "nats", "NATS server URL(s), comma-separated", &c.NATS.URL},
			option{"metrics_listen", "metrics", "address of /metrics, /healthz and /readyz (empty: off)", &c.MetricsListen},
		)
		return append(out, gw...)
	case "dispatcher":
		out := append(common, option{"nats.url", "nats", "NATS server URL(s), comma-separated", &c.NATS.URL})
		out = append(out, api...)
		return append(out, store...)
	}
	return common
}

// ErrUsage wraps a command-line error the flag package already printed.
var ErrUsage = errors.New("usage")

// Load builds the configuration of role ("serve", "gateway", "dispatcher")
// from defaults, then the file named by --config (or HERALD_CONFIG), then
// HERALD_* variables, then flags. getenv is os.Getenv outside tests.
func Load(role string, args []string, getenv func(string) string, usage io.Writer) (*Config, error) {
	c := Default()
	if role == "gateway" || role == "dispatcher" {
		c.NATS.URL = "nats://127.0.0.1:4222"
	}
	if role == "gateway" {
		c.MetricsListen = "127.0.0.1:9091"
		c.GCPercent = 50
	}
	opts := c.options(role)

	fs := flag.NewFlagSet("herald "+role, flag.ContinueOnError)
	fs.SetOutput(usage)
	file := fs.String("config", getenv("HERALD_CONFIG"), "YAML config file (env HERALD_CONFIG)")
	given := map[string]string{}
	for _, o := range opts {
		o := o
		help := fmt.Sprintf("%s (env %s)", o.usage, o.env())
		if _, ok := o.ptr.(*bool); ok {
			fs.Var(boolFlag{given: given, name: o.flag}, o.flag, help)
			continue
		}
		help += fmt.Sprintf(" (default %v)", derefValue(o.ptr))
		fs.Func(o.flag, help, func(s string) error { given[o.flag] = s; return nil })
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %v", ErrUsage, err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("herald %s: unexpected argument %q", role, fs.Arg(0))
	}
	if *file != "" {
		if err := c.loadFile(*file); err != nil {
			return nil, err
		}
	}
	for _, o := range opts {
		if v := getenv(o.env()); v != "" {
			if err := o.set(v); err != nil {
				return nil, fmt.Errorf("%w (from %s)", err, o.env())
			}
		}
	}
	for _, o := range opts {
		if v, ok := given[o.flag]; ok {
			if err := o.set(v); err != nil {
				return nil, fmt.Errorf("%w (from --%s)", err, o.flag)
			}
		}
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// loadFile reads a YAML file over c; unknown keys are errors.
func (c *Config) loadFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: cannot read %s: %w", path, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config: %s: %w", path, err)
	}
	return nil
}

func derefValue(p any) any {
	switch p := p.(type) {
	case *string:
		return *p
	case *int:
		return *p
	case *int64:
		return *p
	case *float64:
		return *p
	case *bool:
		return *p
	case *time.Duration:
		return *p
	}
	return nil
}

// boolFlag records a boolean flag given as --x or --x=false.
type boolFlag struct {
	given map[string]string
	name  string
}

func (b boolFlag) String() string     { return "" }
func (b boolFlag) IsBoolFlag() bool   { return true }
func (b boolFlag) Set(s string) error { b.given[b.name] = s; return nil }
