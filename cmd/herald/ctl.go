package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

const ctlUsage = `herald ctl — operate a running herald through the dispatcher's admin API

Usage:
  herald ctl [--api URL] [--key KEY] [--json] <command> [flags]

Commands:
  gateways                                   id, version, connections, load, draining
  user --app A --user U                      channels, stored messages, each device's cursor and lag
  messages --app A --channel C [--after N]   a channel's stored messages
  replay --app A --user U [--device D] (--from-seq N | --since 2h)
                                             deliver the user's messages again from there
  drain GATEWAY                              move a gateway's devices elsewhere, then it is empty
  stream                                     stream and KV bucket sizes

--api defaults to $HERALD_API or http://127.0.0.1:8080; --key to
$HERALD_ADMIN_KEY or dev-admin-key (the --dev admin key).
`

// ctl is one ctl invocation: where the admin API is and how to print.
type ctl struct {
	api, key string
	json     bool
	out      io.Writer
	hc       *http.Client
}

func ctlCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herald ctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, ctlUsage) }
	c := &ctl{out: stdout, hc: &http.Client{Timeout: 30 * time.Second}}
	fs.StringVar(&c.api, "api", envOr("HERALD_API", "http://127.0.0.1:8080"), "admin API base URL")
	fs.StringVar(&c.key, "key", envOr("HERALD_ADMIN_KEY", "dev-admin-key"), "admin key")
	fs.BoolVar(&c.json, "json", false, "print the API's JSON instead of a table")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	if fs.NArg() == 0 {
		fmt.Fprint(stderr, ctlUsage)
		return errUsage
	}
	c.api = strings.TrimRight(c.api, "/")
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	sub := flag.NewFlagSet("herald ctl "+cmd, flag.ContinueOnError)
	sub.SetOutput(stderr)
	sub.BoolVar(&c.json, "json", c.json, "print JSON")
	app := sub.String("app", "", "app name")
	user := sub.String("user", "", "user name")
	parse := func(required ...string) error {
		if err := sub.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return flag.ErrHelp
			}
			return errUsage
		}
		for _, r := range required {
			if f := sub.Lookup(r); f == nil || f.Value.String() == "" {
				return fmt.Errorf("--%s is required", r)
			}
		}
		return nil
	}
	var err error
	switch cmd {
	case "gateways":
		if err = parse(); err == nil {
			err = c.gateways()
		}
	case "user":
		if err = parse("app", "user"); err == nil {
			err = c.user(*app, *user)
		}
	case "messages":
		channel := sub.String("channel", "", "channel: u.<user>, t.<topic> or b.all")
		after := sub.Uint64("after", 0, "list messages after this sequence")
		max := sub.Int("max", 100, "at most this many (1-1000)")
		if err = parse("app", "channel"); err == nil {
			err = c.messages(*app, *channel, *after, *max)
		}
	case "replay":
		device := sub.String("device", "", "only this device (default: every device of the user)")
		from := sub.Uint64("from-seq", 0, "replay from this sequence")
		since := sub.String("since", "", "replay what was stored in this last while, e.g. 2h")
		if err = parse("app", "user"); err == nil {
			if (*from == 0) == (*since == "") {
				return errors.New("give exactly one of --from-seq and --since")
			}
			err = c.replay(*app, *user, *device, *from, *since)
		}
	case "drain":
		if err = parse(); err == nil {
			if sub.NArg() != 1 {
				return errors.New("usage: herald ctl drain GATEWAY-ID")
			}
			err = c.drain(sub.Arg(0))
		}
	case "stream":
		if err = parse(); err == nil {
			err = c.stream()
		}
	default:
		fmt.Fprintf(stderr, "herald ctl: unknown command %q\n\n%s", cmd, ctlUsage)
		return errUsage
	}
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// call does one admin API request and decodes the answer into out. An API
// error comes back as an error with its code and message.
func (c *ctl) call(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.api+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error.Code != "" {
			return fmt.Errorf("%s (%d %s)", e.Error.Message, resp.StatusCode, e.Error.Code)
		}
		return fmt.Errorf("%s: %d", path, resp.StatusCode)
	}
	if c.json {
		var v any
		if json.Unmarshal(b, &v) == nil {
			enc := json.NewEncoder(c.out)
			enc.SetIndent("", "  ")
			return enc.Encode(v)
		}
	}
	return json.Unmarshal(b, out)
}

