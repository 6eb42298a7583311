package caddyauth

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/http"
	neturl "net/url"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/scopegate/scopegate/caddyauth/internal/keyring"
)

// explainChecks are the handler's checks in its order (SPEC section 3,
// "Order of checks"; ServeHTTP in handler.go). Each entry decides with the
// module's own code and says why. A new check of the handler is one more
// entry here, at its place (as the certificate denylist, 3a, was).
var explainChecks = []explainCheck{
	{"request", (*explainRun).checkRequest},         // (1) 400 catalogue
	{"early data", (*explainRun).checkEarlyData},    // (2) 425
	{"rule", (*explainRun).checkRule},               // (3) no_matching_rule
	{"cert denylist", (*explainRun).checkDenylist},  // (3a) client_certificate_revoked
	{"public", (*explainRun).checkPublic},           // (4) public passes
	{"client cert", (*explainRun).checkRequireCert}, // (5) require_client_cert
	{"key", (*explainRun).checkKey},                 // (6) key, else principal, else missing_key
	{"cert binding", (*explainRun).checkBinding},    // (7)
	{"validity", (*explainRun).checkValidity},       // (8) disabled, not yet valid, expired
	{"permission", (*explainRun).checkPermission},   // (9)
	{"account", (*explainRun).checkAccount},         // (10)
}

// explainCheck is one check: its name in the output and its test.
type explainCheck struct {
	name string
	run  func(*explainRun) explainStep
}

// explainStep is what one check found.
type explainStep struct {
	status string   // "ok", "FAIL" or "skip"
	detail string   // why, for the operator
	deny   *outcome // set with FAIL: the handler's answer
	allow  bool     // the check lets the request through without the later ones (public)
	hint   string   // with FAIL: how to fix it
}

func stepOK(format string, args ...any) explainStep {
	return explainStep{status: "ok", detail: fmt.Sprintf(format, args...)}
}

func stepSkip(format string, args ...any) explainStep {
	return explainStep{status: "skip", detail: fmt.Sprintf(format, args...)}
}

func stepFail(o *outcome, hint, format string, args ...any) explainStep {
	return explainStep{status: "FAIL", deny: o, hint: hint, detail: fmt.Sprintf(format, args...)}
}

// explainRun is one handler judging the request.
type explainRun struct {
	in        *explainInput
	h         *ScopedAuth
	hit       explainHit
	storeName string
	r         *http.Request
	repl      *caddy.Replacer
	notes     []string

	// looked up before the checks run (a store error stops explain)
	byID      *keyring.Key // the record named by --key-id, nil if none
	keySent   bool         // the request carries a key (for --key-id of a key with a secret)
	principal *keyring.Key // the principal the verified certificate resolves to

	// filled by the checks
	req   request
	rule  *compiledRule
	chain []*x509.Certificate
	key   *keyring.Key // the authenticated key or principal
}

// newExplainRun decodes the handler, opens its store, completes the
// request as the client would send it to this handler (the key header,
// the account where the handler reads it) and looks the key up.
func newExplainRun(ctx context.Context, in *explainInput, hit explainHit, stores *explainStores, prev *explainRun) (*explainRun, error) {
	h, warnings, err := decodeExplainHandler(hit.raw)
	if err != nil {
		return nil, fmt.Errorf("scoped_auth: %v", err)
	}
	store, name, err := stores.forHandler(ctx, h)
	if err != nil {
		return nil, err
	}
	// The handler's own store, as Provision would set it: a check that asks
	// the store (a denylist, say) runs unchanged.
	h.store = store
	x := &explainRun{in: in, h: h, hit: hit, storeName: name, r: hit.r, notes: warnings}
	x.repl, _ = x.r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)

	if in.keyID != "" {
		k, err := store.Lookup(ctx, in.keyID)
		if err != nil {
			return nil, fmt.Errorf("looking up key %s in %s: %v", in.keyID, name, err)
		}
		x.byID = k
		if k == nil || !k.IsPrincipal() {
			x.keySent = true
		}
	}
	if x.keySent && prev != nil && !prev.h.KeepCredentials && prev.h.keyHeader == h.keyHeader {
		x.keySent = false
		x.notes = append(x.notes, "the scoped_auth handler before this one removed the key header "+h.keyHeader+" (strip_credentials), so this one sees no key")
	}
	if x.keySent {
		// A well-formed key for this id: never stored, never printed; the
		// checks need one key value in the header, not a secret.
		k, err := keyring.NewKey(in.keyID)
		if err != nil {
			return nil, err
		}
		if h.bearer {
			k = "Bearer " + k
		}
		x.r.Header.Set(h.keyHeader, k)
	}
	x.placeAccount()
	if chain := verifiedChain(x.r); chain != nil && !x.keySent {
		p, err := store.LookupPrincipal(ctx, chain)
		if err != nil {
			return nil, fmt.Errorf("looking up the certificate principal in %s: %v", name, err)
		}
		x.principal = p
	}
	return x, nil
}

