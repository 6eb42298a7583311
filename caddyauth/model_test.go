package caddyauth

// A reference model of SPEC section 3 for the differential fuzz tests
// (differential_handler_test.go, differential_test.go).
//
// It is written from the SPEC text alone and deliberately shares no code
// with the module: no rule matcher, no request checks, no keyring parsing
// or matching. It is slow and plain on purpose; what matters is that it is
// obviously what the SPEC says. The names are exported only so that the
// external test package (which owns the Caddy fixture) can use them; they
// exist in test builds only.
//
// Where the SPEC is silent the model takes these decisions (each one is
// also what an operator would expect):
//
//   - A raw '#' in the request target is ambiguous like an encoded one
//     (peers-auth.md §4 A12): 400.
//   - An invalid percent-escape, or a control byte in the request target,
//     is refused (400); Go's parser refuses them anyway.
//   - A request target that is not an absolute path (asterisk-form,
//     absolute-form without a path, a rootless "a:b") is refused (400);
//     absolute-form with any scheme is judged on its path.
//   - "Whitespace or a control character" in the key or the account means
//     ASCII ones (bytes up to 0x20, and 0x7f): header values are bytes, and
//     obs-text (0x80–0xff) is opaque to HTTP. An empty account value names
//     no account unambiguously only by being absent: an empty one is 400.
//   - A `_method` query parameter is recognised after percent-decoding,
//     in any ASCII case, with both & and ; as separators.
//   - A header alias of the key or account header is a different spelling
//     that a CGI-style server maps to the same variable: upper-cased, every
//     byte that is not a letter or digit replaced by '_'.
//   - `authorization: bearer <key>`: the scheme is case-insensitive
//     (RFC 9110 §11.1) and followed by exactly one space; another scheme is
//     a credential that is not a key (401 invalid_key).
//
// Behind a real Caddy server, headers whose names contain '_' or '.' are
// dropped before any handler runs (SPEC §3, Caddy 2.11), and methods longer
// than 32 bytes get 405; the model applies that when CaddyServer is set.

import (
	"crypto/sha256"
	"encoding/hex"
	"hash/crc32"
	"net/http"
	"slices"
	"strings"
	"time"
)

// DiffKey is one key record as the model sees it: plain data.
type DiffKey struct {
	ID                string
	Hash              string // "sha256:<hex>"; empty for a certificate principal
	PreviousHash      string
	PreviousExpiresAt *time.Time
	Scopes            []string
	Accounts          []string // nil: absent (all accounts)
	Disabled          bool
	NotBefore         *time.Time
	ExpiresAt         *time.Time
	Bound             bool // has a client_cert binding
}

// DiffRule is one `rule METHODS PATH PERMISSION` line.
type DiffRule struct {
	Methods    []string // nil or ["*"]: any method
	Path       string
	Permission string
}

// DiffModel is the configuration the model judges requests against.
type DiffModel struct {
	Rules         []DiffRule
	KeyHeader     string // "Authorization" takes "Bearer <key>"
	AccountHeader string // the `account header NAME` source; "" for none
	Keys          map[string]DiffKey
	Now           time.Time
}

// DiffRequest is a request as it was put on the wire.
type DiffRequest struct {
	Method string
	Target string      // the raw request-target
	Header [][2]string // name and value of each header line, in order (values as written)
	H2     bool        // sent over HTTP/2: values are not trimmed
	// CaddyServer: a real Caddy server received it (not ServeHTTP alone).
	CaddyServer bool
}

// DiffVerdict is the model's judgement.
type DiffVerdict struct {
	Allow  bool
	Status int
	Code   string // SPEC error code, or "transport" for a request HTTP itself refuses
	Why    string
	// Path is the decoded path the rules were matched on (what the upstream
	// must receive); set once the request target passed the catalogue.
	Path    string
	Public  bool
	KeyID   string
	Account string
	// Lenient lists what the module may refuse (400) although the SPEC does
	// not: the allowed over-strictness. See DiffStrictnessAllowed.
	Lenient []string
}

func deny(status int, code, why string) DiffVerdict {
	return DiffVerdict{Status: status, Code: code, Why: why}
}

// Lenient reasons: the module refuses these with 400 and the SPEC does not
// list them. Each is a request an upstream could plausibly read another
// way, so refusing it is acceptable over-strictness.
const (
	LenientPathByte     = "decoded path holds a control, DEL or non-ASCII byte"
	LenientFoldedHeader = "an alias of the key or account header, or a name equal to one when only letters and digits are compared"
	LenientQueryName    = "query name that does not percent-decode"
	LenientQuerySemi    = "semicolon in the query"
)

// Judge applies SPEC section 3's order of checks to one request.
func (m *DiffModel) Judge(req DiffRequest) DiffVerdict {
	var lenient []string
	v := m.judge(req, &lenient)
	v.Lenient = lenient
	return v
}

