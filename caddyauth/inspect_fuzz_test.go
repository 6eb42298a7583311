package caddyauth

import (
	"bufio"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// FuzzInspect: random raw request bytes, parsed by Go's HTTP/1.1 parser,
// through the module's request inspection and ServeHTTP. Nothing panics,
// and every request that shows one of the 400 catalogue's features on the
// decoded request (checked here independently, with the reference model's
// helpers) is refused with 400 and never reaches the next handler.
func FuzzInspect(f *testing.F) {
	for _, s := range inspectSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			return
		}
		env, err := getHandlerEnv()
		if err != nil {
			t.Fatal(err)
		}
		want := catalogueFeature(r, env.h.keyHeader, "X-Account-ID")
		w := httptest.NewRecorder()
		repl := caddy.NewReplacer()
		r = caddyhttp.PrepareRequest(r, repl, w, nil)
		_, reason := env.h.inspect(r, repl)
		if want != "" && reason == "" {
			t.Fatalf("inspect accepted a request with %s:\n%q", want, raw)
		}
		called := false
		next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { called = true; return nil })
		if err := env.h.ServeHTTP(w, r, next); err != nil {
			t.Fatal(err)
		}
		if reason != "" && (called || w.Code != http.StatusBadRequest) {
			t.Fatalf("inspect refused (%s) but ServeHTTP answered %d (next called: %v):\n%q", reason, w.Code, called, raw)
		}
		if want != "" && called {
			t.Fatalf("a request with %s reached the next handler:\n%q", want, raw)
		}
	})
}

// catalogueFeature returns which of SPEC §3's 400 catalogue entries the
// parsed request shows, or "".
func catalogueFeature(r *http.Request, keyHeader, accountHeader string) string {
	if !modelUpperToken(r.Method) {
		return "a method that is not an upper-case token"
	}
	rawPath, rawQuery, ok := modelSplitTarget(r.RequestURI)
	if !ok || r.URL.Opaque != "" || !strings.HasPrefix(r.URL.Path, "/") {
		return "a target that is not an absolute path"
	}
	lower := strings.ToLower(rawPath)
	for _, enc := range []string{"%2f", "%5c", "%25", "%3f", "%23", "%3b", "%00"} {
		if strings.Contains(lower, enc) {
			return "encoded " + enc
		}
	}
	p := r.URL.Path
	if strings.ContainsAny(rawPath, "\\;#") || strings.ContainsAny(p, "\\;#%?\x00") {
		return `\, ;, #, %, ? or NUL in the path`
	}
	if strings.Contains(p, "//") {
		return "//"
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "." || seg == ".." {
			return "a dot segment"
		}
	}
	for _, pair := range strings.FieldsFunc(rawQuery, func(r rune) bool { return r == '&' || r == ';' }) {
		name, _, _ := strings.Cut(pair, "=")
		if dec, ok := modelUnescape(name, true); ok && strings.EqualFold(dec, "_method") {
			return "a _method query parameter"
		}
	}
	keys, accounts := 0, 0
	for name, vals := range r.Header {
		for _, o := range []string{"X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override", "X-Original-URL", "X-Rewrite-URL"} {
			if strings.EqualFold(name, o) {
				return "an override header"
			}
		}
		if strings.EqualFold(name, "Connection") {
			for _, v := range vals {
				for _, tok := range strings.Split(v, ",") {
					tok = strings.ToLower(strings.Trim(tok, " \t"))
					if tok != "" && tok != "close" && tok != "keep-alive" && tok != "upgrade" && tok != "te" {
						return "a Connection header naming " + tok
					}
				}
			}
		}
		if modelCGIName(name) == modelCGIName(keyHeader) {
			keys += len(vals)
		}
		if modelCGIName(name) == modelCGIName(accountHeader) {
			accounts += len(vals)
		}
	}
	if keys > 1 {
		return "more than one key value"
	}
	if accounts > 1 {
		return "more than one account value"
	}
	if vals := r.Header[http.CanonicalHeaderKey(keyHeader)]; len(vals) == 1 {
		v := vals[0]
		if strings.Contains(v, ",") {
			return "a comma in the key header"
		}
		if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") && !modelCleanValue(v[7:]) {
			return "whitespace or a control character in the key"
		}
	}
	if vals := r.Header[http.CanonicalHeaderKey(accountHeader)]; len(vals) == 1 && !modelCleanValue(vals[0]) {
		return "whitespace, a comma or a control character in the account"
	}
	return ""
}

