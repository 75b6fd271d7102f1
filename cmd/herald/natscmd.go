package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	hnats "herald/nats"
)

// natsCmd runs one NATS node of a herald cluster from a nats-server
// configuration file, until SIGINT or SIGTERM.
func natsCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herald nats", flag.ContinueOnError)
	fs.SetOutput(stderr)
	conf := fs.String("config", os.Getenv("HERALD_NATS_CONFIG"), "nats-server configuration file (env HERALD_NATS_CONFIG): server_name, listen, jetstream { store_dir }, cluster { name, listen, routes }")
	level := fs.String("log-level", envOr("HERALD_LOG_LEVEL", "info"), "log level: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	if *conf == "" || fs.NArg() > 0 {
		return errors.New("usage: herald nats --config FILE")
	}
	log := newLogger(stderr, *level)
	srv, err := hnats.StartFromFile(*conf, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "herald nats is running: %s (server %s, cluster %q)\n", srv.ClientURL(), srv.Name(), srv.ClusterName())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	var stop error
	select {
	case s := <-sig:
		log.Info("stopping", "signal", s.String())
	case msg := <-srv.Fatal:
		stop = fmt.Errorf("nats-server cannot go on: %s", msg)
	}
	srv.Shutdown()
	srv.WaitForShutdown()
	return stop
}