// placeAccount puts --account where this handler reads the account.
func (x *explainRun) placeAccount() {
	a := x.h.Account
	switch {
	case !x.in.hasAccount:
	case a == nil:
		x.notes = append(x.notes, "this handler has no account source: the --account value is not seen")
	case a.Header != "":
		// As on the wire: HTTP parsing trims a header value's outer spaces.
		x.r.Header.Set(a.Header, strings.Trim(x.in.account, " \t"))
	case a.Query != "":
		if _, found, _ := queryValues(x.r.URL.RawQuery, a.Query); !found {
			q := a.Query + "=" + neturl.QueryEscape(x.in.account)
			if x.r.URL.RawQuery != "" {
				q = x.r.URL.RawQuery + "&" + q
			}
			x.r.URL.RawQuery = q
		}
	case a.PathSegment > 0:
		if seg, ok := pathSegment(x.r.URL.Path, a.PathSegment); !ok || seg != x.in.account {
			x.notes = append(x.notes, fmt.Sprintf("this handler reads the account from path segment %d (%q), not from --account", a.PathSegment, seg))
		}
	}
}

// judge runs the checks in order. The first FAIL decides (or a check that
// allows, public); the later checks are still shown, as skip, with what
// they would say, so that one run shows every problem.
func (x *explainRun) judge() *explainHandlerOut {
	out := &explainHandlerOut{Location: x.hit.where, ConfigPath: x.hit.path, Store: x.storeName}
	if out.Location == "" {
		out.Location = "(every request of the site)"
	}
	var decided *explainStep
	for _, c := range explainChecks {
		s := c.run(x)
		shown := explainCheckOut{Check: c.name, Status: s.status, Detail: s.detail}
		if decided != nil && s.status != "skip" {
			shown.Status = "skip"
			if s.status == "FAIL" {
				shown.Detail = "not reached; would also fail: " + s.detail
			} else {
				shown.Detail = "not reached; would pass: " + s.detail
			}
		}
		out.Checks = append(out.Checks, shown)
		if decided == nil && (s.status == "FAIL" || s.allow) {
			s := s
			decided = &s
		}
	}
	switch {
	case decided != nil && decided.deny != nil:
		o := decided.deny
		out.Outcome = explainOutcomeOut{Status: o.status, Error: o.code, WWWAuthenticate: o.challenge}
		if o == insufficientScope && x.rule != nil {
			out.Outcome.WWWAuthenticate = x.rule.challenge
		}
		out.Outcome.Text = fmt.Sprintf("%d %s", o.status, o.code)
		if out.Outcome.WWWAuthenticate != "" {
			out.Outcome.Text += " (WWW-Authenticate: " + out.Outcome.WWWAuthenticate + ")"
		}
		out.Fix = decided.hint
		if x.h.Shadow {
			out.Outcome = explainOutcomeOut{Allowed: true, Shadow: true, Status: o.status, Error: o.code,
				Text: fmt.Sprintf("allowed: shadow mode; without it %s (logged at WARN, counted as shadow_%s)", out.Outcome.Text, o.code)}
		}
	case decided != nil:
		out.Outcome = explainOutcomeOut{Allowed: true, Text: "allowed (public rule: no key needed)"}
	case x.key == nil || x.rule == nil:
		// Unreachable: a non-public rule without a key fails at "key".
		out.Outcome = explainOutcomeOut{Allowed: true, Text: "allowed"}
	default:
		who := "key"
		if x.key != nil && x.key.IsPrincipal() {
			who = "certificate principal"
		}
		out.Outcome = explainOutcomeOut{Allowed: true, Text: fmt.Sprintf("allowed: the request goes on with %s %s, permission %s", who, x.key.ID, x.rule.permString)}
	}
	out.Notes = x.notes
	return out
}

