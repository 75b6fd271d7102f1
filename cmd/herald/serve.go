package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"herald/config"
	"herald/node"
)

func serve(args []string, stdout, stderr io.Writer) error {
	cfg, err := config.Load("serve", args, os.Getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if errors.Is(err, config.ErrUsage) {
		return errUsage
	}
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.LogLevel)
	if cfg.Dev {
		log.Warn("DEV MODE: app \"demo\" with publisher key \"demo-key\" and device secret \"demo-secret\" is open to anyone who can reach these loopback ports; do not use in production")
	}
	n, err := node.Start(*cfg, node.Roles{EmbeddedNATS: true, Dispatcher: true, Gateway: true}, log)
	if err != nil {
		return err
	}
	api, dev := n.Dispatcher.Addr().String(), n.Gateway.Addr().String()
	fmt.Fprintf(stdout, "herald is running: HTTP API http://%s, devices tcp://%s, NATS %s\n", api, dev, n.NATS.ClientURL())
	if cfg.Dev {
		fmt.Fprintf(stdout, `
Try it (in two other terminals):
  ./bin/herald listen --addr %s --app demo --user alice --secret demo-secret --count 1
  ./bin/herald push --api http://%s --key demo-key --app demo --user alice --data hello

Stop with Ctrl-C.
`, dev, api)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	s := <-sig
	log.Info("stopping", "signal", s.String())
	n.Stop()
	return nil
}
