package e2e

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"herald/client"
	"herald/config"
	"herald/wire"
)

// Slowloris: hundreds of sockets that never finish CONNECT (or the
// WebSocket upgrade, or an HTTP request) take nothing from real devices,
// and are all closed by their deadlines.
func TestSlowlorisLeavesDevicesServed(t *testing.T) {
	cfg := testConfig(t)
	cfg.Gateway.ConnectTimeout = 2 * time.Second
	cfg.API.ReadTimeout = 2 * time.Second
	n := startNode(t, cfg)
	addr, wsAddr, api := n.Gateway.Addr().String(), n.Gateway.WSAddr().String(), apiURL(n)
	apiAddr := n.Dispatcher.Addr().String()

	good := newCollector()
	gd := device(t, addr, "alice", "d1", good, nil)
	waitFor(t, 5*time.Second, "connect", func() bool { return gd.Connects() == 1 })

	var hostile []net.Conn
	open := func(to string, first []byte) {
		nc, err := net.DialTimeout("tcp", to, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		if first != nil {
			if _, err := nc.Write(first); err != nil {
				t.Fatal(err)
			}
		}
		hostile = append(hostile, nc)
	}
	connect := (&wire.Connect{Version: wire.Version, App: []byte("demo"), Device: []byte("x"), Token: []byte("t")}).Append(nil)
	for i := 0; i < 400; i++ {
		open(addr, nil) // silent
	}
	for i := 0; i < 100; i++ {
		open(addr, connect[:len(connect)/2]) // half a CONNECT
	}
	for i := 0; i < 100; i++ {
		open(wsAddr, []byte("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")) // an upgrade never finished
	}
	for i := 0; i < 20; i++ {
		open(apiAddr, []byte("POST /v1/apps/demo/push HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n")) // headers never finished
	}
	start := time.Now()

	// Meanwhile a new device connects, and devices keep receiving.
	fresh := newCollector()
	fd := device(t, addr, "bob", "d1", fresh, nil)
	waitFor(t, 2*time.Second, "a new device during the slowloris", func() bool { return fd.Connects() == 1 })
	for i := 0; i < 20; i++ {
		push(t, api, "alice", "a")
		push(t, api, "bob", "b")
	}
	good.waitCount(t, 20, 5*time.Second)
	fresh.waitCount(t, 20, 5*time.Second)

	// Every hostile socket is closed by the server, about when its deadline passes.
	var closed atomic.Int32
	var wg sync.WaitGroup
	for _, nc := range hostile {
		wg.Add(1)
		go func(nc net.Conn) {
			defer wg.Done()
			nc.SetReadDeadline(time.Now().Add(8 * time.Second))
			if _, err := io.Copy(io.Discard, nc); err == nil || isReset(err) {
				closed.Add(1) // EOF (after an ERROR frame, an HTTP 408 or nothing) or a reset
			}
		}(nc)
	}
	wg.Wait()
	if int(closed.Load()) != len(hostile) {
		t.Fatalf("%d of %d hostile sockets closed by the server", closed.Load(), len(hostile))
	}
	if el := time.Since(start); el > 6*time.Second {
		t.Fatalf("hostile sockets closed after %v (deadline 2s)", el)
	}
	if v := metricValue(t, n, `herald_gateway_disconnects_total{reason="connect_timeout"}`); v != "600" {
		t.Fatalf("connect timeouts counted %q, want 600", v)
	}
	if gd.Connects() != 1 || fd.Connects() != 1 {
		t.Fatalf("real devices reconnected: %d, %d", gd.Connects(), fd.Connects())
	}
}

// writeTestPKI makes a throwaway CA and a certificate for 127.0.0.1 and
// localhost signed by it; it returns the CA pool and the cert and key files.
func writeTestPKI(t testing.TB) (pool *x509.CertPool, certFile, keyFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "herald test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "herald test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	keyDER, _ := x509.MarshalECPrivateKey(key)
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(ca)
	return pool, certFile, keyFile
}

func TestTLSEverywhere(t *testing.T) {
	pool, certFile, keyFile := writeTestPKI(t)
	cfg := testConfig(t)
	cfg.Gateway.TLS = config.TLS{Cert: certFile, Key: keyFile}
	cfg.API.TLS = config.TLS{Cert: certFile, Key: keyFile}
	cfg.Gateway.ConnectTimeout = 2 * time.Second
	n := startNode(t, cfg)
	addr, wsAddr := n.Gateway.Addr().String(), n.Gateway.WSAddr().String()
	base := "https://" + n.Dispatcher.Addr().String()
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}

	tlsCfg := &tls.Config{RootCAs: pool}
	tcp, web := newCollector(), newCollector()
	ct := device(t, "tls://"+addr, "alice", "phone", tcp, func(c *client.Config) { c.TLS = tlsCfg })
	cw := device(t, "wss://"+wsAddr+"/", "alice", "browser", web, func(c *client.Config) { c.TLS = tlsCfg })
	waitFor(t, 5*time.Second, "TLS devices", func() bool { return ct.Connects() == 1 && cw.Connects() == 1 })

	for i := 0; i < 10; i++ {
		req, _ := http.NewRequest("POST", base+"/v1/apps/demo/push", strings.NewReader(`{"users":["alice"],"data":"over tls"}`))
		req.Header.Set("Authorization", "Bearer "+config.DemoKey)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("HTTPS push: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("HTTPS push: %d", resp.StatusCode)
		}
	}
	tcp.waitCount(t, 10, 5*time.Second)
	web.waitCount(t, 10, 5*time.Second)
	for _, m := range append(tcp.snapshot(), web.snapshot()...) {
		if string(m.Data) != "over tls" {
			t.Fatalf("got %q", m.Data)
		}
	}

	// Without the CA the certificate is refused; plain HTTP and plain
	// protocol bytes on the TLS ports get nothing back.
	if _, err := tls.Dial("tcp", addr, &tls.Config{}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("TLS without the CA: %v", err)
	}
	if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + n.Dispatcher.Addr().String() + "/healthz"); err == nil && resp.StatusCode == 200 {
		t.Fatal("plain HTTP answered on the HTTPS port")
	}
	d := dialRaw(t, addr)
	d.send((&wire.Connect{Version: wire.Version, App: []byte("demo"), Device: []byte("p"), Token: []byte(mustToken(t, config.DemoSecret, "demo", "alice", "p"))}).Append(nil))
	d.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if typ, _, _, err := wire.ReadFrame(d.r, nil, wire.DefaultMaxFrame); err == nil && typ == wire.TypeConnAck {
		t.Fatal("plain CONNECT accepted on the TLS port")
	}

	// A TLS device that never finishes its handshake is cut at connect_timeout.
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	start := time.Now()
	nc.SetReadDeadline(time.Now().Add(6 * time.Second))
	if _, err := io.Copy(io.Discard, nc); err != nil && !isReset(err) {
		t.Fatalf("silent TLS socket: %v", err)
	}
	if el := time.Since(start); el > 4*time.Second {
		t.Fatalf("silent TLS socket closed after %v", el)
	}
	if ct.Connects() != 1 || cw.Connects() != 1 {
		t.Fatal("TLS devices reconnected")
	}
}