// (1) the 400 catalogue, by the handler's own inspect: method, original
// and current URI, query, override and Connection headers, the key and
// account values.
func (x *explainRun) checkRequest() explainStep {
	req, reason := x.h.inspect(x.r, x.repl)
	x.req = req
	if reason != "" {
		return stepFail(badRequest, "the client must send an unambiguous request: "+reason,
			"ambiguous request: %s", reason)
	}
	if a := x.h.Account; a != nil && a.Placeholder != "" {
		switch {
		case req.hasAccount:
			x.notes = append(x.notes, fmt.Sprintf("account placeholder %s resolves to %q for this request", a.Placeholder, req.account))
		case x.in.hasAccount:
			x.notes = append(x.notes, fmt.Sprintf("explain assumes the account placeholder %s yields the --account value at request time", a.Placeholder))
			x.req.account, x.req.hasAccount = x.in.account, true
			if x.req.account == "" || !keyring.CleanValue(x.req.account) {
				return stepFail(badRequest, "the client must send one clean account value", "ambiguous request: %s", reasonAccountChars)
			}
		}
	}
	d := "unambiguous (method, original and current URI, query, headers"
	if x.keySent {
		d += ", one key in " + x.h.keyHeader
	}
	if x.req.hasAccount {
		d += fmt.Sprintf(", account %q", x.req.account)
	}
	return stepOK("%s)", d)
}

// (2) early data: not knowable from the command line.
func (x *explainRun) checkEarlyData() explainStep {
	switch x.r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return stepOK("%s is never refused as TLS early data", x.r.Method)
	}
	return stepSkip("cannot be known here: sent as TLS early data (HTTP/3 0-RTT), %s gets 425 too_early; sent normally it passes", skShort(x.r.Method))
}

// (3) the rule, by the handler's own matchRule on the path it sees.
func (x *explainRun) checkRule() explainStep {
	x.rule = x.h.matchRule(x.r.Method, x.r.URL.Path)
	seen := ""
	if u := x.in.url(); u != nil && u.Path != x.r.URL.Path {
		seen = fmt.Sprintf(" (path after rewrites: %s)", x.r.URL.Path)
	}
	if x.rule == nil {
		var rules []string
		for _, cr := range x.h.rules {
			rules = append(rules, fmt.Sprintf("%d %s", cr.index, ruleText(cr)))
		}
		return stepFail(noMatchingRule,
			fmt.Sprintf("add a rule for %s %s (rules are tried in order; a request that matches none is denied), e.g. rule %s %s <permission>",
				skShort(x.r.Method), x.r.URL.Path, skShort(x.r.Method), x.r.URL.Path),
			"no rule matches %s %s%s; rules: %s", skShort(x.r.Method), x.r.URL.Path, seen, strings.Join(rules, "; "))
	}
	var later []string
	for _, cr := range x.h.rules[x.rule.index:] {
		if cr.matches(x.r.Method, x.r.URL.Path) {
			later = append(later, fmt.Sprint(cr.index))
		}
	}
	d := fmt.Sprintf("rule %d: %s%s", x.rule.index, ruleText(x.rule), seen)
	if len(later) > 0 {
		d += fmt.Sprintf(" (later rule %s also matches, but the first match decides)", strings.Join(later, ", "))
	}
	return stepOK("%s", d)
}