func (m *DiffModel) judge(req DiffRequest, lenient *[]string) DiffVerdict {
	if req.CaddyServer && len(req.Method) > 32 {
		return deny(405, "transport", "method longer than 32 bytes (Caddy)")
	}
	// (1) the 400 catalogue. Method first.
	if !modelUpperToken(req.Method) {
		return deny(400, "bad_request", "method is not an upper-case token")
	}
	rawPath, rawQuery, ok := modelSplitTarget(req.Target)
	if !ok {
		return deny(400, "bad_request", "request target is not an absolute path")
	}
	for i := 0; i < len(req.Target); i++ {
		if c := req.Target[i]; c < 0x20 || c == 0x7f {
			return deny(400, "transport", "control byte in the request target")
		}
	}
	path, ok := modelUnescape(rawPath, false)
	if !ok {
		return deny(400, "transport", "invalid percent-escape in the path")
	}
	lower := strings.ToLower(rawPath)
	for _, enc := range []string{"%2f", "%5c", "%25", "%3f", "%23", "%3b", "%00"} {
		if strings.Contains(lower, enc) {
			return deny(400, "bad_request", "encoded "+enc+" in the path")
		}
	}
	if strings.ContainsAny(rawPath, "\\;#") {
		return deny(400, "bad_request", `literal \, ; or # in the path`)
	}
	if strings.Contains(rawPath, "//") {
		return deny(400, "bad_request", "// in the path")
	}
	for _, seg := range strings.Split(rawPath, "/") {
		if d, _ := modelUnescape(seg, false); d == "." || d == ".." {
			return deny(400, "bad_request", "dot segment")
		}
	}
	for i := 0; i < len(path); i++ {
		if c := path[i]; c < 0x20 || c >= 0x7f {
			*lenient = append(*lenient, LenientPathByte)
			break
		}
	}
	if strings.IndexByte(rawQuery, ';') >= 0 {
		// Only ambiguous for a query account source; the module may
		// refuse it anyway.
		*lenient = append(*lenient, LenientQuerySemi)
	}
	for _, pair := range strings.FieldsFunc(rawQuery, func(r rune) bool { return r == '&' || r == ';' }) {
		name, _, _ := strings.Cut(pair, "=")
		dec, ok := modelUnescape(name, true)
		if !ok {
			*lenient = append(*lenient, LenientQueryName)
			continue
		}
		if strings.EqualFold(dec, "_method") {
			return deny(400, "bad_request", "_method query parameter")
		}
	}

	// Headers: what reaches the handler.
	var keyVals, accountVals []string
	keyLines, accountLines := 0, 0
	for _, h := range req.Header {
		name, value := h[0], h[1]
		if !req.H2 {
			value = strings.Trim(value, " \t") // RFC 9112 §5: OWS around the value is not part of it
		}
		if req.CaddyServer && strings.ContainsAny(name, "_.") {
			continue // dropped by Caddy before handlers run
		}
		switch {
		case strings.EqualFold(name, "X-HTTP-Method-Override"), strings.EqualFold(name, "X-HTTP-Method"),
			strings.EqualFold(name, "X-Method-Override"), strings.EqualFold(name, "X-Original-URL"),
			strings.EqualFold(name, "X-Rewrite-URL"):
			return deny(400, "bad_request", "override header "+name)
		case strings.EqualFold(name, "Connection"):
			for _, tok := range strings.Split(value, ",") {
				tok = strings.ToLower(strings.Trim(tok, " \t"))
				if tok != "" && tok != "close" && tok != "keep-alive" && tok != "upgrade" && tok != "te" {
					return deny(400, "bad_request", "Connection names "+tok)
				}
			}
		}
		switch {
		case strings.EqualFold(name, m.KeyHeader):
			keyLines++
			keyVals = append(keyVals, value)
		case modelCGIName(name) == modelCGIName(m.KeyHeader):
			keyLines++ // an alias
		case m.AccountHeader != "" && strings.EqualFold(name, m.AccountHeader):
			accountLines++
			accountVals = append(accountVals, value)
		case m.AccountHeader != "" && modelCGIName(name) == modelCGIName(m.AccountHeader):
			accountLines++
		default:
			if modelAlnumFold(name) == modelAlnumFold(m.KeyHeader) ||
				(m.AccountHeader != "" && modelAlnumFold(name) == modelAlnumFold(m.AccountHeader)) {
				*lenient = append(*lenient, LenientFoldedHeader)
			}
		}
	}
	if keyLines > 1 {
		return deny(400, "bad_request", "more than one key header")
	}
	if accountLines > 1 {
		return deny(400, "bad_request", "more than one account header")
	}
	if len(keyVals) != keyLines || len(accountVals) != accountLines {
		// An alias alone is not a second value; the module strips names
		// with other characters than letters, digits and "-", or refuses.
		*lenient = append(*lenient, LenientFoldedHeader)
	}
	key, hasKey := "", len(keyVals) == 1
	if hasKey {
		val := keyVals[0]
		if strings.Contains(val, ",") {
			return deny(400, "bad_request", "comma in the key header")
		}
		if m.KeyHeader == "Authorization" {
			if len(val) > 7 && strings.EqualFold(val[:7], "bearer ") {
				key = val[7:]
			} else {
				key = "" // another scheme: a credential, not a key
			}
		} else {
			key = val
		}
		if !modelCleanValue(key) {
			return deny(400, "bad_request", "whitespace or control character in the key")
		}
	}
	account, hasAccount := "", len(accountVals) == 1
	if hasAccount {
		account = accountVals[0]
		if account == "" || !modelCleanValue(account) || strings.Contains(account, ",") {
			return deny(400, "bad_request", "empty account, or whitespace, comma or control character in it")
		}
	}

	// (2) early data: not modelled (no 0-RTT in these tests).

	// (3) the rule
	var rule *DiffRule
	for i := range m.Rules {
		r := &m.Rules[i]
		if (len(r.Methods) == 0 || (len(r.Methods) == 1 && r.Methods[0] == "*") || slices.Contains(r.Methods, req.Method)) &&
			modelPathMatch(r.Path, path) {
			rule = r
			break
		}
	}
	if rule == nil {
		v := deny(403, "no_matching_rule", "no rule")
		v.Path = path
		return v
	}
	// (4) public
	if rule.Permission == "public" {
		return DiffVerdict{Allow: true, Status: 200, Path: path, Public: true}
	}
	v := DiffVerdict{Path: path}
	fail := func(status int, code, why string) DiffVerdict {
		v.Status, v.Code, v.Why = status, code, why
		return v
	}
	// (5) require_client_cert: not configured. (6) the key; no client
	// certificates are sent, so there is never a certificate principal.
	if !hasKey {
		return fail(401, "missing_key", "no key")
	}
	id, ok := modelParseKey(key)
	if !ok {
		return fail(401, "invalid_key", "malformed key")
	}
	rec, known := m.Keys[id]
	if !known || rec.Hash == "" {
		return fail(401, "invalid_key", "unknown id")
	}
	sum := sha256.Sum256([]byte(key))
	hash := "sha256:" + hex.EncodeToString(sum[:])
	if hash != rec.Hash && (rec.PreviousHash == "" || hash != rec.PreviousHash ||
		rec.PreviousExpiresAt == nil || !m.Now.Before(*rec.PreviousExpiresAt)) {
		return fail(401, "invalid_key", "wrong secret")
	}
	// (7) binding: never a certificate here.
	if rec.Bound {
		return fail(403, "client_certificate_required", "bound key without a certificate")
	}
	// (8) validity
	if rec.Disabled || (rec.NotBefore != nil && m.Now.Before(*rec.NotBefore)) ||
		(rec.ExpiresAt != nil && !m.Now.Before(*rec.ExpiresAt)) {
		return fail(401, "invalid_key", "disabled, not yet valid or expired")
	}
	// (9) permission
	if rule.Permission != "authenticated" {
		res, act, _ := strings.Cut(rule.Permission, ":")
		granted := false
		for _, s := range rec.Scopes {
			sr, sa, _ := strings.Cut(s, ":")
			if (sr == "*" || sr == res) && (sa == "*" || sa == act) {
				granted = true
			}
		}
		if !granted {
			return fail(403, "insufficient_scope", "scope "+rule.Permission+" not granted")
		}
	}
	// (10) account
	all := rec.Accounts == nil || (len(rec.Accounts) == 1 && rec.Accounts[0] == "*")
	if !all && (!hasAccount || !slices.Contains(rec.Accounts, account)) {
		return fail(403, "account_forbidden", "account not allowed")
	}
	v.Allow, v.Status, v.KeyID, v.Account = true, 200, id, account
	return v
}

