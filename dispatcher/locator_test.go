package dispatcher

import (
	"fmt"
	"math"
	"testing"

	"herald/config"
	"herald/offline"
)

// A canary rule sends its share of devices to its version, the same
// devices every time; the rest go to the stable gateways, least loaded first.
func TestPickGatewaysCanary(t *testing.T) {
	gws := []offline.GatewayInfo{
		{ID: "a", Version: "1.0", Load: 0.5},
		{ID: "b", Version: "1.0", Load: 0.1},
		{ID: "c", Version: "1.1", Load: 0.0},
		{ID: "d", Version: "1.0", Load: 0.0, Draining: true},
	}
	cfg := config.Locator{Probe: 3, Canary: []config.Canary{{Version: "1.1", Share: 0.2}}}
	const n = 20000
	canary := 0
	for i := 0; i < n; i++ {
		dev := fmt.Sprintf("dev-%d", i)
		got := pickGateways(gws, "shop", dev, cfg)
		again := pickGateways(gws, "shop", dev, cfg)
		if len(got) == 0 || got[0].ID != again[0].ID {
			t.Fatalf("%s: not stable: %v %v", dev, got, again)
		}
		switch got[0].ID {
		case "c":
			canary++
			if len(got) != 1 {
				t.Fatalf("canary device also offered %v", got)
			}
		case "b":
			if len(got) != 2 || got[1].ID != "a" {
				t.Fatalf("stable device offered %v (want b then a)", got)
			}
		default:
			t.Fatalf("offered %v", got)
		}
	}
	if share := float64(canary) / n; math.Abs(share-0.2) > 0.02 {
		t.Fatalf("canary share %.3f, want 0.2", share)
	}
	// Without canary gateways alive, everyone goes to the stable ones.
	if got := pickGateways(gws[:2], "shop", "dev-1", cfg); len(got) != 2 {
		t.Fatalf("%v", got)
	}
	// Only draining gateways: none offered.
	if got := pickGateways(gws[3:], "shop", "dev-1", cfg); len(got) != 0 {
		t.Fatalf("draining offered: %v", got)
	}
}
