package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"herald/bench"
	"herald/config"
)

const benchUsage = `Usage: herald bench <scenario> [flags]

Scenarios:
  connect            open many idle authenticated devices; report connects/s and gateway memory
  unicast            devices on the gateways, publishers POSTing to random users; throughput and latency
  broadcast          devices all receiving the app's broadcasts (or one topic); deliveries/s and fan-out latency
  storm              devices all cut at once (or a gateway killed), messages published while away; time to catch up, loss check
  interest           what each NATS node of a cluster pays per online user's subscription (make cluster)
  baseline-gateway   a goroutine-per-connection gateway, to measure against (same bench)

Every scenario targets loopback addresses only and stops by itself. The
load scenarios (connect, unicast, broadcast, storm) print a table and take
--json FILE (the report) and --plot FILE (an SVG chart over time); interest
takes --json. herald bench <scenario> -h lists a scenario's flags.
`

func benchCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, benchUsage)
		return errUsage
	}
	switch args[0] {
	case "connect":
		return benchConnect(args[1:], stdout, stderr)
	case "connect-worker":
		return benchConnectWorker(args[1:], stdout, stderr)
	case "baseline-gateway":
		return benchBaseline(args[1:], stdout, stderr)
	case "unicast":
		return benchUnicast(args[1:], stdout, stderr)
	case "storm":
		return benchStorm(args[1:], stdout, stderr)
	case "broadcast":
		return benchBroadcast(args[1:], stdout, stderr)
	case "interest":
		return benchInterest(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, benchUsage)
		return nil
	default:
		fmt.Fprintf(stderr, "herald bench: unknown scenario %q\n\n%s", args[0], benchUsage)
		return errUsage
	}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// parseFlags parses args; stop says the command should return err now
// (nil after -h, which printed the help; errUsage after a bad flag, which
// the flag package printed).
func parseFlags(fs *flag.FlagSet, args []string) (stop bool, err error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return true, nil
		}
		return true, errUsage
	}
	return false, nil
}

func benchConnect(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herald bench connect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	conns := fs.Int("conns", 1000, "devices to open")
	gateways := fs.String("gateways", "127.0.0.1:7070", "gateway device addresses (host:port or ws:// URLs), comma-separated")
	sources := fs.String("sources", "127.0.0.2-127.0.0.9", "loopback source addresses: a range or a list")
	procs := fs.Int("procs", 2, "client processes")
	hold := fs.Duration("hold", 30*time.Second, "how long to hold the devices before measuring")
	metrics := fs.String("metrics", "http://127.0.0.1:8080/metrics", "each gateway's /metrics URL, comma-separated")
	app := fs.String("app", "demo", "app")
	secret := fs.String("secret", "demo-secret", "the app's device secret")
	rate := fs.Int("rate", 0, "connects per second over all processes (0: as fast as possible)")
	ramp := fs.Duration("ramp-timeout", 5*time.Minute, "give up ramping after this long")
	users := fs.String("users", "bench", "user name prefix")
	jsonOut := fs.String("json", "", "also write the report as JSON to this file")
	plot := fs.String("plot", "", "write an SVG chart of the ramp (devices connected, connects/s) to this file")
	if stop, err := parseFlags(fs, args); stop {
		return err
	}
	src, err := bench.ParseSources(*sources)
	if err != nil {
		return err
	}
	res, err := bench.RunConnect(bench.ConnectConfig{
		Conns: *conns, Gateways: splitList(*gateways), Sources: src, Procs: *procs, Hold: *hold,
		Metrics: splitList(*metrics), App: *app, Secret: *secret, Rate: *rate, RampTimeout: *ramp,
		Progress: stderr, Users: *users,
	})
	if err != nil {
		return err
	}
	res.Table(stdout)
	if *plot != "" {
		if err := res.Plot(*plot); err != nil {
			return err
		}
	}
	if *jsonOut != "" {
		return bench.WriteJSON(*jsonOut, res)
	}
	return nil
}

