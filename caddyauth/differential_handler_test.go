package caddyauth

// The request generator and world shared by the differential fuzz targets,
// and FuzzDifferentialHandler: the same random requests as FuzzDifferential
// (differential_test.go), parsed by Go's HTTP/1.1 parser and judged by
// ServeHTTP of a provisioned ScopedAuth instead of a real Caddy, so many
// more run per second. The reference model is in model_test.go.
//
// Differences between the module and the model, and what each means:
//
//   - the module lets through (calls next) what the model denies: a bug,
//     always a failure;
//   - the module lets a request through with another method or path than
//     the model judged, or with a forged identity header or the key still
//     attached, or with placeholders that name another key or account: a
//     failure;
//   - the model allows and the module refuses: a failure unless the answer
//     is 400 bad_request for one of the model's Lenient reasons (a request
//     the SPEC does not list but an upstream could read two ways; see
//     DiffStrictnessAllowed), which is logged;
//   - both refuse with different statuses (e.g. 400 for a comma vs 401 for
//     another scheme): logged, not a failure — the SPEC's first-failure
//     order is checked by the table tests, the differential is about what
//     gets through.

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/scopegate/scopegate/caddyauth/internal/keyring"
)

// diffRuleTable is the differential site's rule list: prefix globs, "*"
// inside a segment and as a whole segment, suffix and substring patterns,
// method lists, authenticated and public rules.
var diffRuleTable = [][3]string{
	{"GET,HEAD", "/v1/gifts*", "gifts:read"},
	{"POST", "/v1/gifts", "gifts:send"},
	{"POST,PUT", "/v1/budgets/*/spend", "budgets:spend"},
	{"GET", "/v1/budgets/*", "budgets:read"},
	{"DELETE", "/v1/accounts/*/keys/*", "keys:delete"},
	{"GET", "/v1/employees*", "employees:read"},
	{"PATCH", "/v1/a*z/items", "items:write"},
	{"*", "/v1/me", "authenticated"},
	{"GET", "*.json", "files:read"},
	{"*", "*/reports/*", "reports:read"},
	{"*", "/healthz", "public"},
	{"GET,HEAD", "/public/*", "public"},
	{"OPTIONS", "*", "public"},
	{"*", "/admin/*", "admin:write"},
}

// diffKeyNames are the keys a fuzz input picks with the low 4 bits of its
// key byte ("" = no key).
var diffKeyNames = [16]string{"", "R", "F", "FSTAR", "RD", "G", "EMP", "N", "D", "E", "NY", "B", "ROT", "ROT_PREVIOUS", "ROTOLD_PREVIOUS", "UNKNOWN"}

// DiffWorld is the differential site: its keys file, the plaintext keys
// and the model's view of the records.
type DiffWorld struct {
	KeysFile string
	Keys     map[string]string // name → plaintext key
	model    DiffModel
}

