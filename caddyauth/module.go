// Package caddyauth is the scoped_auth HTTP handler: scoped API keys,
// sub-accounts and keys bound to verified TLS client certificates, in front
// of any Caddy handler.
package caddyauth

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/scopegate/scopegate/caddyauth/internal/keyring"
)

func init() {
	caddy.RegisterModule(ScopedAuth{})
}

// ScopedAuth authenticates requests with scoped API keys (or verified
// client certificates) and authorizes them against ordered rules. A request
// that matches no rule is denied. See SPEC section 3 and the README.
type ScopedAuth struct {
	// KeysFile is the path of the keys file ({"keys": [record, …]}, and
	// optionally "denied_certs": [entry, …], the client-certificate
	// denylist). It is loaded at start (a bad file stops Caddy) and re-read
	// about once a second when it changes (a bad file then keeps the last
	// good set).
	KeysFile string `json:"keys_file,omitempty"`

	// Redis is the URL of the fleet key store (SPEC section 5), instead of
	// KeysFile (exactly one of the two is required):
	// redis://[user:password@]host:port/db, or rediss://… for TLS (the
	// server's certificate is verified against the system roots).
	// Placeholders such as {env.REDIS_URL} are expanded. Records live at
	// scopegate:key:<id>; every instance caches lookups for CacheTTL and
	// drops an entry when its change is announced on scopegate:keys. The
	// client-certificate denylist (scopegate:denied_certs) is held whole in
	// memory and read again on every change and every CacheTTL.
	// Caddy starts while Redis is down; uncached keys then get 503
	// store_unavailable until it is back.
	Redis string `json:"redis,omitempty"`

	// CacheTTL is how long a Redis lookup (a key, or the fact that an id
	// does not exist) is cached, when no announcement evicts it earlier.
	// It bounds how long a change whose announcement was lost, and how
	// long a key cached before Redis became unreachable, keep being used.
	// Default 30s; at least 100ms. Only with Redis.
	CacheTTL caddy.Duration `json:"cache_ttl,omitempty"`

	// Header is the request header that carries the key. Default
	// "Authorization", which takes "Bearer <key>"; any other header takes
	// the raw key and needs LogRedactionConfigured, because Caddy's access
	// log redacts only Authorization.
	Header string `json:"header,omitempty"`

	// Account says where a request names the sub-account it acts on.
	// Without it, no request names an account, and keys restricted to
	// accounts are refused on every non-public rule.
	Account *AccountSource `json:"account,omitempty"`

	// RequireClientCert refuses every non-public request that did not
	// present a client certificate verified by Caddy's TLS client_auth.
	RequireClientCert bool `json:"require_client_cert,omitempty"`

	// StripHeaders lists inbound headers to delete on every request: the
	// names the operator sets with header_up, so a client cannot forge them.
	StripHeaders []string `json:"strip_headers,omitempty"`

	// KeepCredentials forwards the key header to the next handler. By
	// default it is removed. (Caddyfile: strip_credentials off.)
	KeepCredentials bool `json:"keep_credentials,omitempty"`

	// LogRedactionConfigured confirms that a custom Header is hidden from
	// the access log by a log filter (see the README). Required when
	// Header is not Authorization.
	LogRedactionConfigured bool `json:"log_redaction_configured,omitempty"`

	// Shadow evaluates every request as usual but denies none: a request
	// that would be denied is logged at WARN ("request would be denied"),
	// counted as scopegate_auth_requests_total{result="shadow_<code>"},
	// stripped of the key and forged identity headers, and passed on with
	// empty http.auth.* placeholders. For rolling out new rules; it
	// enforces nothing, so it is off unless set explicitly.
	Shadow bool `json:"shadow,omitempty"`

	// Rules are tried in order; the first whose methods and path match
	// decides the permission a request needs. At least one is required.
	Rules []Rule `json:"rules,omitempty"`

	store       keyring.Store
	fileStore   *keyring.FileStore
	redisKey    string // this handler's reference in redisStores
	rules       []*compiledRule
	keyHeader   string // canonical
	bearer      bool
	keyFold     string
	accountFold string
	stripSet    map[string]struct{} // canonical names deleted on every request (not the key header)
	logger      *zap.Logger
}

