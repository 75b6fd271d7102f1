package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
	"unicode/utf8"

	"herald/client"
	"herald/token"
)

func listen(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herald listen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:7070", "gateway device address")
	app := fs.String("app", "", "app name (required)")
	user := fs.String("user", "", "user to listen as (required unless --token)")
	device := fs.String("device", "cli", "device id")
	secret := fs.String("secret", os.Getenv("HERALD_SECRET"), "the app's device secret, to mint a token here (env HERALD_SECRET)")
	tok := fs.String("token", os.Getenv("HERALD_TOKEN"), "a device token minted by the app backend (env HERALD_TOKEN)")
	count := fs.Int("count", 0, "exit after this many messages (0: run until interrupted)")
	state := fs.String("state", "", "file that keeps the cursors, to resume after a restart")
	verbose := fs.Bool("v", false, "log connections to stderr")
	var topics []string
	fs.Func("topic", "also receive this topic (repeatable)", func(t string) error {
		topics = append(topics, t)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	if *app == "" || (*tok == "" && (*user == "" || *secret == "")) {
		return errors.New("--app and either --token or both --user and --secret are required")
	}
	tokenFn := func(context.Context) (string, error) { return *tok, nil }
	if *tok == "" {
		tokenFn = func(context.Context) (string, error) {
			return token.Sign([]byte(*secret), *app, *user, *device, time.Hour)
		}
	}
	var cursors client.CursorStore
	if *state != "" {
		cursors = &client.FileCursors{Path: *state}
	}
	enc := json.NewEncoder(stdout)
	seen := 0
	cfg := client.Config{
		Addr: *addr, App: *app, Device: *device, Token: tokenFn, Cursors: cursors, Topics: topics,
		Handler: func(m client.Message) error {
			line := struct {
				Channel    string `json:"channel"`
				Seq        uint64 `json:"seq"`
				Data       string `json:"data,omitempty"`
				DataBase64 string `json:"data_base64,omitempty"`
			}{Channel: m.Channel, Seq: m.Seq}
			if utf8.Valid(m.Data) {
				line.Data = string(m.Data)
			} else {
				line.DataBase64 = base64.StdEncoding.EncodeToString(m.Data)
			}
			if err := enc.Encode(&line); err != nil {
				return err
			}
			seen++
			if *count > 0 && seen >= *count {
				return client.ErrStop
			}
			return nil
		},
	}
	if *verbose {
		cfg.OnEvent = func(e client.Event) {
			switch e.Kind {
			case client.Connected:
				fmt.Fprintln(stderr, "connected to", *addr)
			case client.Disconnected:
				fmt.Fprintln(stderr, "disconnected:", e.Err)
			}
		}
	}
	c, err := client.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err = c.Run(ctx)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