func ruleText(cr *compiledRule) string {
	m := "*"
	if !cr.anyMethod {
		m = strings.Join(cr.methods, ",")
	}
	return m + " " + cr.src.Path + " " + cr.src.Permission
}

// (3a) the certificate denylist, by the handler's own deniedCert on the
// store's denylist: refused on every rule, public ones included.
func (x *explainRun) checkDenylist() explainStep {
	switch {
	case x.rule == nil:
		return stepSkip("no rule")
	case verifiedChain(x.r) == nil:
		return stepOK("no verified client certificate")
	}
	c, unknown := x.h.deniedCert(x.r)
	if unknown {
		return stepFail(storeUnavailable, "make the store readable (a running Caddy refuses certificates until it has read the denylist)",
			"the denylist of %s could not be read", x.storeName)
	}
	if c != nil {
		return stepFail(certRevoked, "the client needs a new certificate (caddy scoped-key denied-certs lists the entries; allow-cert removes one given by mistake)",
			"certificate %s (sha256 %s) is on the denylist of %s", c.Subject.String(), keyring.HexDigest(keyring.LeafSHA256(c)), x.storeName)
	}
	return stepOK("no certificate of the --cert chain is on the denylist (Caddy's verified chain also holds the root: give it in --cert to check it too)")
}

// (4) public: passes without looking at any key.
func (x *explainRun) checkPublic() explainStep {
	switch {
	case x.rule == nil:
		return stepSkip("no rule")
	case x.rule.public:
		s := stepOK("public rule: no key needed (a key, if sent, is ignored and stripped; http.auth.* placeholders are empty)")
		s.allow = true
		return s
	}
	return stepOK("not public: needs %s", x.rule.permString)
}

func (x *explainRun) nonPublic() bool { return x.rule != nil && !x.rule.public }

// (5) require_client_cert.
func (x *explainRun) checkRequireCert() explainStep {
	x.chain = verifiedChain(x.r)
	switch {
	case !x.nonPublic():
		return stepSkip("public or no rule")
	case !x.h.RequireClientCert:
		return stepOK("require_client_cert is off")
	case x.chain == nil:
		hint := "the client must present a certificate that the site's client_auth verifies"
		if x.in.chain == nil {
			hint += " (give it to explain with --cert PEM)"
		}
		return stepFail(certRequired, hint, "require_client_cert: the request has no verified client certificate")
	}
	return stepOK("verified client certificate %s", x.chain[0].Subject.String())
}

// (6) the key, else a certificate principal, else missing_key.
func (x *explainRun) checkKey() explainStep {
	if !x.nonPublic() {
		return stepSkip("public or no rule")
	}
	chain := verifiedChain(x.r)
	switch {
	case x.keySent && x.byID == nil:
		return stepFail(invalidKey, "the key does not exist in this handler's store ("+x.storeName+"): a key from another store or environment, or a deleted one",
			"no key with id %s in %s", x.in.keyID, x.storeName)
	case x.keySent:
		k := x.byID
		x.key = k
		d := fmt.Sprintf("key %s %q, version %d, in %s; the secret is not checked: explain assumes the client sends the current one", k.ID, k.Name, k.Version, x.storeName)
		if k.PreviousHash != "" && k.PreviousExpiresAt != nil && x.in.at.Before(*k.PreviousExpiresAt) {
			d += fmt.Sprintf(" (or the previous one, accepted until %s)", k.PreviousExpiresAt.UTC().Format(time.RFC3339))
		}
		return stepOK("%s", d)
	case chain != nil && x.principal != nil:
		p := x.principal
		x.key = p
		d := fmt.Sprintf("no key; certificate principal %s %q, version %d, in %s, matched by the verified certificate", p.ID, p.Name, p.Version, x.storeName)
		if x.in.keyID != "" && p.ID != x.in.keyID {
			d += fmt.Sprintf(" (not %s: the handler takes the first principal that matches, strongest pin first)", x.in.keyID)
		}
		return stepOK("%s", d)
	case chain != nil:
		d := fmt.Sprintf("no key, and the verified certificate matches no certificate principal in %s (certificate: %s)", x.storeName, certPins(chain))
		if x.byID != nil {
			d += fmt.Sprintf("; principal %s pins: %s", x.byID.ID, recordPins(x.byID.ClientCert))
		}
		return stepFail(missingKey, "send a key, or create a principal for this certificate (caddy scoped-key new --no-secret --cert PEM …)", "%s", d)
	case x.byID != nil && x.byID.IsPrincipal():
		return stepFail(missingKey, "a certificate principal authenticates with its verified client certificate: the client must present it (give it to explain with --cert PEM)",
			"%s is a certificate principal (no secret), and the request has no verified client certificate", x.byID.ID)
	}
	where := x.h.keyHeader + ": <key>"
	if x.h.bearer {
		where = "Authorization: Bearer <key>"
	}
	return stepFail(missingKey, "send the key as "+where+" (explain it with --key-id ID)", "no key and no verified client certificate")
}

