package caddyauth

import (
	"crypto/x509"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/scopegate/scopegate/caddyauth/internal/keyring"
)

// now is the clock, replaced in tests.
var now = time.Now

// clock reads the time at most once per request, and only for keys whose
// checks depend on it.
type clock struct {
	t   time.Time
	set bool
}

func (c *clock) forKey(k *keyring.Key) time.Time {
	if !k.NeedsClock() {
		return time.Time{}
	}
	if !c.set {
		c.t, c.set = now(), true
	}
	return c.t
}

// request is what one request presented, gathered once by the checks.
type request struct {
	key        string
	hasKey     bool
	account    string
	hasAccount bool
	// stripHeaders: some header must be stripped besides the key header (a
	// strip_headers or certificate-forwarding name, or a name with other
	// characters than letters, digits and "-").
	stripHeaders bool
}

// ServeHTTP judges the request (SPEC section 3, "Order of checks": the first
// failure wins) and calls next only when it is allowed.
func (h *ScopedAuth) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)

	// (1) ambiguous requests
	req, reason := h.inspect(r, repl)
	if reason != "" {
		return h.deny(w, r, next, badRequest, denial{reason: reason})
	}
	// (2) early data: the handshake is not complete and the request could
	// be a replay.
	if r.TLS != nil && !r.TLS.HandshakeComplete && r.Method != http.MethodGet &&
		r.Method != http.MethodHead && r.Method != http.MethodOptions {
		return h.deny(w, r, next, tooEarly, denial{})
	}
	h.stripInbound(r, req.stripHeaders)

	// (3) the rule
	rule := h.matchRule(r.Method, r.URL.Path)
	if rule == nil {
		return h.deny(w, r, next, noMatchingRule, denial{})
	}
	// (3a) a denylisted certificate in the verified chain: refused on
	// every rule, public ones included, as if its handshake had failed.
	// A store that has never loaded its denylist (Redis unreadable since
	// start) cannot say: fail closed, 503 as for an uncached key.
	if c, unknown := h.deniedCert(r); unknown {
		return h.deny(w, r, next, storeUnavailable, denial{rule: rule, account: req.account, err: errDenylistNotLoaded})
	} else if c != nil {
		return h.deny(w, r, next, certRevoked, denial{rule: rule, account: req.account,
			deniedCert: keyring.HexDigest(keyring.LeafSHA256(c))})
	}
	// (4) public: no key needed, none looked at
	if rule.public {
		publicCounter.Inc()
		if repl != nil {
			repl.Map(emptyAuthPlaceholders)
		}
		return next.ServeHTTP(w, r)
	}
	d := denial{rule: rule, account: req.account}

	// (5) a verified client certificate, when required
	chain := verifiedChain(r)
	if h.RequireClientCert && chain == nil {
		return h.deny(w, r, next, certRequired, d)
	}

	// (6) the key, or else a certificate principal
	var clk clock
	var key *keyring.Key
	switch {
	case req.hasKey:
		k, o, err := h.authenticateKey(r, req.key, &clk)
		if o != nil {
			if k != nil {
				d.keyID = k.ID
			}
			d.err = err
			return h.deny(w, r, next, o, d)
		}
		key = k
	case chain != nil:
		k, err := h.store.LookupPrincipal(r.Context(), chain)
		if err != nil {
			d.err = err
			return h.deny(w, r, next, storeUnavailable, d)
		}
		if k == nil {
			return h.deny(w, r, next, missingKey, d)
		}
		key = k
	default:
		return h.deny(w, r, next, missingKey, d)
	}
	d.keyID = key.ID

	// (7) the key's certificate binding
	if b := key.Binding(); b != nil {
		if chain == nil {
			return h.deny(w, r, next, certRequired, d)
		}
		if !b.Matches(chain) {
			return h.deny(w, r, next, certMismatch, d)
		}
	}
	// (8) disabled, not yet valid, expired
	if !key.ValidAt(clk.forKey(key)) {
		return h.deny(w, r, next, invalidKey, d)
	}
	// (9) the permission
	if !rule.authOnly && !key.Grants(rule.perm) {
		return h.deny(w, r, next, insufficientScope, d)
	}
	// (10) the account
	if !key.AllowsAccount(req.account) {
		return h.deny(w, r, next, accountForbidden, d)
	}

	allowedCounter.Inc()
	if repl != nil {
		setAuthPlaceholders(repl, key, rule, req.account)
	}
	return next.ServeHTTP(w, r)
}

