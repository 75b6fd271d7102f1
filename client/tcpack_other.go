//go:build !linux

package client

const quickAckSupported = false

func quickAckOff(uintptr) {}