func (c *ctl) table(header string, rows [][]string) {
	tw := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

func (c *ctl) gateways() error {
	var out struct {
		Gateways []struct {
			ID, Version, TCP, WS string
			Connections          int
			Load                 float64
			Draining             bool
			Updated              time.Time
		} `json:"gateways"`
	}
	if err := c.call("GET", "/v1/admin/gateways", nil, &out); err != nil || c.json {
		return err
	}
	var rows [][]string
	for _, g := range out.Gateways {
		rows = append(rows, []string{g.ID, g.Version, g.TCP, dash(g.WS), strconv.Itoa(g.Connections),
			strconv.FormatFloat(g.Load, 'f', 3, 64), strconv.FormatBool(g.Draining), time.Since(g.Updated).Round(time.Second).String() + " ago"})
	}
	c.table("ID\tVERSION\tTCP\tWS\tCONNECTIONS\tLOAD\tDRAINING\tSEEN", rows)
	return nil
}

func (c *ctl) user(app, user string) error {
	var out struct {
		ServerTopics []string `json:"server_topics"`
		Channels     []struct {
			Channel string
			Stored  uint64
			Devices []struct {
				Device      string
				Cursor, Lag uint64
			}
		}
	}
	if err := c.call("GET", "/v1/admin/apps/"+url.PathEscape(app)+"/users/"+url.PathEscape(user), nil, &out); err != nil || c.json {
		return err
	}
	var rows [][]string
	for _, ch := range out.Channels {
		if len(ch.Devices) == 0 {
			rows = append(rows, []string{ch.Channel, strconv.FormatUint(ch.Stored, 10), "-", "-", "-"})
		}
		for _, d := range ch.Devices {
			rows = append(rows, []string{ch.Channel, strconv.FormatUint(ch.Stored, 10), d.Device, strconv.FormatUint(d.Cursor, 10), strconv.FormatUint(d.Lag, 10)})
		}
	}
	c.table("CHANNEL\tSTORED\tDEVICE\tCURSOR\tLAG", rows)
	if len(out.ServerTopics) > 0 {
		fmt.Fprintf(c.out, "server-side topics: %s\n", strings.Join(out.ServerTopics, ", "))
	}
	return nil
}

func (c *ctl) messages(app, channel string, after uint64, max int) error {
	var out struct {
		Messages []struct {
			Seq        uint64
			Time       time.Time
			Size       int
			Data       *string
			DataBase64 *string `json:"data_base64"`
		}
		More uint64
	}
	path := fmt.Sprintf("/v1/admin/apps/%s/channels/%s/messages?after=%d&max=%d", url.PathEscape(app), url.PathEscape(channel), after, max)
	if err := c.call("GET", path, nil, &out); err != nil || c.json {
		return err
	}
	var rows [][]string
	for _, m := range out.Messages {
		data := "(binary)"
		if m.Data != nil {
			data = strconv.Quote(*m.Data)
			if len(data) > 60 {
				data = data[:57] + "..."
			}
		}
		rows = append(rows, []string{strconv.FormatUint(m.Seq, 10), m.Time.Format(time.RFC3339), strconv.Itoa(m.Size), data})
	}
	c.table("SEQ\tSTORED\tBYTES\tDATA", rows)
	if out.More > 0 {
		fmt.Fprintf(c.out, "%d more: --after %d\n", out.More, out.Messages[len(out.Messages)-1].Seq)
	}
	return nil
}

func (c *ctl) replay(app, user, device string, from uint64, since string) error {
	body := map[string]any{}
	if device != "" {
		body["device"] = device
	}
	if from > 0 {
		body["from_seq"] = from
	} else {
		body["since"] = since
	}
	var out struct {
		Channel string
		FromSeq uint64 `json:"from_seq"`
		Devices []string
	}
	if err := c.call("POST", "/v1/admin/apps/"+url.PathEscape(app)+"/users/"+url.PathEscape(user)+"/replay", body, &out); err != nil || c.json {
		return err
	}
	fmt.Fprintf(c.out, "replay of %s from seq %d ordered for %s: online devices get it now, offline ones at their next connection\n",
		out.Channel, out.FromSeq, strings.Join(out.Devices, ", "))
	return nil
}

func (c *ctl) drain(id string) error {
	var out struct {
		ID          string
		Connections int
	}
	if err := c.call("POST", "/v1/admin/gateways/"+url.PathEscape(id)+"/drain", nil, &out); err != nil || c.json {
		return err
	}
	fmt.Fprintf(c.out, "gateway %s is draining (%d connections); watch it empty with: herald ctl gateways\n", out.ID, out.Connections)
	return nil
}

func (c *ctl) stream() error {
	var out struct {
		Streams []struct {
			Name                string
			Messages, Bytes     uint64
			FirstSeq            uint64 `json:"first_seq"`
			LastSeq             uint64 `json:"last_seq"`
			Subjects            uint64
			Consumers, Replicas int
		}
		Buckets []struct {
			Name          string
			Values, Bytes uint64
		}
	}
	if err := c.call("GET", "/v1/admin/stream", nil, &out); err != nil || c.json {
		return err
	}
	var rows [][]string
	for _, s := range out.Streams {
		rows = append(rows, []string{s.Name, strconv.FormatUint(s.Messages, 10), strconv.FormatUint(s.Bytes, 10),
			fmt.Sprintf("%d-%d", s.FirstSeq, s.LastSeq), strconv.FormatUint(s.Subjects, 10), strconv.Itoa(s.Consumers), strconv.Itoa(s.Replicas)})
	}
	c.table("STREAM\tMESSAGES\tBYTES\tSEQS\tSUBJECTS\tCONSUMERS\tREPLICAS", rows)
	fmt.Fprintln(c.out)
	rows = nil
	for _, b := range out.Buckets {
		rows = append(rows, []string{b.Name, strconv.FormatUint(b.Values, 10), strconv.FormatUint(b.Bytes, 10)})
	}
	c.table("BUCKET\tVALUES\tBYTES", rows)
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