// (7) the key's certificate binding, by the keyring's Binding.Matches.
func (x *explainRun) checkBinding() explainStep {
	if x.key == nil {
		return stepSkip("no key")
	}
	b := x.key.Binding()
	switch {
	case b == nil:
		return stepOK("the key has no certificate binding")
	case x.chain == nil:
		hint := "the client must present the bound certificate over mutual TLS"
		if x.in.chain == nil {
			hint += " (give it to explain with --cert PEM)"
		}
		return stepFail(certRequired, hint, "the key is bound to a client certificate (%s) and the request has no verified one", recordPins(x.key.ClientCert))
	case !b.Matches(x.chain):
		hint := "present the bound certificate, or pin this one (a new key with caddy scoped-key new --cert PEM, or its pin in the record's client_cert)"
		if len(x.key.ClientCert.IssuerSPKISHA256) > 0 && len(x.chain) < 2 {
			hint = "the key pins the issuing CA: put the issuer after the leaf in --cert (Caddy's verified chain includes it); " + hint
		}
		return stepFail(certMismatch, hint, "the certificate matches none of the key's pins: key %s; certificate %s", recordPins(x.key.ClientCert), certPins(x.chain))
	}
	return stepOK("the verified certificate matches the key's binding (%s)", recordPins(x.key.ClientCert))
}

// (8) disabled, not yet valid, expired, by Key.ValidAt.
func (x *explainRun) checkValidity() explainStep {
	k := x.key
	if k == nil {
		return stepSkip("no key")
	}
	var parts []string
	if k.NotBefore != nil {
		parts = append(parts, "valid from "+k.NotBefore.UTC().Format(time.RFC3339))
	}
	if k.ExpiresAt != nil {
		parts = append(parts, "expires at "+k.ExpiresAt.UTC().Format(time.RFC3339))
	}
	window := "no validity window"
	if len(parts) > 0 {
		window = strings.Join(parts, ", ")
	}
	at := x.in.at.UTC().Format(time.RFC3339)
	if k.ValidAt(x.in.at) {
		return stepOK("enabled; %s (at %s)", window, at)
	}
	switch {
	case k.Disabled:
		return stepFail(invalidKey, "a revoked key stays revoked: issue a new key (caddy scoped-key new …)", "disabled (revoked), version %d", k.Version)
	case k.NotBefore != nil && x.in.at.Before(*k.NotBefore):
		return stepFail(invalidKey, "the key becomes valid at "+k.NotBefore.UTC().Format(time.RFC3339), "not yet valid: %s (at %s)", window, at)
	}
	return stepFail(invalidKey, "the key has expired: issue a new key (rotate keeps the expiry)", "expired: %s (at %s)", window, at)
}

