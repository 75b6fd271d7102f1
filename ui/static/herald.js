// herald.js: the herald device protocol for browsers (docs/protocol.md):
// frames over a WebSocket, one frame per binary message from the gateway.
"use strict";

const T = { CONNECT: 1, CONNACK: 2, PUSH: 3, ACK: 4, PING: 5, PONG: 6, ERROR: 7, GOAWAY: 8,
  SUB: 9, SUBACK: 10, UNSUB: 11, NOTIFY: 12, SYNC: 13, REVOKE: 14, UP: 15, UPACK: 16, RESYNC: 17 };

class Writer {
  constructor() { this.b = []; }
  u(n) { // unsigned LEB128; n may exceed 2^32, so no bit operators
    n = Number(n);
    do { let byte = n % 128; n = Math.floor(n / 128); if (n > 0) byte += 128; this.b.push(byte); } while (n > 0);
    return this;
  }
  bytes(arr) { this.u(arr.length); for (const x of arr) this.b.push(x); return this; }
  str(s) { return this.bytes(new TextEncoder().encode(s)); }
  frame(type) { const body = this.b; const w = new Writer(); w.b.push(type); w.u(body.length); return new Uint8Array(w.b.concat(body)); }
}

class Reader {
  constructor(u8) { this.b = u8; this.i = 0; }
  u() {
    let n = 0, mul = 1;
    for (let k = 0; k < 10; k++) {
      if (this.i >= this.b.length) throw new Error("truncated varint");
      const x = this.b[this.i++];
      n += (x & 127) * mul; mul *= 128;
      if (x < 128) return n;
    }
    throw new Error("varint too long");
  }
  bytes() { const n = this.u(); if (this.i + n > this.b.length) throw new Error("truncated field"); const out = this.b.subarray(this.i, this.i + n); this.i += n; return out; }
  str() { return new TextDecoder().decode(this.bytes()); }
  byte() { if (this.i >= this.b.length) throw new Error("truncated"); return this.b[this.i++]; }
  rest() { const out = this.b.subarray(this.i); this.i = this.b.length; return out; }
  more() { return this.i < this.b.length; }
}

// splitFrame parses one frame: [type, body].
function splitFrame(u8) {
  const r = new Reader(u8);
  const type = r.byte();
  const len = r.u();
  if (r.i + len > u8.length) throw new Error("truncated frame");
  return [type, u8.subarray(r.i, r.i + len)];
}

// validChannel: what a server may name a channel (docs/protocol.md,
// "Channels and slots"). A cursor for anything else in CONNECT would be
// refused for good (ERROR 1005), so such a CONNACK or SUBACK is a protocol
// error.
function validChannel(ch) {
  return ch === "b.all" || /^[ut]\.[A-Za-z0-9_-]{1,128}$/.test(ch);
}