// authenticateKey checks the presented key's shape and checksum before any
// store lookup, then its secret in constant time. The returned key is set
// whenever the id is known (for the denial log), even on failure.
func (h *ScopedAuth) authenticateKey(r *http.Request, presented string, clk *clock) (*keyring.Key, *outcome, error) {
	sum := keyring.HashKey(presented) // hashed even when malformed: the cost does not depend on the key
	id, ok := keyring.ParseKey(presented)
	if !ok {
		return nil, invalidKey, nil
	}
	k, err := h.store.Lookup(r.Context(), id)
	if err != nil {
		return nil, storeUnavailable, err // the store's error goes into the denial line
	}
	if k == nil || k.IsPrincipal() {
		return nil, invalidKey, nil
	}
	match, previous := k.CheckSecret(&sum, clk.forKey(k))
	if !match {
		return k, invalidKey, nil
	}
	if previous {
		if c := h.logger.Check(zapcore.InfoLevel, "previous secret used during rotation grace period"); c != nil {
			c.Write(zap.String("key_id", k.ID))
		}
	}
	return k, nil, nil
}

func (h *ScopedAuth) matchRule(method, path string) *compiledRule {
	for _, cr := range h.rules {
		if cr.matches(method, path) {
			return cr
		}
	}
	return nil
}

// deniedCert returns the certificate of the request's verified chains that
// the store's denylist names, or nil. Only verified chains count (an
// unverified certificate authenticates nothing anyway), but unlike
// verifiedChain also on early data (0-RTT), whose chains were verified in
// the handshake it resumes: a denied certificate gets nothing. An empty
// denylist costs one atomic load. unknown is true when the request has a
// verified chain but the store has not loaded its denylist yet.
func (h *ScopedAuth) deniedCert(r *http.Request) (c *x509.Certificate, unknown bool) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		return nil, false
	}
	src, ok := h.store.(keyring.DenylistSource)
	if !ok {
		return nil, false
	}
	d := src.Denylist()
	if d == nil {
		return nil, true
	}
	return d.Denied(r.TLS.VerifiedChains), false
}

// errDenylistNotLoaded is logged with the 503 of a request whose
// certificate could not be checked against the denylist.
var errDenylistNotLoaded = errors.New("the client-certificate denylist has not been loaded from the store yet")

// verifiedChain returns the chain Caddy's TLS verified for this request, or
// nil. Peer certificates that were not verified (client_auth mode request
// or require) never count.
func verifiedChain(r *http.Request) []*x509.Certificate {
	if r.TLS == nil || !r.TLS.HandshakeComplete || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return nil
	}
	return r.TLS.VerifiedChains[0]
}