func benchConnectWorker(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herald bench connect-worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	conns := fs.Int("conns", 0, "")
	gateways := fs.String("gateways", "", "")
	sources := fs.String("sources", "", "")
	app := fs.String("app", "", "")
	secret := fs.String("secret", "", "")
	users := fs.String("users", "", "")
	rate := fs.Int("rate", 0, "")
	maxTime := fs.Duration("max-time", 10*time.Minute, "")
	if stop, err := parseFlags(fs, args); stop {
		return err
	}
	return bench.RunConnectWorker(bench.WorkerConfig{
		Conns: *conns, Gateways: splitList(*gateways), Sources: splitList(*sources), App: *app, Secret: *secret,
		Users: *users, Rate: *rate, MaxTime: *maxTime, Out: stdout, In: os.Stdin,
	})
}

func benchBaseline(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herald bench baseline-gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("tcp", "127.0.0.1:7090", "device TCP address")
	metricsAddr := fs.String("metrics", "127.0.0.1:9190", "/metrics address")
	natsURL := fs.String("nats", "nats://127.0.0.1:4222", "NATS URL")
	app := fs.String("app", "demo", "app")
	secret := fs.String("secret", "demo-secret", "the app's device secret")
	maxTime := fs.Duration("max-time", 30*time.Minute, "stop by itself after this long")
	if stop, err := parseFlags(fs, args); stop {
		return err
	}
	return bench.RunBaseline(bench.BaselineConfig{Listen: *listen, MetricsListen: *metricsAddr, NATS: *natsURL, App: *app, Secret: *secret, MaxTime: *maxTime,
		Ready: func(d, m net.Addr) {
			fmt.Fprintf(stdout, "baseline gateway: devices tcp://%s, metrics http://%s/metrics\n", d, m)
		}})
}

// loadFlags are the flags the publishing scenarios share.
type loadFlags struct {
	gateways, sources, api, key, app, secret, users, jsonOut, cpuProfile *string
	ackDelay                                                             *time.Duration
}

