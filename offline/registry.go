package offline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// GatewayTTL is how long a gateway's registry entry lives without a
// refresh: a gateway killed with -9 disappears within it.
const GatewayTTL = 10 * time.Second

// GatewayInfo is a gateway's entry in the registry (bucket herald-gateways),
// refreshed by the gateway every GatewayTTL/5.
type GatewayInfo struct {
	ID          string    `json:"id"`
	Version     string    `json:"version"`
	TCP         string    `json:"tcp"`
	WS          string    `json:"ws,omitempty"`
	TLS         bool      `json:"tls,omitempty"`
	Connections int       `json:"connections"`
	Load        float64   `json:"load"` // connections / gateway.capacity
	Draining    bool      `json:"draining"`
	Delivered   uint64    `json:"delivered"` // PUSH frames queued to devices since start
	P99Millis   float64   `json:"p99_ms"`    // delivery latency p99 over the last refresh period
	Started     time.Time `json:"started"`
	Updated     time.Time `json:"updated"`
}

// PutGateway writes or refreshes a gateway's entry.
func (s *Store) PutGateway(ctx context.Context, g GatewayInfo) error {
	b, err := json.Marshal(g)
	if err != nil {
		return err
	}
	if _, err := s.gws.Put(ctx, g.ID, b); err != nil {
		return fmt.Errorf("%w: register gateway: %v", ErrUnavailable, err)
	}
	return nil
}

// DeleteGateway removes a gateway's entry (it stopped).
func (s *Store) DeleteGateway(ctx context.Context, id string) error {
	if err := s.gws.Delete(ctx, id); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("%w: unregister gateway: %v", ErrUnavailable, err)
	}
	return nil
}

// Gateways lists the registered gateways, sorted by id.
func (s *Store) Gateways(ctx context.Context) ([]GatewayInfo, error) {
	lister, err := s.gws.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: gateways: %v", ErrUnavailable, err)
	}
	out := []GatewayInfo{}
	for key := range lister.Keys() {
		e, err := s.gws.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // gone meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("%w: gateway %s: %v", ErrUnavailable, key, err)
		}
		var g GatewayInfo
		if json.Unmarshal(e.Value(), &g) == nil {
			out = append(out, g)
		}
	}
	slices.SortFunc(out, func(a, b GatewayInfo) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// GatewayControlSubject is where a gateway takes operator requests (drain).
func GatewayControlSubject(id string) string { return "herald.ctl.gateway." + id }