// NewDiffWorld creates the keys (with the module's key generator: the
// model then checks their format itself) and writes the keys file in dir.
func NewDiffWorld(dir string) (*DiffWorld, error) {
	w := &DiffWorld{KeysFile: filepath.Join(dir, "diff-keys.json"), Keys: map[string]string{}}
	w.model = DiffModel{KeyHeader: "Authorization", AccountHeader: "X-Account-ID", Keys: map[string]DiffKey{}}
	for _, r := range diffRuleTable {
		w.model.Rules = append(w.model.Rules, DiffRule{Methods: strings.Split(r[0], ","), Path: r[1], Permission: r[2]})
	}
	past, future := time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	var file keyring.File
	add := func(name string, rec keyring.Record) (*keyring.Record, error) {
		id, err := keyring.NewID()
		if err != nil {
			return nil, err
		}
		k, err := keyring.NewKey(id)
		if err != nil {
			return nil, err
		}
		rec.ID, rec.Name, rec.Version = id, "diff "+name, 1
		rec.Hash = keyring.FormatHash(keyring.HashKey(k))
		w.Keys[name] = k
		file.Keys = append(file.Keys, &rec)
		return &rec, nil
	}
	type spec struct {
		name string
		rec  keyring.Record
	}
	pin := strings.Repeat("ab", 32)
	for _, s := range []spec{
		{"R", keyring.Record{Scopes: []string{"*:read"}, Accounts: []string{"acme-us"}}},
		{"F", keyring.Record{Scopes: []string{"*:*"}}},
		{"FSTAR", keyring.Record{Scopes: []string{"*:*"}, Accounts: []string{"*"}}},
		{"RD", keyring.Record{Scopes: []string{"*:read"}}},
		{"G", keyring.Record{Scopes: []string{"gifts:*"}, Accounts: []string{"acme-us", "acme-eu"}}},
		{"EMP", keyring.Record{Scopes: []string{"employees:read", "budgets:spend", "reports:read"}, Accounts: []string{"acme-eu"}}},
		{"N", keyring.Record{Scopes: []string{"*:*"}, Accounts: []string{}}},
		{"D", keyring.Record{Scopes: []string{"*:*"}, Disabled: true}},
		{"E", keyring.Record{Scopes: []string{"*:*"}, ExpiresAt: &past}},
		{"NY", keyring.Record{Scopes: []string{"*:*"}, NotBefore: &future}},
		{"B", keyring.Record{Scopes: []string{"*:*"}, ClientCert: &keyring.CertBinding{SHA256: []string{pin}}}},
		{"ROT", keyring.Record{Scopes: []string{"*:read", "admin:write"}}},
		{"ROTOLD", keyring.Record{Scopes: []string{"*:*"}}},
	} {
		rec, err := add(s.name, s.rec)
		if err != nil {
			return nil, err
		}
		switch s.name {
		case "ROT", "ROTOLD":
			prev, err := keyring.NewKey(rec.ID)
			if err != nil {
				return nil, err
			}
			rec.PreviousHash = keyring.FormatHash(keyring.HashKey(prev))
			rec.PreviousExpiresAt = &future
			if s.name == "ROTOLD" {
				rec.PreviousExpiresAt = &past
			}
			w.Keys[s.name+"_PREVIOUS"] = prev
		}
	}
	// A certificate principal: no secret, so no key string ever matches it.
	pid, err := keyring.NewID()
	if err != nil {
		return nil, err
	}
	file.Keys = append(file.Keys, &keyring.Record{ID: pid, Name: "diff principal", Scopes: []string{"*:*"}, Version: 1,
		ClientCert: &keyring.CertBinding{SHA256: []string{pin}}})
	w.Keys["PRINCIPAL_ID"] = pid
	uid, err := keyring.NewID()
	if err != nil {
		return nil, err
	}
	if w.Keys["UNKNOWN"], err = keyring.NewKey(uid); err != nil {
		return nil, err
	}
	// The model's copy of the records, as plain data.
	for _, rec := range file.Keys {
		w.model.Keys[rec.ID] = DiffKey{ID: rec.ID, Hash: rec.Hash, PreviousHash: rec.PreviousHash,
			PreviousExpiresAt: rec.PreviousExpiresAt, Scopes: rec.Scopes, Accounts: rec.Accounts,
			Disabled: rec.Disabled, NotBefore: rec.NotBefore, ExpiresAt: rec.ExpiresAt, Bound: rec.ClientCert != nil}
	}
	data, err := json.MarshalIndent(&file, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(w.KeysFile, data, 0o600); err != nil {
		return nil, err
	}
	return w, nil
}

// Model returns the model, with the clock read now.
func (w *DiffWorld) Model() *DiffModel {
	m := w.model
	m.Now = time.Now()
	return &m
}

// Rules returns the rule list as module configuration.
func (w *DiffWorld) Rules() []Rule {
	var rules []Rule
	for _, r := range diffRuleTable {
		rules = append(rules, Rule{Methods: strings.Split(r[0], ","), Path: r[1], Permission: r[2]})
	}
	return rules
}

// CaddyfileRules returns the rule lines of a scoped_auth block.
func (w *DiffWorld) CaddyfileRules() string {
	var b strings.Builder
	for _, r := range diffRuleTable {
		fmt.Fprintf(&b, "\t\trule %s %s %s\n", r[0], r[1], r[2])
	}
	return b.String()
}

// DiffInput is one fuzz input of the differential targets:
//
//   - Method: the method; "" picks one from a list with a Gen byte;
//   - Target: the raw request target; "" builds one from segments with Gen;
//   - Key: low 4 bits pick a key (diffKeyNames), high 4 bits how it is sent;
//   - Account: X-Account-ID values, one per line; a leading !, @, ^, &, $
//     or = sends that line under another spelling of the name;
//   - Headers: more "Name: value" lines;
//   - Gen: bytes the generator draws its choices from (flags first: bit 0
//     HTTP/2, bit 1 absolute-form target).
type DiffInput struct {
	Method, Target string
	Key            uint8
	Account        string
	Headers        string
	Gen            []byte
}

// DiffCase is a generated request.
type DiffCase struct {
	Req DiffRequest
	// H2 asks for HTTP/2 (the through-Caddy target honours it when the
	// target can be sent as :path).
	H2 bool
	// absolute: Req.Target starts with "https://" + AbsoluteHost.
	absolute bool
}

// H2Sendable reports whether the target can go out as an HTTP/2 :path:
// an origin-form path that does not start with "//" (Go's client would
// read it as an authority), with valid escapes and no control bytes (the
// server resets such a stream, as curl shows, but Go's client then waits
// for its timeout). Not CONNECT either: over HTTP/2 it carries no :path.
func (c DiffCase) H2Sendable() bool {
	t := c.Req.Target
	if !strings.HasPrefix(t, "/") || strings.HasPrefix(t, "//") || strings.EqualFold(c.Req.Method, "CONNECT") {
		return false
	}
	path, _, _ := strings.Cut(t, "?")
	if _, ok := modelUnescape(path, false); !ok {
		return false
	}
	for i := 0; i < len(t); i++ {
		if t[i] < 0x20 || t[i] == 0x7f {
			return false
		}
	}
	return true
}

// AbsoluteHost is the authority the generator writes into absolute-form
// targets; the through-Caddy target substitutes its own.
const AbsoluteHost = "diff.host.invalid"

type genReader struct {
	b []byte
	i int
}

func (g *genReader) next() byte {
	if g.i >= len(g.b) {
		return 0
	}
	c := g.b[g.i]
	g.i++
	return c
}

func (g *genReader) pick(n int) int { return int(g.next()) % n }

var (
	diffMethods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "get", "Post", "TRACE",
		"FOO", "M-SEARCH", "PROPFIND", "GET_", "CONNECT", "GeT", "G.T"}
	diffBasePaths = []string{"/v1/gifts", "/v1/gifts/g1", "/v1/giftsadmin", "/v1/budgets/b1/spend", "/v1/budgets/b1",
		"/v1/accounts/acme-us/keys/k1", "/v1/employees", "/v1/employees/e1", "/v1/abcz/items", "/v1/az/items",
		"/v1/me", "/files/a.json", "/x/reports/y", "/healthz", "/public/x", "/admin/users", "/", "/v2/other"}
	diffWords    = []string{"v1", "gifts", "giftsadmin", "budgets", "b1", "spend", "accounts", "acme-us", "keys", "k1", "employees", "me", "reports", "a.json", "healthz", "public", "admin", "abcz", "items", "az", "GIFTS", "Spend", "x", "HealthZ"}
	diffSpecials = []string{".", "..", "%2e", "%2E%2e", ".%2E", "%2e.", "", "..;", ";x=1", "%2f", "%2F", "a%2fb", "%5c", "%5C", "\\",
		"%3b", "%3B", ";", "%00", "%252f", "%252e%252e", "%25", "%3f", "%3F", "%23", "#", "%20", "+", "%7f", "%01", "~", "*", "%2a",
		"x.json", ".json", "%c0%ae%c0%ae", "%C0%AF", "%EF%BD%87ifts", "\xc3\xa9", "%C3%A9", "\u212aeys", "\xff", "...", ".well-known",
		"%41", "%73pend", "reports", "%09", "%2e%2e%2f", "%u002e"}
	diffQueries = []string{"", "", "", "", "?a=1", "?_method=POST", "?%5Fmethod=PUT", "?a=1;_method=DELETE", "?_METHOD=x",
		"?x=%2F", "?account=acme-eu", "?a=%zz", "?_method", "?_meth%6Fd=x", "?#frag", "?a=1&b=2", "?q=..%2F", "?", "?%zz=1"}
	// diffAccountNames: the header name a leading character selects.
	diffAccountNames = map[byte]string{'!': "X~Account~Id", '@': "X_Account_ID", '^': "x-account-id", '&': "XAccountID",
		'$': "X.Account.ID", '=': "X-ACCOUNT-ID"}
	// framing headers would desynchronise the kept connection; Host is the
	// generator's.
	diffSkipHeaders = []string{"content-length", "transfer-encoding", "host", "expect", "upgrade", "te", "trailer",
		"http2-settings", "proxy-connection", "keep-alive"}
)

