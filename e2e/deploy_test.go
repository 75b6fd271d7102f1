package e2e

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.yaml.in/yaml/v3"

	"herald/client"
	"herald/config"
)

// composeFile is the part of docker-compose.yml this test reads.
type composeFile struct {
	Services map[string]struct {
		Build     string         `yaml:"build"`
		Command   []string       `yaml:"command"`
		Volumes   []string       `yaml:"volumes"`
		Ports     []string       `yaml:"ports"`
		DependsOn map[string]any `yaml:"depends_on"`
	} `yaml:"services"`
	Volumes map[string]any `yaml:"volumes"`
}

func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return p
}

// docker-compose.yml describes the cluster topology with commands, config
// files and ports the binary accepts: no Docker here, so the file is read
// and every service checked against what herald would do with it.
func TestDockerComposeMatchesTheBinary(t *testing.T) {
	b, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var cf composeFile
	if err := yaml.Unmarshal(b, &cf); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	if _, err := os.Stat("../Dockerfile"); err != nil {
		t.Fatal("no Dockerfile beside docker-compose.yml")
	}
	roles := map[string]int{}
	for name, svc := range cf.Services {
		if svc.Build != "." || len(svc.Command) != 3 || svc.Command[1] != "--config" {
			t.Fatalf("%s: want build . and command [role --config FILE], got %q %q", name, svc.Build, svc.Command)
		}
		role := svc.Command[0]
		roles[role]++
		// The config file comes from the repository through a volume.
		var hostFile string
		for _, v := range svc.Volumes {
			parts := strings.Split(v, ":")
			if len(parts) >= 2 && parts[1] == svc.Command[2] {
				hostFile = filepath.Join("..", parts[0])
			}
			if len(parts) >= 2 && !strings.HasPrefix(parts[0], ".") {
				if _, ok := cf.Volumes[parts[0]]; !ok {
					t.Fatalf("%s: volume %q is not declared", name, parts[0])
				}
			}
		}
		if hostFile == "" {
			t.Fatalf("%s: no volume provides %s", name, svc.Command[2])
		}
		published := map[string]string{} // container port → host port
		for _, p := range svc.Ports {
			hp, cp, ok := strings.Cut(p, ":")
			if !ok {
				t.Fatalf("%s: port %q is not host:container", name, p)
			}
			published[cp] = hp
		}
		for dep := range svc.DependsOn {
			if _, ok := cf.Services[dep]; !ok {
				t.Fatalf("%s depends on unknown service %s", name, dep)
			}
		}
		switch role {
		case "nats":
			opts, err := server.ProcessConfigFile(hostFile)
			if err != nil {
				t.Fatalf("%s: %s: %v", name, hostFile, err)
			}
			if !opts.JetStream || opts.ServerName != name || opts.Cluster.Name != "herald" || len(opts.Routes) != 3 || opts.HTTPPort != 8222 {
				t.Fatalf("%s: %s: want JetStream, server_name %s, cluster herald with 3 routes, monitoring on 8222", name, hostFile, name)
			}
			if published["4222"] == "" || opts.Port != 4222 {
				t.Fatalf("%s: client port 4222 not listened on and published", name)
			}
		case "dispatcher", "gateway":
			cfg, err := config.Load(role, []string{"--config", hostFile}, func(string) string { return "" }, os.Stderr)
			if err != nil {
				t.Fatalf("%s: herald %s --config %s: %v", name, role, hostFile, err)
			}
			for _, u := range strings.Split(cfg.NATS.URL, ",") {
				host := strings.TrimPrefix(strings.Split(u, ":")[1], "//")
				if _, ok := cf.Services[host]; !ok {
					t.Fatalf("%s: nats.url names %q, not a service", name, host)
				}
			}
			want := []string{cfg.API.Listen}
			if role == "gateway" {
				want = []string{cfg.Gateway.Listen, cfg.Gateway.WSListen, cfg.MetricsListen}
				if adv := cfg.Gateway.Advertise; published[portOf(t, cfg.Gateway.Listen)] != portOf(t, adv) {
					t.Fatalf("%s: advertises %s but publishes its device port on %s", name, adv, published[portOf(t, cfg.Gateway.Listen)])
				}
			}
			for _, addr := range want {
				if published[portOf(t, addr)] == "" {
					t.Fatalf("%s: %s is not published (ports %v)", name, addr, svc.Ports)
				}
			}
		default:
			t.Fatalf("%s: unknown role %q", name, role)
		}
	}
	if roles["nats"] != 3 || roles["dispatcher"] != 2 || roles["gateway"] != 2 {
		t.Fatalf("topology %v, want 3 nats, 2 dispatchers, 2 gateways", roles)
	}
	// The local topology (make cluster) loads too.
	for _, f := range []string{"dispatcher-1", "dispatcher-2", "gateway-1", "gateway-2"} {
		role := strings.Split(f, "-")[0]
		if _, err := config.Load(role, []string{"--config", "../deploy/local/" + f + ".yaml"}, func(string) string { return "" }, os.Stderr); err != nil {
			t.Fatalf("deploy/local/%s.yaml: %v", f, err)
		}
	}
	for i := 1; i <= 3; i++ {
		if _, err := server.ProcessConfigFile(filepath.Join("../deploy/local", "nats-"+string(rune('0'+i))+".conf")); err != nil {
			t.Fatal(err)
		}
	}
}

