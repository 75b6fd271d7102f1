package dispatcher

import (
	"encoding/json"

	"github.com/valyala/fasthttp"
)

// apiError is the body of every error answer:
// {"error": {"code": "...", "message": "..."}}. Messages never echo keys or tokens.
type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeError(ctx *fasthttp.RequestCtx, status int, code, message string) {
	var e apiError
	e.Error.Code, e.Error.Message = code, message
	writeJSON(ctx, status, &e)
}

func writeJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	b, err := json.Marshal(v)
	if err != nil {
		ctx.SetStatusCode(fasthttp.StatusInternalServerError)
		ctx.SetBodyString(`{"error":{"code":"internal","message":"cannot encode the answer"}}`)
		return
	}
	ctx.SetBody(append(b, '\n'))
}
