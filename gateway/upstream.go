package gateway

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"herald/config"
	"herald/wire"
)

// upWait is an UP waiting for the store's acknowledgement.
type upWait struct {
	c  *conn
	id string
	f  jetstream.PubAckFuture
}

// maxUpInFlight bounds the UPs a gateway waits on; beyond it a device is
// told to retry.
const maxUpInFlight = 8192

// handleUp stores an upstream message and answers UPACK once JetStream
// acknowledged it (upAcker). The id deduplicates retries.
func (c *conn) handleUp(body []byte) bool {
	var f wire.Up
	if err := f.Decode(body); err != nil || !config.ValidID(string(f.ID)) {
		c.fail(wire.CodeMalformed, "malformed UP: the id must be 1-128 printable ASCII characters without spaces")
		return false
	}
	id := string(f.ID)
	// Copy: the body is a view of a pooled read buffer, and the publish
	// may be retried after this returns.
	data := append([]byte(nil), f.Payload...)
	fut, err := c.gw.store.PublishUp(c.app(), c.user(), c.device(), id, data)
	if err != nil {
		c.upAck(id, 0, false, wire.CodeStoreUnavailable)
		return true
	}
	select {
	case c.gw.ups <- upWait{c: c, id: id, f: fut}:
	default:
		c.upAck(id, 0, false, wire.CodeStoreUnavailable)
	}
	return true
}

// upAck queues an UPACK from any goroutine.
func (c *conn) upAck(id string, seq uint64, dup bool, code wire.Code) {
	switch {
	case code != 0:
		c.gw.m.upErrors.Inc()
	case dup:
		c.gw.m.upDuplicates.Inc()
	default:
		c.gw.m.upStored.Inc()
	}
	var buf [32 + wire.MaxUpIDLen]byte
	c.queue((&wire.UpAck{ID: []byte(id), Seq: seq, Code: code, Duplicate: dup}).Append(buf[:0]), wire.TypeUpAck)
}

// upAcker answers UPs in the order they were stored.
func (gw *Gateway) upAcker() {
	timeout := time.NewTimer(time.Hour)
	defer timeout.Stop()
	for {
		var w upWait
		select {
		case <-gw.ctx.Done():
			return
		case w = <-gw.ups:
		}
		timeout.Reset(10 * time.Second)
		select {
		case ack := <-w.f.Ok():
			w.c.upAck(w.id, ack.Sequence, ack.Duplicate, 0)
		case <-w.f.Err():
			w.c.upAck(w.id, 0, false, wire.CodeStoreUnavailable)
		case <-timeout.C:
			w.c.upAck(w.id, 0, false, wire.CodeStoreUnavailable)
		case <-gw.ctx.Done():
			return
		}
	}
}

// queue queues a frame from a goroutine that is not serving the connection
// and has the worker write it.
func (c *conn) queue(b []byte, t wire.Type) {
	if c.enqueue(b, t, true) {
		c.schedule(evFlush)
	}
}