// Generate builds a request from a fuzz input, and false if the input
// cannot be sent as one (a method or target with a space or line break).
func (w *DiffWorld) Generate(in DiffInput) (DiffCase, bool) {
	g := &genReader{b: in.Gen}
	flags := g.next()
	c := DiffCase{H2: flags&1 != 0}
	method := in.Method
	if method == "" {
		method = diffMethods[g.pick(len(diffMethods))]
	}
	if strings.ContainsAny(method, " \t\r\n") {
		return c, false
	}
	target := in.Target
	if target == "" {
		target = genPath(g)
	}
	if target == "" || strings.ContainsAny(target, " \t\r\n") {
		return c, false
	}
	if flags&2 != 0 && strings.HasPrefix(target, "/") {
		target, c.absolute = "https://"+AbsoluteHost+target, true
	}
	var hdr [][2]string
	// the key
	keyName := diffKeyNames[in.Key&15]
	k := w.Keys[keyName]
	other := w.Keys["F"]
	form := in.Key >> 4
	switch {
	case form == 12:
		// a well-formed key with a known id (or the principal's) and another secret
		id := w.Keys["PRINCIPAL_ID"]
		if keyName != "" && keyName != "UNKNOWN" {
			id = k[3:19]
		}
		body := "sg_" + id + "_" + strings.Repeat("Zz9", 14) + "Q"
		hdr = append(hdr, [2]string{"Authorization", "Bearer " + body + ModelChecksum(body)})
	case k == "":
	case form == 0:
		hdr = append(hdr, [2]string{"Authorization", "Bearer " + k})
	case form == 1:
		hdr = append(hdr, [2]string{"authorization", "bearer " + k})
	case form == 2:
		hdr = append(hdr, [2]string{"Authorization", "Bearer  " + k})
	case form == 3:
		hdr = append(hdr, [2]string{"Authorization", "Bearer " + k}, [2]string{"Authorization", "Bearer " + other})
	case form == 4:
		hdr = append(hdr, [2]string{"Authorization", "Bearer " + k + ", Bearer " + other})
	case form == 5:
		j := g.pick(len(k))
		b := []byte(k)
		b[j] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_"[(strings.IndexByte("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_", b[j])+1)%63]
		hdr = append(hdr, [2]string{"Authorization", "Bearer " + string(b)})
	case form == 6:
		hdr = append(hdr, [2]string{"Authorization", "Basic " + base64.StdEncoding.EncodeToString([]byte(k+":"))})
	case form == 7:
		hdr = append(hdr, [2]string{"AUTHORIZATION", "Bearer " + k}, [2]string{"authorization", "Bearer " + k})
	case form == 8:
		hdr = append(hdr, [2]string{"Authorization", " \tBearer " + k + "\t "})
	case form == 9:
		hdr = append(hdr, [2]string{"Authorization", "Bearer\t" + k})
	case form == 10:
		sep := "?"
		if strings.Contains(target, "?") {
			sep = "&"
		}
		target += sep + "api_key=" + k
	case form == 11:
		hdr = append(hdr, [2]string{"X-Api-Key", k})
	case form == 13:
		hdr = append(hdr, [2]string{"Authorization", "Bearer " + k + ","})
	case form == 14:
		hdr = append(hdr, [2]string{"Authorization", "Bearer " + k + " x"})
	default: // 15: a second spelling that only letter-and-digit folding equates
		hdr = append(hdr, [2]string{"Authorization", "Bearer " + k}, [2]string{"Author-ization", "Bearer " + other})
	}
	// the account
	if in.Account != "" {
		for _, line := range strings.Split(in.Account, "\n") {
			line = strings.TrimRight(line, "\r")
			name := "X-Account-ID"
			if line != "" {
				if n, ok := diffAccountNames[line[0]]; ok {
					name, line = n, line[1:]
				}
			}
			if strings.ContainsAny(line, "\r\n") {
				return c, false
			}
			hdr = append(hdr, [2]string{name, line})
		}
	}
	// more headers
	for _, line := range strings.Split(in.Headers, "\n") {
		line = strings.Trim(line, "\r")
		line = strings.TrimLeft(line, " \t") // no obs-fold continuation lines
		name, value, ok := strings.Cut(line, ":")
		if !ok || !modelToken(name) {
			continue
		}
		skip := false
		for _, s := range diffSkipHeaders {
			skip = skip || strings.EqualFold(name, s)
		}
		if skip || strings.ContainsAny(value, "\r\n") {
			continue
		}
		hdr = append(hdr, [2]string{name, value})
	}
	if c.H2 {
		// HTTP/2 carries values as they are (no OWS trimming) and Go's
		// client drops connection-specific headers: send what both ends
		// agree on, so the model sees exactly what arrives.
		var h2 [][2]string
		for _, h := range hdr {
			if strings.EqualFold(h[0], "Connection") {
				continue
			}
			h2 = append(h2, [2]string{h[0], strings.Trim(h[1], " \t")})
		}
		hdr = h2
	}
	c.Req = DiffRequest{Method: method, Target: target, Header: hdr, H2: c.H2}
	return c, true
}

