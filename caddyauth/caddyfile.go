package caddyauth

import (
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/scopegate/scopegate/caddyauth/internal/keyring"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("scoped_auth", parseCaddyfile)
	// Before basic_auth: after header, redir, rewrite and uri (so rules see
	// the path the upstream gets), before encode, templates and every
	// handler that serves or proxies.
	httpcaddyfile.RegisterDirectiveOrder("scoped_auth", httpcaddyfile.Before, "basic_auth")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	sa := new(ScopedAuth)
	err := sa.UnmarshalCaddyfile(h.Dispenser)
	return sa, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	scoped_auth [<matcher>] {
//		keys_file <path>                   # the keys file store, or:
//		redis <url>                        # the fleet store: redis://[user:password@]host:port/db, rediss:// for TLS
//		cache_ttl <duration>               # with redis: how long lookups are cached (default 30s)
//		header <name>                      # default Authorization ("Bearer <key>")
//		account header <name> | query <name> | path_segment <n> | placeholder <{placeholder}>
//		require_client_cert
//		strip_headers <name...>
//		strip_credentials on|off           # default on: the key header is removed
//		log_redaction_configured           # required with a header other than Authorization
//		shadow                             # deny nothing: log and count what would be denied
//		rule <methods|*> <path> <permission|authenticated|public>
//	}
//
// Exactly one of keys_file and redis is required. <methods> is a
// comma-separated list of upper-case methods (GET,HEAD) or *. Rules are
// tried in order; a request that matches none is denied.
func (h *ScopedAuth) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch opt := d.Val(); opt {
		case "keys_file":
			if !d.AllArgs(&h.KeysFile) {
				return d.ArgErr()
			}
			if h.Redis != "" {
				return d.Err("keys_file and redis are two key stores: set only one")
			}
		case "redis":
			if !d.AllArgs(&h.Redis) {
				return d.ArgErr()
			}
			if h.KeysFile != "" {
				return d.Err("keys_file and redis are two key stores: set only one")
			}
			if !strings.Contains(h.Redis, "{") { // a placeholder is checked when provisioning
				if _, err := keyring.ParseRedisURL(h.Redis); err != nil {
					return d.Err(err.Error())
				}
			}
		case "cache_ttl":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur < minCacheTTL {
				return d.Errf("cache_ttl %q: want a duration of at least %v, such as 30s", v, minCacheTTL)
			}
			h.CacheTTL = caddy.Duration(dur)
		case "header":
			if !d.AllArgs(&h.Header) {
				return d.ArgErr()
			}
			if !isPlainHeaderName(h.Header) {
				return d.Errf("header %q: want a header name of letters, digits and -", h.Header)
			}
		case "account":
			if err := h.unmarshalAccount(d); err != nil {
				return err
			}
		case "require_client_cert":
			if d.NextArg() {
				return d.ArgErr()
			}
			h.RequireClientCert = true
		case "strip_headers":
			names := d.RemainingArgs()
			if len(names) == 0 {
				return d.ArgErr()
			}
			for _, n := range names {
				if !isPlainHeaderName(n) {
					return d.Errf("strip_headers %q: want a header name of letters, digits and -", n)
				}
			}
			h.StripHeaders = append(h.StripHeaders, names...)
		case "strip_credentials":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			switch v {
			case "on":
				h.KeepCredentials = false
			case "off":
				h.KeepCredentials = true
			default:
				return d.Errf("strip_credentials %q: want on or off", v)
			}
		case "shadow":
			if d.NextArg() {
				return d.ArgErr()
			}
			h.Shadow = true
		case "log_redaction_configured":
			if d.NextArg() {
				return d.ArgErr()
			}
			h.LogRedactionConfigured = true
		case "rule":
			var methods, path, perm string
			if !d.AllArgs(&methods, &path, &perm) {
				return d.Errf("rule: want <methods|*> <path> <permission|authenticated|public>")
			}
			rule := Rule{Path: path, Permission: perm}
			if methods != "*" {
				rule.Methods = strings.Split(methods, ",")
			}
			if _, err := compileRule(len(h.Rules), rule); err != nil {
				return d.Err(err.Error())
			}
			h.Rules = append(h.Rules, rule)
		default:
			return d.Errf("unrecognized scoped_auth option %q", opt)
		}
	}
	if len(h.Rules) == 0 {
		return d.Err("scoped_auth needs at least one rule: a request that matches no rule is denied")
	}
	switch {
	case h.KeysFile == "" && h.Redis == "":
		return d.Err("scoped_auth needs a key store: keys_file <path> or redis <url>")
	case h.CacheTTL != 0 && h.Redis == "":
		return d.Err("cache_ttl applies to the redis store only (the keys file is held in memory)")
	}
	return nil
}

func (h *ScopedAuth) unmarshalAccount(d *caddyfile.Dispenser) error {
	var source, value string
	if !d.AllArgs(&source, &value) {
		return d.Errf("account: want header <name> | query <name> | path_segment <n> | placeholder <{placeholder}>")
	}
	a := new(AccountSource)
	switch source {
	case "header":
		if !isPlainHeaderName(value) {
			return d.Errf("account header %q: want a header name of letters, digits and -", value)
		}
		a.Header = value
	case "query":
		a.Query = value
	case "path_segment":
		n, err := strconv.Atoi(value)
		if err != nil || n < 1 {
			return d.Errf("account path_segment %q: want a segment number, 1 or more", value)
		}
		a.PathSegment = n
	case "placeholder":
		if !strings.HasPrefix(value, "{") || !strings.HasSuffix(value, "}") {
			return d.Errf("account placeholder %q: want a placeholder such as {vars.account}", value)
		}
		a.Placeholder = value
	default:
		return d.Errf("account source %q: want header, query, path_segment or placeholder", source)
	}
	h.Account = a
	return nil
}