// AccountSource names where the account comes from; exactly one field is set.
type AccountSource struct {
	// Header reads the account from this request header.
	Header string `json:"header,omitempty"`
	// Query reads it from this query parameter.
	Query string `json:"query,omitempty"`
	// PathSegment reads it from this 1-based segment of the decoded path
	// (empty segments are not counted).
	PathSegment int `json:"path_segment,omitempty"`
	// Placeholder reads it from a placeholder, e.g. {vars.account}.
	Placeholder string `json:"placeholder,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (ScopedAuth) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.scoped_auth",
		New: func() caddy.Module { return new(ScopedAuth) },
	}
}

// Provision compiles the rules and opens the key store.
func (h *ScopedAuth) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return err
	}
	if err := h.provisionRequest(); err != nil {
		return err
	}
	if err := h.provisionRules(); err != nil {
		return err
	}
	if h.Shadow {
		h.logger.Warn("shadow mode: scoped_auth logs and counts what it would deny, and denies nothing")
	}
	return h.provisionStore(ctx)
}

func (h *ScopedAuth) provisionRequest() error {
	header := h.Header
	if header == "" {
		header = "Authorization"
	}
	if !isPlainHeaderName(header) {
		return fmt.Errorf("header %q: want a header name of letters, digits and -", header)
	}
	h.keyHeader = http.CanonicalHeaderKey(header)
	h.bearer = h.keyHeader == "Authorization"
	if !h.bearer && !h.LogRedactionConfigured {
		return fmt.Errorf("header %s: Caddy's access log records this header in clear; add a log filter that hides it, e.g.\n"+
			"\tlog {\n\t\tformat filter {\n\t\t\trequest>headers>%s delete\n\t\t}\n\t}\n"+
			"and then say log_redaction_configured in the scoped_auth block", h.keyHeader, h.keyHeader)
	}
	h.keyFold = foldHeaderName(h.keyHeader)
	if a := h.Account; a != nil {
		set := 0
		for _, b := range []bool{a.Header != "", a.Query != "", a.PathSegment != 0, a.Placeholder != ""} {
			if b {
				set++
			}
		}
		if set != 1 {
			return fmt.Errorf("account: set exactly one of header, query, path_segment, placeholder")
		}
		switch {
		case a.Header != "":
			if !isPlainHeaderName(a.Header) {
				return fmt.Errorf("account header %q: want letters, digits and -", a.Header)
			}
			a.Header = http.CanonicalHeaderKey(a.Header)
			h.accountFold = foldHeaderName(a.Header)
			if h.accountFold == h.keyFold {
				return fmt.Errorf("account header %s is the key header", a.Header)
			}
		case a.PathSegment < 0:
			return fmt.Errorf("account path_segment %d: want a positive segment number", a.PathSegment)
		case a.Placeholder != "":
			if !strings.HasPrefix(a.Placeholder, "{") || !strings.HasSuffix(a.Placeholder, "}") {
				return fmt.Errorf("account placeholder %q: want a placeholder such as {vars.account}", a.Placeholder)
			}
		}
	}
	h.stripSet = make(map[string]struct{}, len(h.StripHeaders)+len(certForwardingHeaders))
	for _, name := range h.StripHeaders {
		if !isPlainHeaderName(name) {
			return fmt.Errorf("strip_headers %q: want a header name of letters, digits and -", name)
		}
		h.stripSet[http.CanonicalHeaderKey(name)] = struct{}{}
	}
	for _, name := range certForwardingHeaders {
		h.stripSet[name] = struct{}{}
	}
	delete(h.stripSet, h.keyHeader) // deleted unless keep_credentials
	return nil
}

func (h *ScopedAuth) provisionRules() error {
	if len(h.Rules) == 0 {
		return fmt.Errorf("no rules: scoped_auth denies every request that matches no rule, so at least one rule is required")
	}
	h.rules = h.rules[:0]
	for i, r := range h.Rules {
		cr, err := compileRule(i, r)
		if err != nil {
			return err
		}
		h.rules = append(h.rules, cr)
	}
	for j, later := range h.rules {
		for _, earlier := range h.rules[:j] {
			if earlier.shadows(later) {
				h.logger.Warn("rule can never match: an earlier rule matches every request it would",
					zap.Int("rule", later.index), zap.String("path", later.src.Path),
					zap.Int("shadowed_by", earlier.index), zap.String("shadowed_by_path", earlier.src.Path))
				break
			}
		}
		if later.kind == patternPrefix && later.pattern != "" && !strings.HasSuffix(later.pattern, "/") {
			h.logger.Info("prefix rule also matches longer names in the same segment",
				zap.Int("rule", later.index), zap.String("path", later.src.Path),
				zap.String("example", later.pattern+"x"))
		}
	}
	return nil
}

func (h *ScopedAuth) provisionStore(ctx caddy.Context) error {
	switch {
	case h.KeysFile != "" && h.Redis != "":
		return fmt.Errorf("keys_file and redis are two key stores: set only one")
	case h.CacheTTL != 0 && h.Redis == "":
		return fmt.Errorf("cache_ttl applies to the redis store only (the keys file is held in memory)")
	case h.Redis != "":
		return h.provisionRedis()
	case h.KeysFile == "":
		return fmt.Errorf("no key store: set keys_file or redis")
	}
	path := caddy.NewReplacer().ReplaceKnown(h.KeysFile, "")
	fs, err := keyring.OpenFileStore(path)
	if err != nil {
		return err
	}
	for _, w := range fs.Current().Warnings {
		h.logger.Warn(w, zap.String("keys_file", path))
	}
	fs.OnReload = func(s *keyring.Set) {
		h.logger.Info("keys file reloaded", zap.String("keys_file", path), zap.Int("keys", s.Len()),
			zap.Int("denied_certs", s.Denylist().Len()))
		for _, w := range s.Warnings {
			h.logger.Warn(w, zap.String("keys_file", path))
		}
	}
	fs.OnError = func(err error) {
		keysFileErrorTotal.Inc()
		h.logger.Error("keys file not loaded; keeping the last good set", zap.Error(err))
	}
	go fs.Watch(ctx, keysFilePollInterval)
	h.fileStore, h.store = fs, fs
	return nil
}

// keysFilePollInterval is how often the keys file is checked for changes.
var keysFilePollInterval = time.Second

// Validate is called after Provision; everything is checked there, where
// the error can name the rule or the file.
func (h *ScopedAuth) Validate() error {
	if h.store == nil {
		return fmt.Errorf("scoped_auth was not provisioned")
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*ScopedAuth)(nil)
	_ caddy.Validator             = (*ScopedAuth)(nil)
	_ caddy.CleanerUpper          = (*ScopedAuth)(nil)
	_ caddyhttp.MiddlewareHandler = (*ScopedAuth)(nil)
	_ caddyfile.Unmarshaler       = (*ScopedAuth)(nil)
)