// inspectSeeds: the catalogue rows of peers-auth.md §4 A–D as raw requests,
// and some clean ones.
var inspectSeeds = func() []string {
	req := func(method, target string, headers ...string) string {
		s := method + " " + target + " HTTP/1.1\r\nHost: localhost\r\n"
		for _, h := range headers {
			s += h + "\r\n"
		}
		return s + "\r\n"
	}
	const key = "Authorization: Bearer sg_aaaaaaaaaaaaaaaa_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA000000"
	const acct = "X-Account-ID: acme-us"
	return []string{
		req("GET", "/v1/gifts", key, acct),
		req("GET", "/healthz"),
		req("GET", "http://other.host/v1/gifts", key),
		req("POST", "/v1/budgets/b1%2Fspend", key, acct),
		req("POST", "/v1/budgets/b1%2fspend", key, acct),
		req("GET", "/v1/gifts/..%2F..%2Fbudgets/b1/spend", key, acct),
		req("GET", "/v1/gifts/../budgets/b1/spend", key, acct),
		req("GET", "/v1/gifts/%2e%2e/budgets/b1/spend", key, acct),
		req("GET", "/v1/gifts/.%2e/x", key),
		req("GET", "/v1/gifts/%2E%2E/x", key),
		req("GET", "/v1/gifts/./x", key),
		req("GET", "/v1/gifts/%2e/x", key),
		req("POST", "//v1/gifts", key),
		req("POST", "/v1//gifts", key),
		req("GET", "/v1/gifts/..;/budgets/b1/spend", key),
		req("POST", "/v1/budgets/b1;x=1/spend", key),
		req("GET", "/v1/a%3Bb", key),
		req("GET", "/v1/a%5cb", key),
		req("GET", "/v1/a\\b", key),
		req("GET", "/v1/a%00b", key),
		req("POST", "/v1/budgets/b1%252Fspend", key),
		req("GET", "/v1/%252e%252e/x", key),
		req("GET", "/v1/gifts%3Fx=1", key),
		req("GET", "/v1/gifts%23frag", key),
		req("GET", "/v1/gifts#frag", key),
		req("GET", "/v1/%EF%BD%87ifts", key),
		req("GET", "/v1/%C0%AF", key),
		req("GET", "*", key),
		req("GET", "/v1/gifts", key, "X-HTTP-Method-Override: POST"),
		req("GET", "/v1/gifts", key, "x-http-method: POST"),
		req("GET", "/v1/gifts", key, "X-Method-Override: POST"),
		req("GET", "/v1/gifts", key, "X-Original-URL: /admin"),
		req("GET", "/v1/gifts", key, "X-Rewrite-URL: /admin"),
		req("GET", "/v1/gifts?_method=POST", key),
		req("GET", "/v1/gifts?a=1;%5Fmethod=POST", key),
		req("post", "/v1/gifts", key),
		req("PoSt", "/v1/gifts", key),
		req("GET", "/v1/gifts", key, key),
		req("GET", "/v1/gifts", "Authorization: Bearer a, Bearer b"),
		req("GET", "/v1/gifts", "Authorization: Bearer  x"),
		req("GET", "/v1/gifts", "Authorization: Basic YTpi"),
		req("GET", "/v1/gifts", key, "X~Authorization: x"),
		req("GET", "/v1/gifts", key, acct, acct),
		req("GET", "/v1/gifts", key, "X-Account-ID: acme-us,acme-eu"),
		req("GET", "/v1/gifts", key, acct, "X~Account~Id: acme-eu"),
		req("GET", "/v1/gifts", key, acct, "X_Account_ID: acme-eu"),
		req("GET", "/v1/gifts", key, "X-Account-ID: acme us"),
		req("GET", "/v1/gifts", key, "X-Account-ID:"),
		req("GET", "/v1/gifts", key, acct, "Connection: close, X-Account"),
		req("GET", "/v1/gifts", key, acct, "Connection: keep-alive, Upgrade, TE"),
		req("GET", "/v1/gifts", key, acct, "X-Key-Id: forged", "X-Forwarded-Client-Cert: Hash=x"),
	}
}()