// start parses --sources and starts the bench process's CPU profile when
// --cpuprofile is given; stop writes the profile out.
func (lf loadFlags) start() (src []string, stop func(), err error) {
	if src, err = bench.ParseSources(*lf.sources); err != nil {
		return nil, nil, err
	}
	if *lf.cpuProfile == "" {
		return src, func() {}, nil
	}
	f, err := os.Create(*lf.cpuProfile)
	if err != nil {
		return nil, nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, nil, err
	}
	return src, func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// chart is a scenario's chart over time for --plot: write draws it.
type chart struct {
	path  string
	write func(path string) error
}

// latencyChart is unicast's and broadcast's: latency and deliveries per second.
func latencyChart(path, title string, tl []bench.Second) chart {
	return chart{path, func(p string) error { return bench.WritePlot(p, title, tl) }}
}

// finish prints the report, writes the chart (if asked) and the JSON report
// (--json), and returns verdict: a scenario that lost or repeated messages
// ends the command with an error.
func (lf loadFlags) finish(stdout io.Writer, res interface{ Table(io.Writer) }, c chart, verdict error) error {
	res.Table(stdout)
	if c.path != "" {
		if err := c.write(c.path); err != nil {
			return err
		}
	}
	if *lf.jsonOut != "" {
		if err := bench.WriteJSON(*lf.jsonOut, res); err != nil {
			return err
		}
	}
	return verdict
}

func addLoadFlags(fs *flag.FlagSet, users string) loadFlags {
	return loadFlags{
		gateways:   fs.String("gateways", "127.0.0.1:7070", "gateway device addresses, comma-separated"),
		sources:    fs.String("sources", "127.0.0.2-127.0.0.9", "loopback source addresses"),
		api:        fs.String("api", "http://127.0.0.1:8080", "HTTP API"),
		key:        fs.String("key", "demo-key", "publisher key"),
		app:        fs.String("app", "demo", "app"),
		secret:     fs.String("secret", "demo-secret", "the app's device secret"),
		users:      fs.String("users", users, "user name prefix"),
		jsonOut:    fs.String("json", "", "also write the report as JSON to this file"),
		cpuProfile: fs.String("cpuprofile", "", "write the bench process's CPU profile to this file (where the load generator's time goes)"),
		ackDelay:   fs.Duration("ack-delay", 0, "devices hold their cumulative ACK this long (client.Config.AckDelay; 0: ACK after every read burst)"),
	}
}

func benchUnicast(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herald bench unicast", flag.ContinueOnError)
	fs.SetOutput(stderr)
	devices := fs.Int("devices", 1000, "devices (one user each)")
	lf := addLoadFlags(fs, "uni")
	publishers := fs.Int("publishers", 32, "concurrent publishing requests")
	rate := fs.Int("rate", 0, "messages per second in all (0: as fast as possible)")
	inFlight := fs.Int("in-flight", 8, "with --rate: requests each publisher may have unanswered at once; each goes out when due unless this many are (1 to 256; 1: wait for each answer)")
	duration := fs.Duration("duration", 20*time.Second, "how long to publish")
	perRequest := fs.Int("per-request", 1, "users per publish request")
	payload := fs.Int("payload", 100, "payload padding bytes after the timestamp")
	plot := fs.String("plot", "", "write an SVG latency-over-time chart to this file")
	adminKey := fs.String("admin-key", config.DevAdminKey, "admin key to confirm afterwards that every device's server cursor reached its last message (\"\": skip)")
	metrics := fs.String("metrics", "http://127.0.0.1:8080/metrics", "each gateway's /metrics URL, comma-separated, for the gateways' own latency (stored -> queued for the device; \"\": skip)")
	if stop, err := parseFlags(fs, args); stop {
		return err
	}
	// On the command line 0 is a mistake like any other number out of range.
	if err := bench.CheckInFlight(*inFlight); err != nil {
		return err
	}
	src, stopProfile, err := lf.start()
	if err != nil {
		return err
	}
	defer stopProfile()
	res, err := bench.RunUnicast(bench.UnicastConfig{API: *lf.api, Key: *lf.key, App: *lf.app, Secret: *lf.secret, Gateways: splitList(*lf.gateways),
		Sources: src, Devices: *devices, Publishers: *publishers, Rate: *rate, InFlight: *inFlight, Duration: *duration, PerRequest: *perRequest,
		Payload: *payload, Users: *lf.users, Progress: stderr, AckDelay: *lf.ackDelay, AdminKey: *adminKey, Metrics: splitList(*metrics)})
	if err != nil {
		return err
	}
	var verdict error
	switch {
	case res.Lost > 0 || res.Duplicates > 0:
		verdict = fmt.Errorf("unicast: %d lost, %d shown twice or out of order", res.Lost, res.Duplicates)
	case res.AckChecked && res.AckedDevices < res.Devices:
		verdict = fmt.Errorf("unicast: %d of %d devices' acknowledgements not confirmed", res.Devices-res.AckedDevices, res.Devices)
	}
	return lf.finish(stdout, res, latencyChart(*plot, fmt.Sprintf("herald unicast: %d devices, %.0f delivered/s, p99 %.1f ms", res.Devices, res.DeliveredPerSec, res.Latency.P99), res.Timeline), verdict)
}

func benchStorm(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herald bench storm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	devices := fs.Int("devices", 1000, "devices (one user each)")
	missed := fs.Int("missed", 10, "messages per device published while they are away")
	during := fs.Int("during", 0, "messages per device published while they come back (live messages meeting catch-ups)")
	duringEvery := fs.Duration("during-every", 100*time.Millisecond, "between the --during rounds (one message per device each)")
	payload := fs.Int("payload", 20, "payload padding bytes after the timestamp (backlogs past half of the gateway's max_out_bytes test its hand-back)")
	lf := addLoadFlags(fs, "storm")
	publishers := fs.Int("publishers", 16, "concurrent publishing requests")
	perRequest := fs.Int("per-request", 100, "users per publish request")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up waiting for recovery after this long")
	plot := fs.String("plot", "", "write an SVG chart of the recovery (devices reconnected and caught up, messages/s) to this file")
	killPID := fs.Int("kill-pid", 0, "instead of cutting every connection, kill this gateway process (one you started; SIGKILL): its devices reconnect to the other --gateways")
	killAddr := fs.String("kill-addr", "", "with --kill-pid: that gateway's device address, as given in --gateways")
	if stop, err := parseFlags(fs, args); stop {
		return err
	}
	src, stopProfile, err := lf.start()
	if err != nil {
		return err
	}
	defer stopProfile()
	res, err := bench.RunStorm(bench.StormConfig{API: *lf.api, Key: *lf.key, App: *lf.app, Secret: *lf.secret, Gateways: splitList(*lf.gateways),
		Sources: src, Devices: *devices, Missed: *missed, During: *during, DuringEvery: *duringEvery, Payload: *payload, PerRequest: *perRequest, Publishers: *publishers, Timeout: *timeout,
		Users: *lf.users, Progress: stderr, AckDelay: *lf.ackDelay, KillPID: *killPID, KillAddr: *killAddr})
	if err != nil {
		return err
	}
	var verdict error
	if res.Lost > 0 || res.Duplicates > 0 || res.CaughtUpSeconds == 0 {
		verdict = fmt.Errorf("storm: %d lost, %d shown twice or out of order", res.Lost, res.Duplicates)
	}
	return lf.finish(stdout, res, chart{*plot, res.Plot}, verdict)
}

func benchBroadcast(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herald bench broadcast", flag.ContinueOnError)
	fs.SetOutput(stderr)
	devices := fs.Int("devices", 1000, "devices (one user each), all receiving")
	messages := fs.Int("messages", 100, "messages to broadcast")
	lf := addLoadFlags(fs, "bc")
	publishers := fs.Int("publishers", 4, "concurrent publishing requests")
	rate := fs.Int("rate", 0, "messages per second (0: as fast as possible)")
	payload := fs.Int("payload", 100, "payload padding bytes after the timestamp")
	topic := fs.String("topic", "", "send to this topic (every device subscribes) instead of the broadcast channel")
	timeout := fs.Duration("timeout", 2*time.Minute, "stop publishing and waiting after this long")
	plot := fs.String("plot", "", "write an SVG fan-out-latency-over-time chart to this file")
	if stop, err := parseFlags(fs, args); stop {
		return err
	}
	src, stopProfile, err := lf.start()
	if err != nil {
		return err
	}
	defer stopProfile()
	res, err := bench.RunBroadcast(bench.BroadcastConfig{API: *lf.api, Key: *lf.key, App: *lf.app, Secret: *lf.secret, Gateways: splitList(*lf.gateways),
		Sources: src, Devices: *devices, Messages: *messages, Publishers: *publishers, Rate: *rate, Payload: *payload, Topic: *topic,
		Users: *lf.users, Timeout: *timeout, Progress: stderr, AckDelay: *lf.ackDelay})
	if err != nil {
		return err
	}
	var verdict error
	if res.Lost > 0 || res.Duplicates > 0 {
		verdict = fmt.Errorf("broadcast: %d lost, %d shown twice or out of order", res.Lost, res.Duplicates)
	}
	return lf.finish(stdout, res, latencyChart(*plot, fmt.Sprintf("herald broadcast: %d devices, %.0f deliveries/s, p99 %.1f ms", res.Devices, res.DeliveriesPerSec, res.Latency.P99), res.Timeline), verdict)
}

func benchInterest(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herald bench interest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	natsURL := fs.String("nats", "nats://127.0.0.1:4222", "a NATS node's client URL (the subscriptions go there)")
	monitors := fs.String("monitors", "http://127.0.0.1:8222,http://127.0.0.1:8223,http://127.0.0.1:8224", "every node's monitoring URL (make cluster's by default)")
	subs := fs.Int("subs", 100000, "subscriptions, one per simulated online user")
	jsonOut := fs.String("json", "", "also write the result as JSON to this file")
	if stop, err := parseFlags(fs, args); stop {
		return err
	}
	res, err := bench.RunInterest(bench.InterestConfig{NATS: *natsURL, Monitors: splitList(*monitors), Subs: *subs, Timeout: time.Minute, Progress: stderr})
	if err != nil {
		return err
	}
	res.Table(stdout)
	if *jsonOut != "" {
		return bench.WriteJSON(*jsonOut, res)
	}
	return nil
}
