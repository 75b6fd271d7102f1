// Command herald is the one herald binary: serve (everything in one process
// with an embedded NATS), and the device and publisher tools listen and push.
package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"herald/node"
)

const usage = `herald — real-time push over NATS JetStream

Usage:
  herald serve [--dev] [flags]     run NATS, dispatcher and gateway in one process
  herald nats --config FILE        run one NATS node of a cluster (a nats-server config file)
  herald gateway --nats URL        run a standalone device gateway
  herald dispatcher --nats URL     run a standalone HTTP API
  herald listen [flags]            connect as a device and print messages as JSON lines
  herald push [flags]              publish a message through the HTTP API
  herald bench <scenario> [flags]  load scenarios: connect, unicast, broadcast, storm
  herald ctl <command> [flags]     operate a running herald: gateways, user, messages, replay, drain, stream
  herald version

Run "herald <command> -h" for a command's flags.
`

var version = "dev"

func main() {
	node.Version = version
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "serve":
		err = serve(rest, stdout, stderr)
	case "nats":
		err = natsCmd(rest, stdout, stderr)
	case "gateway":
		err = gatewayCmd(rest, stdout, stderr)
	case "dispatcher":
		err = dispatcherCmd(rest, stdout, stderr)
	case "bench":
		err = benchCmd(rest, stdout, stderr)
	case "listen":
		err = listen(rest, stdout, stderr)
	case "push":
		err = push(rest, stdout, stderr)
	case "ctl":
		err = ctlCmd(rest, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "herald", version)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "herald: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	if err != nil {
		if err != errUsage {
			// Package errors already name their package ("bench: ..."):
			// say it once.
			fmt.Fprintf(stderr, "herald %s: %s\n", cmd, strings.TrimPrefix(err.Error(), cmd+": "))
		}
		return 1
	}
	return 0
}

// errUsage is returned after the flag package already printed the problem.
var errUsage = fmt.Errorf("usage")

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	switch strings.ToLower(level) {
	case "debug":
		l = slog.LevelDebug
	case "warn":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	default:
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}
