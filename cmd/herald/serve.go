package main

import (
	"io"

	"herald/node"
)

func serve(args []string, stdout, stderr io.Writer) error {
	return runRole("serve", node.Roles{EmbeddedNATS: true, Dispatcher: true, Gateway: true}, args, stdout, stderr)
}

func gatewayCmd(args []string, stdout, stderr io.Writer) error {
	return runRole("gateway", node.Roles{Gateway: true}, args, stdout, stderr)
}

func dispatcherCmd(args []string, stdout, stderr io.Writer) error {
	return runRole("dispatcher", node.Roles{Dispatcher: true}, args, stdout, stderr)
}
