package caddyredact

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// ServeHTTP masks the response of next, unless expose_if says "true".
func (h *Redact) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) (err error) {
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if repl != nil {
		repl.Set("http.redact.fields", 0)
		// Only the exact string "true" exposes: "True", "1", " true" mask.
		if repl.ReplaceAll(h.ExposeIf, "") == "true" {
			return next.ServeHTTP(&exposeWriter{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w}, h: h}, r)
		}
	}

	// A protocol upgrade carries no JSON to mask: refused before anything
	// reaches the upstream.
	if r.Header.Get("Upgrade") != "" || r.Method == http.MethodConnect {
		return caddyhttp.Error(http.StatusBadGateway, errors.New("redact: protocol upgrade refused"))
	}
	// Ask for plain, whole bodies: no compression to undo (a still-encoded
	// body is decoded anyway) and never a 206 slice.
	r.Header.Set("Accept-Encoding", "identity")
	r.Header.Del("Range")
	r.Header.Del("If-Range")
	// A masked response never carries the upstream's validators, so a
	// legitimate client has none to send; one it learned elsewhere would
	// turn 304/412 into an oracle that confirms a guessed ETag or date of
	// the unmasked body. On reads, the conditionals go. On writes,
	// If-Match and If-Unmodified-Since stay: they protect against lost
	// updates, and answering them needs the write permission anyway.
	r.Header.Del("If-None-Match")
	r.Header.Del("If-Modified-Since")
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		r.Header.Del("If-Match")
		r.Header.Del("If-Unmodified-Since")
	}

	mw := newMaskWriter(w, r, h)
	defer mw.release()
	defer func() {
		// reverse_proxy panics with http.ErrAbortHandler when copying fails
		// (our Write refused the body, or the upstream broke off). Before
		// anything was sent, that becomes a clean 502.
		if rec := recover(); rec != nil {
			_ = mw.stopDecoder(errUpstreamAborted) // first: it may still own the output
			if rec == http.ErrAbortHandler && !mw.committed {
				err = mw.refuse(mw.errOr(errUpstreamAborted))
				return
			}
			panic(rec)
		}
	}()

	nextErr := next.ServeHTTP(mw, r)
	err = mw.finish(nextErr)
	h.account(mw, repl)
	return err
}

// account sets {http.redact.fields} and the metrics.
func (h *Redact) account(mw *maskWriter, repl *caddy.Replacer) {
	if mw.stream == nil {
		return
	}
	st := mw.stream.Stats()
	if repl != nil {
		repl.Set("http.redact.fields", st.Fields)
	}
	redactFieldsTotal.Add(float64(st.Fields))
	redactBytesTotal.Add(float64(st.BytesIn))
}

// logRefusal logs why a body was refused. The error never quotes body bytes.
func (h *Redact) logRefusal(r *http.Request, status int, cause error) {
	if c := h.logger.Check(zap.WarnLevel, "response refused"); c != nil {
		c.Write(zap.Int("upstream_status", status), zap.String("uri", r.RequestURI), zap.Error(cause))
	}
}

var errUpstreamAborted = errors.New("redact: upstream response aborted")

var errNotJSON = fmt.Errorf("redact: body is not JSON and its media type is not in pass_types")
