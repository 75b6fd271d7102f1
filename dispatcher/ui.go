package dispatcher

import (
	"io/fs"
	"path"
	"strings"

	"github.com/valyala/fasthttp"

	"herald/ui"
)

// serveUI serves the embedded dashboard (/ui/) and demo device (/ui/demo).
// The pages are static; what they show comes from the admin and publish
// APIs with the keys the user types, so serving them needs no key.
func (ds *Dispatcher) serveUI(ctx *fasthttp.RequestCtx, p string) {
	if !ctx.IsGet() && !ctx.IsHead() {
		ds.methodNotAllowed(ctx, "GET")
		return
	}
	name := strings.TrimPrefix(p, "/ui/")
	switch name {
	case "", "index.html":
		name = "index.html"
	case "demo":
		name = "demo.html"
	}
	if p == "/ui" {
		ctx.Redirect("/ui/", fasthttp.StatusMovedPermanently)
		return
	}
	b, err := fs.ReadFile(ui.Files, name)
	if err != nil || strings.Contains(name, "/") {
		writeError(ctx, fasthttp.StatusNotFound, "not_found", "no such page: "+quote(p))
		return
	}
	switch path.Ext(name) {
	case ".html":
		ctx.SetContentType("text/html; charset=utf-8")
	case ".js":
		ctx.SetContentType("text/javascript; charset=utf-8")
	case ".css":
		ctx.SetContentType("text/css; charset=utf-8")
	}
	h := &ctx.Response.Header
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self' 'unsafe-inline'; connect-src 'self' ws: wss:; img-src 'self' data:")
	ctx.SetBody(b)
}