// inspect applies the 400 catalogue to the original and the current request
// and reads the key and the account. A non-empty reason means 400.
func (h *ScopedAuth) inspect(r *http.Request, repl *caddy.Replacer) (req request, reason string) {
	if reason = checkMethod(r.Method); reason != "" {
		return
	}
	if or, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok && or.URL != nil &&
		(or.URL.Path != r.URL.Path || or.URL.RawPath != r.URL.RawPath || or.URL.RawQuery != r.URL.RawQuery || or.URL.Opaque != r.URL.Opaque) {
		// Rewritten since the request arrived: the original is judged too.
		if reason = checkURL(or.URL); reason != "" {
			return
		}
		if reason = checkQuery(or.URL.RawQuery); reason != "" {
			return
		}
	}
	if reason = checkURL(r.URL); reason != "" {
		return
	}
	if reason = checkQuery(r.URL.RawQuery); reason != "" {
		return
	}
	// One pass over the headers: method and URL overrides, Connection
	// tokens, aliases of the key or account header (X~Account~Id,
	// XAccountID: a second value in another form), and whether anything
	// must be stripped.
	for name, vals := range r.Header {
		switch name {
		case h.keyHeader:
			continue
		case "Connection":
			if reason = checkConnection(vals); reason != "" {
				return
			}
			continue
		case "X-Http-Method-Override", "X-Http-Method", "X-Method-Override", "X-Original-Url", "X-Rewrite-Url":
			return req, reasonOverride
		}
		if h.Account != nil && name == h.Account.Header {
			continue
		}
		if _, listed := h.stripSet[name]; listed || !isPlainHeaderName(name) {
			req.stripHeaders = true
		}
		if foldedEqual(name, h.keyFold) {
			return req, reasonKeyMulti
		}
		if h.accountFold != "" && foldedEqual(name, h.accountFold) {
			return req, reasonAccountMulti
		}
	}

	switch vals := r.Header[h.keyHeader]; len(vals) {
	case 0:
	case 1:
		req.key, req.hasKey = vals[0], true
		if h.bearer {
			if len(req.key) > 7 && strings.EqualFold(req.key[:7], "bearer ") {
				req.key = req.key[7:]
			} else {
				req.key = "" // another scheme: a credential, but not a key
			}
		}
		if strings.IndexByte(vals[0], ',') >= 0 || !keyring.CleanValue(req.key) {
			return req, reasonKeyChars
		}
	default:
		return req, reasonKeyMulti
	}

	if a := h.Account; a != nil {
		switch {
		case a.Header != "":
			switch vals := r.Header[a.Header]; len(vals) {
			case 0:
			case 1:
				req.account, req.hasAccount = vals[0], true
			default:
				return req, reasonAccountMulti
			}
		case a.Query != "":
			v, found, ambiguous := queryValues(r.URL.RawQuery, a.Query)
			if ambiguous {
				return req, reasonAccountMulti
			}
			req.account, req.hasAccount = v, found
		case a.PathSegment > 0:
			req.account, req.hasAccount = pathSegment(r.URL.Path, a.PathSegment)
		case a.Placeholder != "" && repl != nil:
			req.account = repl.ReplaceAll(a.Placeholder, "")
			req.hasAccount = req.account != ""
		}
		if req.hasAccount && (req.account == "" || !keyring.CleanValue(req.account)) {
			return req, reasonAccountChars
		}
	}
	return req, ""
}

// pathSegment returns the n-th (1-based) non-empty segment of a decoded path.
func pathSegment(p string, n int) (string, bool) {
	for p != "" {
		p = strings.TrimLeft(p, "/")
		if p == "" {
			break
		}
		seg := p
		if i := strings.IndexByte(p, '/'); i >= 0 {
			seg, p = p[:i], p[i:]
		} else {
			p = ""
		}
		n--
		if n == 0 {
			return seg, true
		}
	}
	return "", false
}

// stripInbound deletes, on every request, the inbound headers that could
// carry a forged identity to the upstream: the key itself (unless
// keep_credentials), names with characters other than letters, digits and
// "-", the certificate-forwarding headers, and strip_headers. inspect
// already looked at every name, so the common request with none of them
// costs one delete.
func (h *ScopedAuth) stripInbound(r *http.Request, more bool) {
	if !h.KeepCredentials {
		delete(r.Header, h.keyHeader)
	}
	if !more {
		return
	}
	for name := range r.Header {
		if _, listed := h.stripSet[name]; listed || !isPlainHeaderName(name) {
			delete(r.Header, name)
		}
	}
}
