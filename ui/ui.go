// Package ui holds the web dashboard and the browser demo device, embedded
// in the binary (no build step): plain HTML, CSS and JavaScript, served by
// the dispatcher under /ui/.
package ui

import (
	"embed"
	"io/fs"
)

//go:embed static
var static embed.FS

// Files are the assets: index.html (the dashboard), demo.html (a device in
// the browser), herald.js (the device protocol), style.css.
var Files, _ = fs.Sub(static, "static")
