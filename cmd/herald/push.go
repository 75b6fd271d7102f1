package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

func push(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herald push", flag.ContinueOnError)
	fs.SetOutput(stderr)
	api := fs.String("api", "http://127.0.0.1:8080", "HTTP API base URL")
	key := fs.String("key", os.Getenv("HERALD_KEY"), "publisher key (env HERALD_KEY)")
	app := fs.String("app", "", "app name (required)")
	users := fs.String("user", "", "target user, or several separated by commas")
	topic := fs.String("topic", "", "target topic (instead of --user)")
	broadcast := fs.Bool("broadcast", false, "target every device of the app (instead of --user)")
	at := fs.String("at", "", "deliver at this RFC 3339 time instead of now (a JetStream message schedule)")
	data := fs.String("data", "", "message text")
	data64 := fs.String("data-base64", "", "message bytes, base64 (instead of --data)")
	id := fs.String("id", "", "idempotency key: a retry with the same id is stored once")
	ttl := fs.String("ttl", "", "expire the message after this long, e.g. 1h")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	targets := 0
	for _, given := range []bool{*users != "", *topic != "", *broadcast} {
		if given {
			targets++
		}
	}
	if *app == "" || *key == "" || targets != 1 {
		return errors.New("--app, --key and exactly one of --user, --topic and --broadcast are required")
	}
	req := map[string]any{}
	switch {
	case *users != "":
		req["users"] = strings.Split(*users, ",")
	case *topic != "":
		req["topic"] = *topic
	default:
		req["broadcast"] = true
	}
	if *at != "" {
		req["at"] = *at
	}
	if *data64 != "" {
		req["data_base64"] = *data64
	} else {
		req["data"] = *data
	}
	if *id != "" {
		req["id"] = *id
	}
	if *ttl != "" {
		req["ttl"] = *ttl
	}
	body, _ := json.Marshal(req)
	hreq, err := http.NewRequest(http.MethodPost, strings.TrimRight(*api, "/")+"/v1/apps/"+*app+"/push", bytes.NewReader(body))
	if err != nil {
		return err
	}
	hreq.Header.Set("Authorization", "Bearer "+*key)
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 15 * time.Second}).Do(hreq)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	stdout.Write(out)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}