// modelSplitTarget returns the raw path and query of an origin-form or
// absolute-form request target (RFC 9112 §3.2: any scheme, with or
// without an authority; the path is what the rules and the upstream see).
func modelSplitTarget(t string) (rawPath, rawQuery string, ok bool) {
	rest := t
	if !strings.HasPrefix(t, "/") {
		i := strings.IndexByte(t, ':')
		if i <= 0 || !modelScheme(t[:i]) {
			return "", "", false
		}
		rest = t[i+1:]
		if strings.HasPrefix(rest, "//") {
			j := strings.IndexAny(rest[2:], "/?")
			if j < 0 {
				return "", "", false
			}
			rest = rest[2+j:]
		}
	}
	rawPath, rawQuery, _ = strings.Cut(rest, "?")
	if !strings.HasPrefix(rawPath, "/") {
		return "", "", false
	}
	return rawPath, rawQuery, true
}

// modelScheme: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) (RFC 3986 §3.1).
func modelScheme(s string) bool {
	for i, c := range []byte(s) {
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !letter && (i == 0 || !(c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return false
		}
	}
	return s != ""
}

// modelUnescape decodes %XX escapes (and '+' as space in a query).
func modelUnescape(s string, query bool) (string, bool) {
	var b []byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '%':
			if i+2 >= len(s) {
				return "", false
			}
			hi, ok1 := modelHex(s[i+1])
			lo, ok2 := modelHex(s[i+2])
			if !ok1 || !ok2 {
				return "", false
			}
			b = append(b, hi<<4|lo)
			i += 2
		case c == '+' && query:
			b = append(b, ' ')
		default:
			b = append(b, c)
		}
	}
	return string(b), true
}