// Garbage on many connections — random bytes before and after CONNECT,
// random WebSocket bytes — while devices keep receiving: every device gets
// every message once and in order, every stored message stays readable,
// and every garbage connection is closed with an error, never a crash.
func TestGarbageWhileDevicesReceive(t *testing.T) {
	cfg := testConfig(t)
	cfg.Gateway.ConnectTimeout = 2 * time.Second
	// The garbage connections that authenticate first (all as device m1,
	// so each new one takes over the one before) are closed when their
	// bytes are a protocol error — or, when the last one's bytes happen to
	// be a valid frame or the start of one, when it has been silent for
	// two heartbeats: 1 s here, so within the test's 8 s.
	cfg.Gateway.HeartbeatMin = time.Second
	n := startNode(t, cfg)
	addr, wsAddr, api := n.Gateway.Addr().String(), n.Gateway.WSAddr().String(), apiURL(n)
	const devices, perDevice = 10, 30
	cols := make([]*collector, devices)
	for i := range cols {
		cols[i] = newCollector()
		c := device(t, addr, userN(i), "d1", cols[i], nil)
		waitFor(t, 5*time.Second, "connect", func() bool { return c.Connects() == 1 })
	}
	tok := mustToken(t, config.DemoSecret, "demo", "mallory", "m1")
	rng := mrand.New(mrand.NewPCG(1, 2))
	var wg sync.WaitGroup
	var closedOK atomic.Int32
	const garbageConns = 60
	garbage := func(i int) []byte {
		b := make([]byte, 1+rng.IntN(2048))
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		if i%3 == 1 && len(b) > 1 {
			b[0] = byte(1 + rng.IntN(0x10)) // a known frame type with a random body
		}
		return b
	}
	payloads := make([][]byte, garbageConns)
	for i := range payloads {
		payloads[i] = garbage(i)
	}
	for i := 0; i < garbageConns; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			to := addr
			if i%4 == 3 {
				to = wsAddr
			}
			nc, err := net.DialTimeout("tcp", to, 5*time.Second)
			if err != nil {
				t.Error(err)
				return
			}
			defer nc.Close()
			r := bufio.NewReader(nc)
			if i%2 == 0 && to == addr {
				nc.Write((&wire.Connect{Version: wire.Version, App: []byte("demo"), Device: []byte("m1"), Token: []byte(tok), Heartbeat: 1}).Append(nil))
			}
			nc.Write(payloads[i])
			nc.SetReadDeadline(time.Now().Add(8 * time.Second))
			if _, err := io.Copy(io.Discard, r); err == nil || isReset(err) || errors.Is(err, net.ErrClosed) {
				closedOK.Add(1)
			}
		}(i)
	}
	var seqs [devices][]uint64
	for k := 0; k < perDevice; k++ {
		for i := 0; i < devices; i++ {
			seqs[i] = append(seqs[i], push(t, api, userN(i), "m"))
		}
	}
	wg.Wait()
	if closedOK.Load() != garbageConns {
		t.Fatalf("%d of %d garbage connections closed by the server", closedOK.Load(), garbageConns)
	}
	for i, col := range cols {
		col.waitCount(t, perDevice, 10*time.Second)
		checkExactlyOnceInOrder(t, col.snapshot(), seqs[i])
	}
	for i := range seqs {
		for _, seq := range seqs[i] {
			st, out := call(t, api, config.DemoKey, "GET", "/v1/apps/demo/messages/"+itoa(seq), nil)
			if st != 200 || out["state"] != "stored" {
				t.Fatalf("message %d after the garbage: %d %v", seq, st, out)
			}
		}
	}
}

func userN(i int) string { return "user" + itoa(uint64(i)) }

func itoa(v uint64) string { return strconv.FormatUint(v, 10) }
