package offline

import (
	"strings"

	"herald/config"
)

// Subject layout. Every subject herald uses is built here and nowhere else.
//
//	herald.ch.<app>.<kind>.<name>    stored messages (stream HERALD)
//	herald.live.<app>.<kind>.<name>  the stream's RePublish of each stored message
//	herald.sched.<app>.<kind>.<name> scheduled pushes (stored, not republished)
//
// kind is "u" for a user channel and "t" for a topic.
const (
	StreamName     = "HERALD"
	storedPrefix   = "herald.ch."
	livePrefix     = "herald.live."
	schedPrefix    = "herald.sched."
	CursorsBucket  = "herald-cursors"
	AppsBucket     = "herald-apps"
	KindUser       = "u"
	KindTopic      = "t"
	LiveWildcard   = livePrefix + ">"
	StoredWildcard = storedPrefix + ">"
)

// UserChannel is the channel name of a user: "u.<user>".
func UserChannel(user string) string { return KindUser + "." + user }

// ParseChannel splits a channel name "u.alice" into kind and name and
// reports whether it is valid.
func ParseChannel(ch string) (kind, name string, ok bool) {
	kind, name, ok = strings.Cut(ch, ".")
	if !ok || (kind != KindUser && kind != KindTopic) || !config.ValidName(name) {
		return "", "", false
	}
	return kind, name, true
}

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
