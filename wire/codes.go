package wire

// Code is the reason carried by ERROR and GOAWAY. The ranges tell a device
// what to do next:
//
//	1000-1999 protocol errors: the client is broken; do not reconnect with the same build.
//	2000-2999 authentication: get a new token before reconnecting (2002 expired is routine).
//	3000-3999 transient: reconnect with backoff and resume from the cursors.
type Code uint32

// Error and close codes. Values are part of the protocol (docs/protocol.md).
const (
	CodeMalformed        Code = 1000 // a frame that does not decode
	CodeUnknownType      Code = 1001 // a frame type this version does not know
	CodeTooLarge         Code = 1002 // a frame over the negotiated maximum
	CodeBadVersion       Code = 1003 // CONNECT with a protocol version the server does not speak
	CodeUnexpected       Code = 1004 // a frame not allowed in this state (e.g. PUSH from a device, ACK before CONNECT)
	CodeBadChannel       Code = 1005 // an ACK, SYNC, SUB or cursor for a channel the connection may not have
	CodeTooManyChannels  Code = 1006 // SUB over the app's max_topics (ERROR), or over the connection's 256 slots (SUBACK)
	CodeTokenMissing     Code = 2000 // CONNECT without a token
	CodeTokenInvalid     Code = 2001 // a token that is not a valid HS256 JWT of the app (bad signature, bad claims)
	CodeTokenExpired     Code = 2002 // a token past its exp
	CodeAppMismatch      Code = 2003 // the token was issued for another app
	CodeUnknownApp       Code = 2004 // CONNECT names an app the server does not know
	CodeDeviceMismatch   Code = 2005 // the token's device claim differs from CONNECT's device
	CodeOriginNotAllowed Code = 2006 // a WebSocket device came from an Origin its app does not allow
	CodeTooManyDevices   Code = 2007 // the user already has the app's max_devices devices
	CodeInternal         Code = 3000 // the server failed; reconnect later
	CodeSlowConsumer     Code = 3001 // the device did not read fast enough; reconnect and catch up
	CodeConnectTimeout   Code = 3002 // no CONNECT within the deadline after accept
	CodeIdleTimeout      Code = 3003 // no frame within the heartbeat deadline
	CodeShutdown         Code = 3004 // the gateway is stopping or draining; reconnect elsewhere
	CodeReplaced         Code = 3005 // the same device connected again; this connection is the stale one
	CodeStoreUnavailable Code = 3006 // the store could not be read; reconnect later
	CodeRateLimited      Code = 3007 // the device sent frames faster than gateway.max_frame_rate
	CodeTooManyConns     Code = 3008 // too many connections from the device's address (gateway.max_conns_per_ip)
)

var codeNames = map[Code]string{
	CodeMalformed:        "malformed",
	CodeUnknownType:      "unknown_type",
	CodeTooLarge:         "too_large",
	CodeBadVersion:       "bad_version",
	CodeUnexpected:       "unexpected_frame",
	CodeBadChannel:       "bad_channel",
	CodeTooManyChannels:  "too_many_channels",
	CodeTokenMissing:     "token_missing",
	CodeTokenInvalid:     "token_invalid",
	CodeTokenExpired:     "token_expired",
	CodeAppMismatch:      "app_mismatch",
	CodeUnknownApp:       "unknown_app",
	CodeDeviceMismatch:   "device_mismatch",
	CodeOriginNotAllowed: "origin_not_allowed",
	CodeTooManyDevices:   "too_many_devices",
	CodeInternal:         "internal",
	CodeSlowConsumer:     "slow_consumer",
	CodeConnectTimeout:   "connect_timeout",
	CodeIdleTimeout:      "idle_timeout",
	CodeShutdown:         "shutdown",
	CodeReplaced:         "replaced",
	CodeStoreUnavailable: "store_unavailable",
	CodeRateLimited:      "rate_limited",
	CodeTooManyConns:     "too_many_connections",
}

// String is the code's short name, used as a metric label.
func (c Code) String() string {
	if s, ok := codeNames[c]; ok {
		return s
	}
	return "unknown"
}

// Codes lists every defined code (for metrics and docs).
func Codes() []Code {
	out := make([]Code, 0, len(codeNames))
	for c := range codeNames {
		out = append(out, c)
	}
	return out
}

// Retry reports whether a device should reconnect after this code without
// changing anything (transient codes, and an expired token once renewed).
func (c Code) Retry() bool { return c >= 3000 && c < 4000 }

// Auth reports whether the code asks for a new token.
func (c Code) Auth() bool { return c >= 2000 && c < 3000 }
