// Package caddyredact is the redact HTTP handler: it masks PII in JSON
// responses (names, emails and phone numbers by default) unless the caller
// opted in, streaming with bounded memory and failing closed.
package caddyredact

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/scopegate/scopegate/internal/jsonmask"
)

func init() {
	caddy.RegisterModule(Redact{})
}

// Redact masks personal data in JSON response bodies (SPEC section 6).
// Every JSON response that passes through is masked unless ExposeIf
// evaluates to exactly "true"; any other non-empty body is refused with 502
// unless its media type is listed in PassTypes.
type Redact struct {
	// Preset is the built-in field list: "pii" (the default: names, emails
	// and phone numbers) or "none". Fields and Paths add to it.
	Preset string `json:"preset,omitempty"`

	// Fields are more member names to mask at any depth, matched after
	// normalising (escapes decoded, case folded, "_", "-", "." and spaces
	// removed).
	Fields []string `json:"fields,omitempty"`

	// Paths select values by position: $, .name, [*], ** (any depth).
	Paths []string `json:"paths,omitempty"`

	// Keep lists paths that are never masked; they override Fields, Paths,
	// the preset and the detectors.
	Keep []string `json:"keep,omitempty"`

	// Detect lists detectors that mask matching substrings inside any
	// string value, member names included: "email", "phone".
	Detect []string `json:"detect,omitempty"`

	// Strategy is how a value is masked: mask (default, "[REDACTED]"),
	// partial, hash, null or remove.
	Strategy string `json:"strategy,omitempty"`

	// HashKey is the HMAC key of the hash strategy (its UTF-8 bytes).
	// Placeholders known at start-up, such as {env.REDACT_HASH_KEY}, are
	// expanded.
	HashKey string `json:"hash_key,omitempty"`

	// ExposeIf is evaluated per request; the body is left unmasked only if
	// it is exactly "true". Default {http.auth.key.pii}, which scoped_auth
	// sets from the key record's "pii".
	ExposeIf string `json:"expose_if,omitempty"`

	// PassTypes lists non-JSON media types (type/subtype, or type/*) that
	// may pass unmasked. By default none: any other non-empty body, a 206 or
	// a protocol upgrade is refused with 502.
	PassTypes []string `json:"pass_types,omitempty"`

	// MaxBuffer is how many bytes of a body are buffered before masked
	// output starts streaming (default 1 MiB). Invalid JSON found within
	// the buffer becomes a clean 502; after it, the response is aborted.
	MaxBuffer int64 `json:"max_buffer,omitempty"`

	// Vary lists the request headers a masked or exposed response varies
	// by: the header that carries the key. Default ["Authorization"].
	Vary []string `json:"vary,omitempty"`

	mask      *jsonmask.Config
	passTypes []string // lower case; "type/" for type/*
	vary      string
	logger    *zap.Logger
}

// DefaultMaxBuffer is MaxBuffer's default.
const DefaultMaxBuffer = 1 << 20

// CaddyModule returns the Caddy module information.
func (Redact) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.redact",
		New: func() caddy.Module { return new(Redact) },
	}
}

// Provision compiles the masking policy.
func (h *Redact) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return err
	}
	if h.ExposeIf == "" {
		h.ExposeIf = "{http.auth.key.pii}"
	}
	if h.MaxBuffer == 0 {
		h.MaxBuffer = DefaultMaxBuffer
	}
	if h.MaxBuffer < 0 {
		return fmt.Errorf("max_buffer must not be negative")
	}
	var hashKey []byte
	if h.HashKey != "" {
		hashKey = []byte(caddy.NewReplacer().ReplaceKnown(h.HashKey, ""))
		if len(hashKey) == 0 {
			return fmt.Errorf("hash_key %q is empty once expanded", h.HashKey)
		}
	}
	mask, err := jsonmask.Compile(jsonmask.Options{
		Preset:   h.Preset,
		Fields:   h.Fields,
		Paths:    h.Paths,
		Keep:     h.Keep,
		Detect:   h.Detect,
		Strategy: h.Strategy,
		HashKey:  hashKey,
	})
	if err != nil {
		return err
	}
	h.mask = mask
	h.passTypes = h.passTypes[:0]
	for _, t := range h.PassTypes {
		t = strings.ToLower(strings.TrimSpace(t))
		typ, sub, ok := strings.Cut(t, "/")
		if !ok || typ == "" || sub == "" || typ == "*" || strings.ContainsAny(t, " ;,") {
			return fmt.Errorf("pass_types %q: want a media type such as text/csv or image/*", t)
		}
		if isJSONFamily(t) {
			return fmt.Errorf("pass_types %q: JSON is always masked; use expose_if or preset none to let it through", t)
		}
		if sub == "*" {
			t = typ + "/"
		}
		h.passTypes = append(h.passTypes, t)
	}
	vary := h.Vary
	if len(vary) == 0 {
		vary = []string{"Authorization"}
	}
	for i, v := range vary {
		vary[i] = http.CanonicalHeaderKey(v)
	}
	h.vary = strings.Join(vary, ", ")
	return nil
}

// Validate is called after Provision.
func (h *Redact) Validate() error {
	if h.mask == nil {
		return fmt.Errorf("redact was not provisioned")
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Redact)(nil)
	_ caddy.Validator             = (*Redact)(nil)
	_ caddyhttp.MiddlewareHandler = (*Redact)(nil)
	_ caddyfile.Unmarshaler       = (*Redact)(nil)
)