// make cluster's script starts the topology as processes, a message
// published through the second dispatcher reaches a device on the first
// gateway, and the stream is replicated 3 times; the stop script stops it.
func TestMakeCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts seven processes")
	}
	for _, port := range []string{"4222", "4223", "4224", "6222", "6223", "6224", "8080", "8081", "7070", "7080", "8222", "8223", "8224", "9091", "9092"} {
		if ln, err := net.Listen("tcp", "127.0.0.1:"+port); err != nil {
			t.Fatalf("port %s is taken (a herald running?): make cluster needs it: %v", port, err)
		} else {
			ln.Close()
		}
	}
	bin, dir := buildHerald(t), t.TempDir()
	env := append(os.Environ(), "CLUSTER_DIR="+dir, "HERALD_BIN="+bin)
	run := func(arg string) string {
		cmd := exec.Command("../scripts/cluster.sh", arg)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("cluster.sh %s: %v\n%s", arg, err, out)
		}
		return string(out)
	}
	t.Cleanup(func() { run("stop") })
	out := run("start")
	for _, want := range []string{"nats://127.0.0.1:4224", "http://127.0.0.1:8081", "tcp://127.0.0.1:7080"} {
		if !strings.Contains(out, want) {
			t.Fatalf("start printed:\n%s", out)
		}
	}
	col := newCollector()
	dev, err := client.New(client.Config{Addr: "127.0.0.1:7070", App: "demo", Device: "phone", Token: tokenFor("alice", "phone"), Handler: col.handle})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = dev.Run(ctx) }()
	waitFor(t, 10*time.Second, "connect", func() bool { return dev.Connects() == 1 })
	push(t, "http://127.0.0.1:8081", "alice", "through the cluster")
	col.waitCount(t, 1, 10*time.Second)
	cancel()
	<-done
	st, body := call(t, "http://127.0.0.1:8080", "local-cluster-admin-key", "GET", "/v1/admin/stream", nil)
	streams, _ := body["streams"].([]any)
	if st != 200 || len(streams) == 0 || streams[0].(map[string]any)["replicas"].(float64) != 3 {
		t.Fatalf("stream: %d %v", st, body)
	}
	start := time.Now()
	stopped := run("stop")
	t.Logf("stopped in %v", time.Since(start))
	if !strings.Contains(stopped, "stopped") {
		t.Fatalf("stop printed:\n%s", stopped)
	}
	pids, _ := filepath.Glob(filepath.Join(dir, "pids", "*.pid"))
	if len(pids) != 0 || slices.Contains(pids, "") {
		t.Fatalf("pid files left: %v", pids)
	}
}