// modelToken: an RFC 9110 token (a valid header name).
func modelToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// genPath builds a raw path from a base path and a few edits: escapes (any
// case, double), case changes, special and dot segments, "//", non-ASCII,
// and a query.
func genPath(g *genReader) string {
	segs := strings.Split(diffBasePaths[g.pick(len(diffBasePaths))][1:], "/")
	for n := g.pick(7); n > 0; n-- {
		op, si := g.next(), g.pick(len(segs))
		s := segs[si]
		switch op % 12 {
		case 0: // percent-encode one byte
			if s == "" {
				break
			}
			j := g.pick(len(s))
			enc := fmt.Sprintf("%%%02X", s[j])
			if op&0x80 != 0 {
				enc = strings.ToLower(enc)
			}
			segs[si] = s[:j] + enc + s[j+1:]
		case 1: // change case
			if op&0x80 != 0 {
				segs[si] = strings.ToUpper(s)
			} else if s != "" {
				j := g.pick(len(s))
				segs[si] = s[:j] + strings.ToUpper(s[j:j+1]) + s[j+1:]
			}
		case 2: // insert a special segment
			segs = append(segs[:si], append([]string{diffSpecials[g.pick(len(diffSpecials))]}, segs[si:]...)...)
		case 3: // append to a segment
			segs[si] = s + diffSpecials[g.pick(len(diffSpecials))]
		case 4: // another word
			segs[si] = diffWords[g.pick(len(diffWords))]
		case 5: // encode the whole segment
			var b strings.Builder
			for i := 0; i < len(s); i++ {
				fmt.Fprintf(&b, "%%%02x", s[i])
			}
			segs[si] = b.String()
		case 6: // an empty segment: "//"
			segs = append(segs[:si], append([]string{""}, segs[si:]...)...)
		case 7: // prepend to a segment
			segs[si] = diffSpecials[g.pick(len(diffSpecials))] + s
		case 8: // trailing slash
			segs = append(segs, "")
		case 9: // drop a segment
			if len(segs) > 1 {
				segs = append(segs[:si], segs[si+1:]...)
			}
		case 10: // double-encode one byte
			if s == "" {
				break
			}
			j := g.pick(len(s))
			segs[si] = s[:j] + fmt.Sprintf("%%25%02X", s[j]) + s[j+1:]
		default: // replace with a special segment
			segs[si] = diffSpecials[g.pick(len(diffSpecials))]
		}
	}
	return "/" + strings.Join(segs, "/") + diffQueries[g.pick(len(diffQueries))]
}