// (9) the permission, by Key.Grants.
func (x *explainRun) checkPermission() explainStep {
	if x.key == nil || x.rule == nil {
		return stepSkip("no key")
	}
	scopes := strings.Join(x.key.Scopes, ", ")
	if x.rule.authOnly {
		return stepOK("rule needs only a valid key or principal (authenticated); the key's scopes: %s", scopes)
	}
	perm := x.rule.permString
	if x.key.Grants(x.rule.perm) {
		var by []string
		for _, s := range x.key.Scopes {
			if sc, err := keyring.ParseScope(s); err == nil && sc.Grants(x.rule.perm) {
				by = append(by, s)
			}
		}
		return stepOK("needs %s, granted by scope %s", perm, strings.Join(by, ", "))
	}
	p := x.rule.perm
	return stepFail(insufficientScope,
		fmt.Sprintf("add scope %s: the key needs a scope granting it (%s, %s:*, *:%s or *:*); issue one with caddy scoped-key new … --scope %s", perm, perm, p.Resource, p.Action, perm),
		"needs %s; the key's scopes: %s", perm, scopes)
}

// (10) the account, by Key.AllowsAccount.
func (x *explainRun) checkAccount() explainStep {
	if x.key == nil || x.rule == nil {
		return stepSkip("no key")
	}
	k, account := x.key, x.req.account
	if k.AllowsAccount(account) {
		if k.AllAccounts() {
			if account == "" {
				return stepOK("the key may act on every account; the request names none")
			}
			return stepOK("the key may act on every account (request names %q)", account)
		}
		return stepOK("account %q is one of the key's accounts (%s)", account, strings.Join(k.Accounts, ", "))
	}
	listed := strings.Join(k.Accounts, ", ")
	if len(k.Accounts) == 0 {
		listed = "none"
	}
	if account != "" {
		return stepFail(accountForbidden, fmt.Sprintf("use a key for account %q, or issue one with --account %s", account, account),
			"account %q is not among the key's accounts (%s)", account, listed)
	}
	var hint string
	switch a := x.h.Account; {
	case a == nil:
		hint = "this handler has no account source, so a key restricted to accounts is refused on every non-public rule: use a key for every account, or add e.g. `account header X-Account-ID` to the handler"
	case a.Header != "":
		hint = fmt.Sprintf("send the account in header %s (explain: --account)", a.Header)
	case a.Query != "":
		hint = fmt.Sprintf("send the account as ?%s=… (explain: --account)", a.Query)
	case a.PathSegment > 0:
		hint = fmt.Sprintf("the account is path segment %d, which this path lacks", a.PathSegment)
	default:
		hint = fmt.Sprintf("the account comes from %s, which is empty for this request", a.Placeholder)
	}
	return stepFail(accountForbidden, hint, "the request names no account, and the key may act only on: %s", listed)
}

// recordPins renders a binding's pins (display only; Binding.Matches decides).
func recordPins(b *keyring.CertBinding) string {
	if b == nil {
		return "no pins"
	}
	var parts []string
	add := func(name string, vals []string) {
		if len(vals) > 0 {
			parts = append(parts, name+" "+strings.Join(vals, "|"))
		}
	}
	add("sha256", b.SHA256)
	add("spki_sha256", b.SPKISHA256)
	add("uri", b.URI)
	if b.Subject != "" {
		parts = append(parts, "subject "+b.Subject)
	}
	add("issuer_spki_sha256", b.IssuerSPKISHA256)
	return strings.Join(parts, ", ")
}

// certPins renders what a chain offers to the pins.
func certPins(chain []*x509.Certificate) string {
	leaf := chain[0]
	parts := []string{
		"sha256 " + keyring.HexDigest(keyring.LeafSHA256(leaf)),
		"spki_sha256 " + keyring.HexDigest(keyring.SPKISHA256(leaf)),
	}
	var uris []string
	for _, u := range leaf.URIs {
		uris = append(uris, u.String())
	}
	if len(uris) > 0 {
		s := "uri " + strings.Join(uris, "|")
		if len(uris) > 1 {
			s += " (more than one URI SAN: never matches a uri pin)"
		}
		parts = append(parts, s)
	}
	parts = append(parts, "subject "+leaf.Subject.String())
	if len(chain) > 1 {
		parts = append(parts, "issuer_spki_sha256 "+keyring.HexDigest(keyring.SPKISHA256(chain[1])))
	} else {
		parts = append(parts, "no issuer in the chain")
	}
	return strings.Join(parts, ", ")
}
