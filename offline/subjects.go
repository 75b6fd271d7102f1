package offline

import (
	"strings"

	"herald/wire"
)

// Subject layout. Every subject herald uses is built here and nowhere else.
//
//	herald.ch.<app>.<kind>.<name>    stored messages (stream HERALD)
//	herald.live.<app>.<kind>.<name>  the stream's RePublish of each stored message
//	herald.sched.<app>.<kind>.<name>.<id> scheduled pushes (stored, not republished)
//	herald.up.<app>                  upstream messages from devices (stream HERALD_UP)
//	herald.uplive.<app>              the upstream stream's RePublish (headers only)
//
// kind is "u" for a user channel, "t" for a topic and "b" for the app's
// broadcast channel "b.all".
const (
	StreamName     = "HERALD"
	UpStreamName   = "HERALD_UP"
	storedPrefix   = "herald.ch."
	livePrefix     = "herald.live."
	schedPrefix    = "herald.sched."
	upPrefix       = "herald.up."
	upLivePrefix   = "herald.uplive."
	CursorsBucket  = "herald-cursors"
	AppsBucket     = "herald-apps"
	TopicsBucket   = "herald-topics"
	RecallsBucket  = "herald-recalls"
	GatewaysBucket = "herald-gateways"
	ReplaysBucket  = "herald-replays"
	KindUser       = "u"
	KindTopic      = "t"
	KindBroadcast  = "b"
	LiveWildcard   = livePrefix + ">"
	StoredWildcard = storedPrefix + ">"
	// BroadcastChannel is the app-wide channel every device receives.
	BroadcastChannel = KindBroadcast + ".all"
	// RevokeHeader marks a recall notice sent on a channel's live subject:
	// its value is the recalled message's sequence.
	RevokeHeader = "Herald-Revoke"
	// Upstream message headers.
	UpUserHeader   = "Herald-User"
	UpDeviceHeader = "Herald-Device"
	UpIDHeader     = "Herald-Id"
)

// LeaderElectedSubject is JetStream's advisory that the HERALD stream has a
// new leader (nats-server's JSAdvisoryStreamLeaderElectedPre + the name).
const LeaderElectedSubject = "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED." + StreamName

// UserChannel is the channel name of a user: "u.<user>".
func UserChannel(user string) string { return KindUser + "." + user }

// TopicChannel is the channel name of a topic: "t.<topic>".
func TopicChannel(topic string) string { return KindTopic + "." + topic }

// ParseChannel splits a channel name "u.alice" into kind and name and
// reports whether it is valid, by the device protocol's grammar
// (wire.ValidChannel).
func ParseChannel(ch string) (kind, name string, ok bool) {
	if !wire.ValidChannel(ch) {
		return "", "", false
	}
	kind, name, _ = strings.Cut(ch, ".")
	return kind, name, true
}

// SchedSubject is where a scheduled push waits: one subject per schedule
// (a schedule is the last message on its subject).
func SchedSubject(app, channel, id string) string {
	return schedPrefix + app + "." + channel + "." + id
}

// SchedWildcard matches every schedule of app.
func SchedWildcard(app string) string { return schedPrefix + app + ".>" }

// ParseSchedSubject splits a schedule subject into app, channel and id.
func ParseSchedSubject(subj string) (app, channel, id string, ok bool) {
	rest, ok := strings.CutPrefix(subj, schedPrefix)
	if !ok {
		return "", "", "", false
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 4 {
		return "", "", "", false
	}
	return parts[0], parts[1] + "." + parts[2], parts[3], true
}

// ChannelOfStored returns the app and channel of a stored subject.
func ChannelOfStored(subj string) (app, channel string, ok bool) {
	rest, ok := strings.CutPrefix(subj, storedPrefix)
	if !ok {
		return "", "", false
	}
	app, channel, ok = strings.Cut(rest, ".")
	return app, channel, ok
}

// UpSubject is where a device's upstream messages for app are stored.
func UpSubject(app string) string { return upPrefix + app }

// UpLiveSubject announces (headers only) each stored upstream message of app.
func UpLiveSubject(app string) string { return upLivePrefix + app }

// StoredSubject is where a channel's messages are stored. app and channel
// must be valid (config.ValidName, ParseChannel).
func StoredSubject(app, channel string) string { return storedPrefix + app + "." + channel }

// StoredSubjectForKey is StoredSubject for a ChannelKey.
func StoredSubjectForKey(key string) string { return storedPrefix + key }

// LiveSubject is where the stream republishes a channel's messages.
func LiveSubject(app, channel string) string { return livePrefix + app + "." + channel }

// LiveKey returns the "<app>.<channel>" part of a live subject without
// allocating, or false if subj is not a live subject.
func LiveKey(subj string) (string, bool) {
	if !strings.HasPrefix(subj, livePrefix) {
		return "", false
	}
	return subj[len(livePrefix):], true
}

// ChannelKey is the key a gateway uses for a channel of an app: "<app>.<channel>".
func ChannelKey(app, channel string) string { return app + "." + channel }

// CursorKey is the KV key of a device's cursor on a channel:
// "<app>.<user>.<device>.<kind>.<name>".
func CursorKey(app, user, device, channel string) string {
	return app + "." + user + "." + device + "." + channel
}