// Device is a herald device on a WebSocket. Callbacks: onConnected(connack),
// onMessage({channel, seq, data, replay}), onStatus(text, isError),
// onAcked(channel, seq), onSubscribed(channel).
class Device {
  constructor(opts) {
    this.o = opts;
    this.slots = new Map();    // slot → channel
    this.cursors = new Map();  // channel → highest handled seq
    this.topics = new Set();
    this.ws = null;
    this.ping = null;
  }
  connect() {
    const o = this.o;
    const ws = new WebSocket(o.url);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => {
      const w = new Writer().u(1).str(o.app).str(o.device).str(o.token).u(30);
      const cursors = [...this.cursors.entries()];
      w.u(cursors.length);
      for (const [ch, seq] of cursors) w.str(ch).u(seq);
      ws.send(w.frame(T.CONNECT));
    };
    ws.onmessage = (ev) => {
      try { this.handle(new Uint8Array(ev.data)); } catch (e) { this.status("protocol error: " + e.message, true); ws.close(); }
    };
    ws.onclose = () => { clearInterval(this.ping); this.status("disconnected", true); };
    ws.onerror = () => this.status("WebSocket error", true);
  }
  close() { if (this.ws) this.ws.close(); }
  status(text, bad) { if (this.o.onStatus) this.o.onStatus(text, !!bad); }
  send(bytes) { if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(bytes); }
  subscribe(topic) {
    const ch = "t." + topic;
    this.topics.add(ch);
    this.send(new Writer().str(ch).u(this.cursors.get(ch) || 0).frame(T.SUB));
  }
  handle(u8) {
    const [type, body] = splitFrame(u8);
    const r = new Reader(body);
    switch (type) {
    case T.CONNACK: {
      const ack = { version: r.u(), hbMin: r.u(), hbMax: r.u(), heartbeat: r.u(), maxFrame: r.u(), channels: [] };
      const n = r.u();
      for (let k = 0; k < n; k++) {
        const slot = r.u(), name = r.str(), seq = r.u();
        if (!validChannel(name)) throw new Error("CONNACK names an invalid channel " + JSON.stringify(name));
        this.slots.set(slot, name);
        if (!this.cursors.has(name) || this.cursors.get(name) < seq) this.cursors.set(name, seq);
        ack.channels.push({ slot, name, seq });
      }
      clearInterval(this.ping);
      this.ping = setInterval(() => this.send(new Writer().u(0).frame(T.PING)), Math.max(5, ack.heartbeat - 5) * 1000);
      for (const ch of this.topics) this.send(new Writer().str(ch).u(this.cursors.get(ch) || 0).frame(T.SUB));
      this.status("connected", false);
      if (this.o.onConnected) this.o.onConnected(ack);
      break;
    }
    case T.SUBACK: {
      const slot = r.u(), name = r.str(), seq = r.u(), code = r.u();
      if (code !== 0) { this.status("subscription to " + name + " refused (" + code + ")", true); break; }
      if (!validChannel(name)) throw new Error("SUBACK names an invalid channel " + JSON.stringify(name));
      this.slots.set(slot, name);
      if (!this.cursors.has(name) || this.cursors.get(name) < seq) this.cursors.set(name, seq);
      if (this.o.onSubscribed) this.o.onSubscribed(name);
      break;
    }
    case T.PUSH: {
      const slot = r.u(), seq = r.u(), flags = r.byte();
      let time = null;
      if (flags & 2) time = r.u();
      if (flags & 4) r.u();
      const data = new TextDecoder().decode(r.rest());
      const ch = this.slots.get(slot);
      if (ch === undefined) throw new Error("PUSH on unknown slot " + slot);
      if (seq > (this.cursors.get(ch) || 0)) {
        this.cursors.set(ch, seq);
        if (this.o.onMessage) this.o.onMessage({ channel: ch, seq, data, replay: !!(flags & 1), time });
      }
      this.send(new Writer().u(slot).u(seq).frame(T.ACK));
      if (this.o.onAcked) this.o.onAcked(ch, seq);
      break;
    }
    case T.NOTIFY: {
      const slot = r.u();
      const ch = this.slots.get(slot);
      this.send(new Writer().u(slot).u((this.cursors.get(ch) || 0) + 1).u(500).frame(T.SYNC));
      break;
    }
    case T.RESYNC: {
      const slot = r.u(), from = r.u();
      const ch = this.slots.get(slot);
      if ((this.cursors.get(ch) || 0) >= from) this.cursors.set(ch, from - 1);
      break;
    }
    case T.REVOKE: {
      const slot = r.u(), seq = r.u();
      if (this.o.onRevoke) this.o.onRevoke(this.slots.get(slot), seq);
      break;
    }
    case T.PONG: case T.UPACK: break;
    case T.ERROR: case T.GOAWAY: {
      const code = r.u();
      if (type === T.GOAWAY) r.u();
      this.status((type === T.ERROR ? "ERROR " : "GOAWAY ") + code + ": " + r.str(), true);
      break;
    }
    default: throw new Error("unexpected frame type " + type);
    }
  }
}