func modelHex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// modelUpperToken: an RFC 9110 token without lower-case letters.
func modelUpperToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// modelCleanValue: no ASCII whitespace, control character or comma.
func modelCleanValue(s string) bool {
	for _, c := range []byte(s) {
		if c <= ' ' || c == 0x7f || c == ',' {
			return false
		}
	}
	return true
}

// modelCGIName is the variable name a CGI-style server gives a header.
func modelCGIName(name string) string {
	b := []byte(strings.ToUpper(name))
	for i, c := range b {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	return string(b)
}

// modelAlnumFold keeps letters and digits only, lower case.
func modelAlnumFold(name string) string {
	var b strings.Builder
	for _, c := range []byte(strings.ToLower(name)) {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// modelPathMatch is Caddy's path matcher as documented: case-insensitive;
// "*" matches everything; "*x*" is a substring, "*x" a suffix and "x*" a
// prefix match when that is the only wildcard; otherwise a glob in which
// "*" matches within one segment. Caddy cleans the path first (merging
// slashes, resolving dot segments); the catalogue already refused every
// path that cleaning would change.
func modelPathMatch(pattern, p string) bool {
	pattern, p = strings.ToLower(pattern), strings.ToLower(p)
	stars := strings.Count(pattern, "*")
	switch {
	case pattern == "*":
		return true
	case stars == 2 && strings.HasPrefix(pattern, "*") && strings.HasSuffix(pattern, "*"):
		return strings.Contains(p, pattern[1:len(pattern)-1])
	case stars == 1 && strings.HasPrefix(pattern, "*"):
		return strings.HasSuffix(p, pattern[1:])
	case stars == 1 && strings.HasSuffix(pattern, "*"):
		return strings.HasPrefix(p, pattern[:len(pattern)-1])
	}
	return modelGlob(pattern, p)
}

// modelGlob: "*" matches any run of characters other than "/".
func modelGlob(pat, s string) bool {
	if pat == "" {
		return s == ""
	}
	if pat[0] == '*' {
		for i := 0; i <= len(s); i++ {
			if modelGlob(pat[1:], s[i:]) {
				return true
			}
			if i < len(s) && s[i] == '/' {
				return false
			}
		}
		return false
	}
	return s != "" && s[0] == pat[0] && modelGlob(pat[1:], s[1:])
}

// modelParseKey checks a key string against SPEC section 2:
// sg_<16 base32>_<43 base62><6 base62 CRC-32 of everything before>.
func modelParseKey(s string) (id string, ok bool) {
	const b32 = "abcdefghijklmnopqrstuvwxyz234567"
	const b62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	if len(s) != 3+16+1+43+6 || !strings.HasPrefix(s, "sg_") || s[19] != '_' {
		return "", false
	}
	for _, c := range []byte(s[3:19]) {
		if strings.IndexByte(b32, c) < 0 {
			return "", false
		}
	}
	for _, c := range []byte(s[20:]) {
		if strings.IndexByte(b62, c) < 0 {
			return "", false
		}
	}
	if ModelChecksum(s[:63]) != s[63:] {
		return "", false
	}
	return s[3:19], true
}

// ModelChecksum is the 6-digit base62 CRC-32 (IEEE) of a key's body.
func ModelChecksum(body string) string {
	const b62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	v := uint64(crc32.ChecksumIEEE([]byte(body)))
	out := make([]byte, 6)
	for i := 5; i >= 0; i-- {
		out[i] = b62[v%62]
		v /= 62
	}
	return string(out)
}

// DiffStrictnessAllowed reports whether the module may refuse a request
// the model allows, given the module's answer: only with 400 bad_request,
// and only for a reason the model listed as lenient. Anything else (a 401
// or 403 the SPEC does not call for, or a 400 without such a reason) is a
// SPEC-inconsistent difference.
func DiffStrictnessAllowed(v DiffVerdict, status int, code string) bool {
	return status == http.StatusBadRequest && code == "bad_request" && len(v.Lenient) > 0
}
