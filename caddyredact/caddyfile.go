package caddyredact

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"

	"github.com/scopegate/scopegate/internal/jsonmask"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("redact", parseCaddyfile)
	// Inside encode (so it sees and produces uncompressed bodies, and
	// encode compresses the masked result), before every handler that
	// serves or proxies.
	httpcaddyfile.RegisterDirectiveOrder("redact", httpcaddyfile.After, "encode")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	r := new(Redact)
	err := r.UnmarshalCaddyfile(h.Dispenser)
	return r, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	redact [<matcher>] {
//		preset     pii | none              # default pii: names, emails, phone numbers
//		fields     <name...>               # more member names, any depth
//		path       <json path...>          # $ .name [*] ** (any depth)
//		keep       <json path...>          # never masked
//		detect     email | phone ...       # mask matches inside any string
//		strategy   mask | partial | hash | null | remove
//		hash_key   <key>                   # for strategy hash, e.g. {env.REDACT_HASH_KEY}
//		expose_if  <placeholder>           # default {http.auth.key.pii}; only "true" exposes
//		pass_types <media type...>         # non-JSON types allowed through (default none)
//		max_buffer <size>                  # default 1MiB
//		vary       <header...>             # default Authorization: the key header
//	}
//
// With no options, every JSON response is masked with the pii preset
// unless the caller's key opted in.
func (h *Redact) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch opt := d.Val(); opt {
		case "preset":
			if !d.AllArgs(&h.Preset) {
				return d.ArgErr()
			}
			if h.Preset != "pii" && h.Preset != "none" {
				return d.Errf("preset %q: want pii or none", h.Preset)
			}
		case "fields":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			h.Fields = append(h.Fields, args...)
		case "path", "paths":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			h.Paths = append(h.Paths, args...)
		case "keep":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			h.Keep = append(h.Keep, args...)
		case "detect":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			for _, a := range args {
				if a != "email" && a != "phone" {
					return d.Errf("detect %q: want email or phone", a)
				}
			}
			h.Detect = append(h.Detect, args...)
		case "strategy":
			if !d.AllArgs(&h.Strategy) {
				return d.ArgErr()
			}
			if _, err := jsonmask.ParseStrategy(h.Strategy); err != nil {
				return d.Errf("strategy %q: want mask, partial, hash, null or remove", h.Strategy)
			}
		case "hash_key":
			if !d.AllArgs(&h.HashKey) {
				return d.ArgErr()
			}
		case "expose_if":
			if !d.AllArgs(&h.ExposeIf) {
				return d.ArgErr()
			}
		case "pass_types":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			h.PassTypes = append(h.PassTypes, args...)
		case "max_buffer":
			var size string
			if !d.AllArgs(&size) {
				return d.ArgErr()
			}
			n, err := humanize.ParseBytes(size)
			if err != nil || n == 0 || n > 1<<40 {
				return d.Errf("max_buffer %q: want a size such as 1MiB", size)
			}
			h.MaxBuffer = int64(n)
		case "vary":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			h.Vary = append(h.Vary, args...)
		default:
			return d.Errf("unrecognized redact option %q", opt)
		}
	}
	if h.Strategy == "hash" && h.HashKey == "" {
		return d.Err("strategy hash needs hash_key")
	}
	// Paths and keep are compiled now so that a bad one fails adaptation
	// with its line, not only at provision.
	if _, err := jsonmask.Compile(jsonmask.Options{Preset: h.Preset, Fields: h.Fields, Paths: h.Paths, Keep: h.Keep, Detect: h.Detect, Strategy: h.Strategy, HashKey: []byte(h.HashKey)}); err != nil {
		return d.Err(err.Error())
	}
	return nil
}