// Raw renders the request as HTTP/1.1 bytes; host is the Host header and,
// for an absolute-form target, its authority.
func (c DiffCase) Raw(host string) string {
	target := c.Req.Target
	if c.absolute {
		target = "https://" + host + strings.TrimPrefix(target, "https://"+AbsoluteHost)
	}
	var b strings.Builder
	b.WriteString(c.Req.Method + " " + target + " HTTP/1.1\r\nHost: " + host + "\r\n")
	for _, h := range c.Req.Header {
		b.WriteString(h[0] + ": " + h[1] + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// DiffSeeds are the seed inputs of both differential targets: the rows of
// peers-auth.md §4 A–D that a request can express, and generator seeds.
func DiffSeeds() []DiffInput {
	const (
		none = 0
		R    = 1
		F    = 2
		RD   = 4
		G    = 5
		EMP  = 6
		B    = 11
		ROTP = 13
	)
	form := func(key, f uint8) uint8 { return f<<4 | key }
	s := []DiffInput{
		// allowed requests, so the fuzzer starts from paths that get through
		{"GET", "/v1/gifts", R, "acme-us", "", nil},
		{"HEAD", "/v1/gifts/g1", G, "acme-eu", "", nil},
		{"POST", "/v1/gifts", G, "acme-us", "", nil},
		{"POST", "/v1/budgets/b1/spend", EMP, "acme-eu", "", nil},
		{"PUT", "/v1/budgets/b1/spend", F, "", "", nil},
		{"DELETE", "/v1/accounts/acme-us/keys/k1", F, "acme-us", "", nil},
		{"PATCH", "/v1/abcz/items", F, "", "", nil},
		{"GET", "/v1/me", RD, "", "", nil},
		{"GET", "/files/a.json", RD, "", "", nil},
		{"POST", "/x/reports/y", EMP, "acme-eu", "", nil},
		{"GET", "/healthz", none, "", "", nil},
		{"OPTIONS", "/v1/budgets/b1/spend", none, "", "Access-Control-Request-Method: POST", nil},
		{"GET", "/public/x", F, "", "", nil},
		{"GET", "/v1/gifts", ROTP, "", "", nil},
		{"GET", "/v1/gifts?x=%2F", RD, "", "", nil},
		// A: path differentials
		{"POST", "/v1/budgets/b1%2Fspend", R, "acme-us", "", nil},
		{"POST", "/v1/budgets/b1%2fspend", F, "", "", nil},
		{"GET", "/v1/gifts/..%2F..%2Fbudgets/b1/spend", R, "acme-us", "", nil},
		{"GET", "/v1/gifts/../budgets/b1/spend", R, "acme-us", "", nil},
		{"GET", "/v1/gifts/%2e%2e/budgets/b1/spend", R, "acme-us", "", nil},
		{"GET", "/v1/gifts/.%2e/budgets/b1", R, "acme-us", "", nil},
		{"GET", "/v1/gifts/%2E%2E/budgets/b1", R, "acme-us", "", nil},
		{"GET", "/v1/gifts/./x", R, "acme-us", "", nil},
		{"GET", "/v1/gifts/%2e/x", R, "acme-us", "", nil},
		{"POST", "//v1/gifts", G, "acme-us", "", nil},
		{"POST", "/v1//gifts", G, "acme-us", "", nil},
		{"POST", "/v1/budgets//spend", F, "", "", nil},
		{"GET", "/v1/gifts/..;/budgets/b1/spend", R, "acme-us", "", nil},
		{"POST", "/v1/budgets/b1;x=1/spend", F, "", "", nil},
		{"GET", "/v1/gifts%3Bx", R, "acme-us", "", nil},
		{"GET", "/v1/gifts%3bx", R, "acme-us", "", nil},
		{"POST", "/v1/budgets/b1%5Cspend", F, "", "", nil},
		{"POST", "/v1/budgets/b1\\spend", F, "", "", nil},
		{"GET", "/v1/gifts%00", R, "acme-us", "", nil},
		{"POST", "/v1/budgets/b1%252Fspend", F, "", "", nil},
		{"GET", "/v1/%252e%252e/budgets/b1", R, "acme-us", "", nil},
		{"GET", "/v1/gifts%3Fx=1", R, "acme-us", "", nil},
		{"GET", "/v1/gifts%23frag", R, "acme-us", "", nil},
		{"GET", "/v1/gifts#frag", R, "acme-us", "", nil},
		{"POST", "/V1/BUDGETS/b1/SPEND", R, "acme-us", "", nil},
		{"POST", "/v1/gifts/", R, "acme-us", "", nil},
		{"POST", "/v1/gifts/", F, "", "", nil},
		{"GET", "/v1/giftsadmin", R, "acme-us", "", nil},
		{"POST", "/v1/budgets/b1/%73pend", R, "acme-us", "", nil},
		{"GET", "/v1/\xef\xbd\x87ifts", R, "acme-us", "", nil},
		{"GET", "/v1/%EF%BD%87ifts", R, "acme-us", "", nil},
		{"GET", "/v1/%C0%AF", F, "", "", nil},
		{"DELETE", "/v1/accounts/x/\u212aeys/k1", F, "", "", nil},
		{"POST", "/v1/gifts", R, "acme-us", "", []byte{2}}, // A18: absolute-form
		// B: method confusion
		{"GET", "/v1/gifts", R, "acme-us", "X-HTTP-Method-Override: POST", nil},
		{"GET", "/v1/gifts", R, "acme-us", "x-http-method: DELETE", nil},
		{"GET", "/v1/gifts", R, "acme-us", "X-Method-Override: PUT", nil},
		{"GET", "/v1/gifts", R, "acme-us", "X-Original-URL: /v1/budgets/b1/spend", nil},
		{"GET", "/v1/gifts", R, "acme-us", "X-Rewrite-URL: /admin/users", nil},
		{"GET", "/v1/gifts?_method=POST", R, "acme-us", "", nil},
		{"GET", "/v1/gifts?%5Fmethod=POST", R, "acme-us", "", nil},
		{"post", "/v1/gifts", G, "acme-us", "", nil},
		{"PoSt", "/v1/gifts", G, "acme-us", "", nil},
		{"OPTIONS", "/v1/budgets/b1/spend", R, "acme-us", "Access-Control-Request-Method: POST", nil},
		{"HEAD", "/v1/employees", EMP, "acme-eu", "", nil},
		{"TRACE", "/v1/gifts", F, "", "", nil},
		{"MOVE", "/v1/gifts", F, "", "", nil},
		{"FOO", "/v1/me", F, "", "", nil},
		// C: credentials
		{"GET", "/v1/gifts", form(R, 3), "acme-us", "", nil},
		{"GET", "/v1/gifts", form(R, 4), "acme-us", "", nil},
		{"GET", "/v1/gifts", form(F, 10), "", "", nil},
		{"GET", "/v1/gifts", form(F, 1), "", "", nil},
		{"GET", "/v1/gifts", form(F, 2), "", "", nil},
		{"GET", "/v1/gifts", form(F, 8), "", "", nil},
		{"GET", "/v1/gifts", form(F, 9), "", "", nil},
		{"GET", "/v1/gifts", form(F, 5), "", "", []byte{0, 70}},
		{"GET", "/v1/gifts", form(F, 12), "", "", nil},
		{"GET", "/v1/gifts", form(none, 12), "", "", nil},
		{"GET", "/v1/gifts", 14, "", "", nil}, // past its grace
		{"GET", "/v1/gifts", 8, "", "", nil},  // disabled
		{"GET", "/v1/gifts", 9, "", "", nil},  // expired
		{"GET", "/v1/gifts", 10, "", "", nil}, // not yet valid
		{"GET", "/v1/gifts", form(F, 6), "", "", nil},
		{"GET", "/v1/gifts", form(F, 7), "", "", nil},
		{"GET", "/v1/gifts", form(F, 13), "", "", nil},
		{"GET", "/v1/gifts", form(F, 14), "", "", nil},
		{"GET", "/v1/gifts", form(R, 15), "acme-us", "", nil},
		{"GET", "/v1/gifts", form(F, 11), "", "", nil},
		// D: identity headers and accounts
		{"GET", "/v1/gifts", R, "acme-us", "X-Key-Id: forged\nX-Account: acme-eu", nil},
		{"GET", "/v1/gifts", R, "acme-us", "X~Key~Id: forged\nX-Scopegate-Key-Id: x", nil},
		{"GET", "/v1/gifts", R, "acme-us", "Connection: close, X-Account", nil},
		{"GET", "/v1/gifts", R, "acme-us", "Connection: keep-alive, X-Key-Id", nil},
		{"GET", "/v1/gifts", B, "", "X-Forwarded-Client-Cert: Hash=abab;URI=spiffe://acme.test/hris\nSsl-Client-Verify: SUCCESS", nil},
		{"GET", "/v1/gifts", F, "", "X-Forwarded-Tls-Client-Cert: x\nX-SSL-Client-Cert: x\nX-Client-Cert: x\nX-Amzn-Mtls-Clientcert: x", nil},
		{"GET", "/v1/gifts", R, "acme-us\nacme-us", "", nil},
		{"GET", "/v1/gifts", R, "acme-us,acme-eu", "", nil},
		{"GET", "/v1/gifts", R, "acme-us\n!acme-eu", "", nil},
		{"GET", "/v1/gifts", F, "acme-us\n@acme-eu", "", nil},
		{"GET", "/v1/gifts", F, "acme-us\n&acme-eu", "", nil},
		{"GET", "/v1/gifts", F, "$acme-eu", "", nil},
		{"GET", "/v1/gifts", R, "^acme-us", "", nil},
		{"GET", "/v1/gifts", R, "", "", nil},
		{"GET", "/v1/gifts", R, "ACME-US", "", nil},
		{"GET", "/v1/gifts", R, " acme-us", "", nil},
		{"GET", "/v1/gifts", R, "acme-us ", "", nil},
		{"GET", "/v1/gifts", F, "acme us", "", nil},
		{"GET", "/v1/gifts", F, "acme-us\x00", "", nil},
		{"GET", "/v1/gifts", F, "acme-us/../acme-eu", "", nil},
		{"GET", "/v1/gifts", F, "\xc2\xa0acme-us", "", nil},
		{"GET", "/v1/me", 7, "acme-us", "", nil}, // N: no accounts
		{"GET", "/v1/gifts", R, "acme-us", "X_Key_Id: forged\nX.Account: forged", nil},
	}
	// generator seeds: random structure, methods and keys
	for i := 0; i < 24; i++ {
		gen := []byte{byte(i % 4), byte(i), byte(i * 7), byte(5 + i%3), byte(i * 13), byte(i * 29), byte(i * 31), byte(i * 37), byte(i * 41), byte(i * 43), byte(i * 47)}
		s = append(s, DiffInput{"", "", uint8(i*11) & 0x3f, []string{"", "acme-us", "acme-eu", "acme-us\nacme-eu"}[i%4], "", gen})
	}
	return s
}

// handlerEnv is the provisioned handler of FuzzDifferentialHandler, one per
// process.
type handlerEnv struct {
	world *DiffWorld
	h     *ScopedAuth
}

var (
	handlerEnvOnce sync.Once
	theHandlerEnv  *handlerEnv
	handlerEnvErr  error
)

func getHandlerEnv() (*handlerEnv, error) {
	handlerEnvOnce.Do(func() {
		dir, err := os.MkdirTemp("", "scopegate-diff-")
		if err != nil {
			handlerEnvErr = err
			return
		}
		w, err := NewDiffWorld(dir)
		if err != nil {
			handlerEnvErr = err
			return
		}
		h := &ScopedAuth{
			KeysFile:     w.KeysFile,
			Account:      &AccountSource{Header: "X-Account-ID"},
			StripHeaders: []string{"X-Key-Id", "X-Account"},
			Rules:        w.Rules(),
		}
		h.logger = zap.NewNop() // Provision's logger needs a running Caddy config
		initMetrics()
		if err := h.provisionRequest(); err != nil {
			handlerEnvErr = err
			return
		}
		if err := h.provisionRules(); err != nil {
			handlerEnvErr = err
			return
		}
		fs, err := keyring.OpenFileStore(w.KeysFile) // the real store, without the reload goroutine
		if err != nil {
			handlerEnvErr = err
			return
		}
		h.fileStore, h.store = fs, fs
		theHandlerEnv = &handlerEnv{world: w, h: h}
	})
	return theHandlerEnv, handlerEnvErr
}

// DiffCheckHandler runs one input through ServeHTTP of the provisioned
// handler and compares with the model (see the top of this file).
func DiffCheckHandler(t testing.TB, in DiffInput) {
	t.Helper()
	env, err := getHandlerEnv()
	if err != nil {
		t.Fatal(err)
	}
	c, ok := env.world.Generate(in)
	if !ok {
		return
	}
	c.Req.H2, c.H2 = false, false
	raw := c.Raw("localhost")
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
	if err != nil {
		return // Go's parser refused it: HTTP's decision, not the module's
	}
	if c.absolute {
		c.Req.Target = "https://localhost" + strings.TrimPrefix(c.Req.Target, "https://"+AbsoluteHost)
	}
	v := env.world.Model().Judge(c.Req)
	w := httptest.NewRecorder()
	repl := caddy.NewReplacer()
	r = caddyhttp.PrepareRequest(r, repl, w, nil)
	var seen *http.Request
	next := caddyhttp.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) error { seen = r; return nil })
	if err := env.h.ServeHTTP(w, r, next); err != nil {
		t.Fatalf("ServeHTTP: %v", err)
	}
	code := ""
	var body struct{ Error string }
	if json.Unmarshal(w.Body.Bytes(), &body) == nil {
		code = body.Error
	}
	judge := DiffJudgement{Request: raw, Method: c.Req.Method, Verdict: v, Reached: seen != nil, Status: w.Code, Code: code}
	if seen != nil {
		judge.UpstreamMethod, judge.UpstreamPath, judge.UpstreamHeader = seen.Method, seen.URL.Path, seen.Header
		judge.KeyIDSeen, judge.AccountSeen = repl.ReplaceAll("{http.auth.key.id}", ""), repl.ReplaceAll("{http.auth.key.account}", "")
	}
	judge.Check(t)
}

// DiffJudgement is one request's outcome at the gateway and the model's
// verdict on it.
type DiffJudgement struct {
	Request        string // as sent, for messages
	Method         string // as sent
	Verdict        DiffVerdict
	Reached        bool // the upstream (next handler) saw it
	Status         int
	Code           string // the module's error code; "" if the answer was not the module's
	UpstreamMethod string
	UpstreamPath   string
	UpstreamHeader http.Header
	// KeyIDSeen and AccountSeen are the identity the upstream was told
	// (placeholders, or the header_up headers).
	KeyIDSeen, AccountSeen string
}

// Check fails the test on a security-relevant difference, and logs the
// tolerated ones.
func (j DiffJudgement) Check(t testing.TB) {
	t.Helper()
	v := j.Verdict
	switch {
	case j.Reached && !v.Allow:
		t.Fatalf("GATEWAY ALLOWS WHAT THE MODEL DENIES: model %d %s (%s); upstream saw %s %q\nrequest:\n%s",
			v.Status, v.Code, v.Why, j.UpstreamMethod, j.UpstreamPath, j.Request)
	case j.Reached:
		var bad []string
		if j.UpstreamMethod != j.Method {
			bad = append(bad, fmt.Sprintf("method %q reached the upstream, %q was judged", j.UpstreamMethod, j.Method))
		}
		if j.UpstreamPath != v.Path {
			bad = append(bad, fmt.Sprintf("path %q reached the upstream, the model judged %q", j.UpstreamPath, v.Path))
		}
		if j.KeyIDSeen != v.KeyID {
			bad = append(bad, fmt.Sprintf("upstream told key id %q, model %q", j.KeyIDSeen, v.KeyID))
		}
		if j.AccountSeen != v.Account && !v.Public {
			bad = append(bad, fmt.Sprintf("upstream told account %q, model %q", j.AccountSeen, v.Account))
		}
		if v.Public && j.AccountSeen != "" {
			bad = append(bad, fmt.Sprintf("public route told account %q", j.AccountSeen))
		}
		for name := range j.UpstreamHeader {
			if strings.Trim(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-") != "" {
				bad = append(bad, fmt.Sprintf("header %q with a name other than letters, digits and - reached the upstream", name))
			}
			for _, f := range []string{"Authorization", "X-Forwarded-Client-Cert", "X-Forwarded-Tls-Client-Cert", "X-Forwarded-Tls-Client-Cert-Info",
				"X-Ssl-Client-Cert", "X-Client-Cert", "Ssl-Client-Verify", "X-Amzn-Mtls-Clientcert"} {
				if strings.EqualFold(name, f) {
					bad = append(bad, fmt.Sprintf("inbound %s reached the upstream", name))
				}
			}
		}
		if len(bad) > 0 {
			t.Fatalf("allowed request reached the upstream wrongly:\n  %s\nrequest:\n%s", strings.Join(bad, "\n  "), j.Request)
		}
	case v.Allow:
		if j.Code == "" {
			t.Logf("model allows; HTTP refused before the module (%d): %q", j.Status, j.Request)
		} else if DiffStrictnessAllowed(v, j.Status, j.Code) {
			t.Logf("model allows; module refuses %d %s, tolerated (%s): %q", j.Status, j.Code, strings.Join(v.Lenient, "; "), j.Request)
		} else {
			t.Fatalf("SPEC-inconsistent refusal: model allows (path %q, key %q), module answers %d %q\nrequest:\n%s",
				v.Path, v.KeyID, j.Status, j.Code, j.Request)
		}
	case j.Status != v.Status:
		t.Logf("both refuse; module %d %s, model %d %s (%s): %q", j.Status, j.Code, v.Status, v.Code, v.Why, j.Request)
	}
}

// FuzzDifferentialHandler: random requests (see DiffInput) through Go's
// HTTP/1.1 parser and ServeHTTP, judged against the reference model.
func FuzzDifferentialHandler(f *testing.F) {
	for _, s := range DiffSeeds() {
		f.Add(s.Method, s.Target, s.Key, s.Account, s.Headers, s.Gen)
	}
	f.Fuzz(func(t *testing.T, method, target string, key uint8, account, headers string, gen []byte) {
		in := DiffInput{method, target, key, account, headers, gen}
		DiffCheckHandler(t, in)
		// The same request with every other key, sent the same way: the
		// handler is cheap next to the fuzzer's per-input overhead.
		for k := uint8(0); k < 16; k++ {
			if k != key&15 {
				in.Key = key&0xf0 | k
				DiffCheckHandler(t, in)
			}
		}
	})
}
