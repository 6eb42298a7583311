package caddyauth_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/scopegate/scopegate/caddyauth/internal/keyring"
	"github.com/scopegate/scopegate/internal/testpki"
)

// expect checks a denial or an allow, and that a denied request never
// reached the upstream.
func (f *fixture) expect(t *testing.T, name string, got response, before int, status int, code string) {
	t.Helper()
	if got.status != status {
		t.Errorf("%s: status %d, want %d (body %q)", name, got.status, status, got.body)
		return
	}
	reached := f.upstream.count() > before
	if status >= 400 {
		if want := `{"error":"` + code + `"}`; got.body != want {
			t.Errorf("%s: body %q, want %q", name, got.body, want)
		}
		if reached {
			t.Errorf("%s: a denied request reached the upstream", name)
		}
	} else if !reached {
		t.Errorf("%s: allowed request did not reach the upstream", name)
	}
}

// TestOutcomeTable covers every row of SPEC section 3's outcome table over
// HTTP/1.1 and HTTP/2.
func TestOutcomeTable(t *testing.T) {
	f := setup(t)
	queryKey := must(keyring.NewKey(f.records["F"].ID)) // F's id, another secret
	for _, proto := range []string{"h1", "h2"} {
		noCert, c1, c2 := f.client(nil, proto), f.client(f.c1, proto), f.client(f.c2, proto)
		cases := []struct {
			name      string
			c         *http.Client
			method    string
			path      string
			headers   []string
			status    int
			code      string
			challenge string
		}{
			{"read-only key reads gifts", noCert, "GET", "/v1/gifts", []string{"Authorization", "Bearer " + f.keys["R"], "X-Account-ID", "acme-us"}, 200, "", ""},
			{"HEAD follows the GET,HEAD rule", noCert, "HEAD", "/v1/gifts", []string{"Authorization", "Bearer " + f.keys["R"], "X-Account-ID", "acme-us"}, 200, "", ""},
			{"no key", noCert, "GET", "/v1/gifts", nil, 401, "missing_key", `Bearer realm="scoped_auth"`},
			// Caddy's access log records the URI, so this uses a key that is not in
			// f.keys (TestSecretsNeverLogged checks those); see the README.
			{"query key is not read", noCert, "GET", "/v1/gifts?api_key=" + queryKey, nil, 401, "missing_key", `Bearer realm="scoped_auth"`},
			{"malformed key", noCert, "GET", "/v1/gifts", []string{"Authorization", "Bearer sg_nope"}, 401, "invalid_key", `Bearer realm="scoped_auth", error="invalid_token"`},
			{"bad checksum", noCert, "GET", "/v1/gifts", []string{"Authorization", "Bearer " + badChecksum(f.keys["F"])}, 401, "invalid_key", `Bearer realm="scoped_auth", error="invalid_token"`},
			{"unknown key", noCert, "GET", "/v1/gifts", []string{"Authorization", "Bearer " + f.keys["UNKNOWN"]}, 401, "invalid_key", `Bearer realm="scoped_auth", error="invalid_token"`},
			{"wrong secret", noCert, "GET", "/v1/gifts", []string{"Authorization", "Bearer " + f.keys["ROTOLD_PREVIOUS"]}, 401, "invalid_key", `Bearer realm="scoped_auth", error="invalid_token"`},
			{"expired", noCert, "GET", "/v1/gifts", []string{"Authorization", "Bearer " + f.keys["EXPIRED"]}, 401, "invalid_key", `Bearer realm="scoped_auth", error="invalid_token"`},
			{"not yet valid", noCert, "GET", "/v1/gifts", []string{"Authorization", "Bearer " + f.keys["NOTYET"]}, 401, "invalid_key", `Bearer realm="scoped_auth", error="invalid_token"`},
			{"disabled", noCert, "GET", "/v1/gifts", []string{"Authorization", "Bearer " + f.keys["DISABLED"]}, 401, "invalid_key", `Bearer realm="scoped_auth", error="invalid_token"`},
			{"other auth scheme", noCert, "GET", "/v1/gifts", []string{"Authorization", "Basic YTpi"}, 401, "invalid_key", `Bearer realm="scoped_auth", error="invalid_token"`},
			{"lower-case bearer scheme", noCert, "GET", "/v1/gifts", []string{"Authorization", "bearer " + f.keys["F"]}, 200, "", ""},
			{"bound key without certificate", noCert, "GET", "/v1/gifts", []string{"Authorization", "Bearer " + f.keys["B"]}, 403, "client_certificate_required", ""},
			{"bound key with its certificate", c1, "GET", "/v1/gifts", []string{"Authorization", "Bearer " + f.keys["B"]}, 200, "", ""},
			{"bound key with another certificate", c2, "GET", "/v1/gifts", []string{"Authorization", "Bearer " + f.keys["B"]}, 403, "client_certificate_mismatch", ""},
			{"read-only key sends a gift", noCert, "POST", "/v1/gifts", []string{"Authorization", "Bearer " + f.keys["R"], "X-Account-ID", "acme-us"}, 403, "insufficient_scope", `Bearer realm="scoped_auth", error="insufficient_scope", scope="gifts:send"`},
			{"read-only key spends a budget", noCert, "POST", "/v1/budgets/b1/spend", []string{"Authorization", "Bearer " + f.keys["R"], "X-Account-ID", "acme-us"}, 403, "insufficient_scope", `Bearer realm="scoped_auth", error="insufficient_scope", scope="budgets:spend"`},
			{"upper-case path still needs the scope", noCert, "POST", "/V1/BUDGETS/b1/SPEND", []string{"Authorization", "Bearer " + f.keys["R"], "X-Account-ID", "acme-us"}, 403, "insufficient_scope", `Bearer realm="scoped_auth", error="insufficient_scope", scope="budgets:spend"`},
			{"account not allowed", noCert, "GET", "/v1/gifts", []string{"Authorization", "Bearer " + f.keys["R"], "X-Account-ID", "acme-eu"}, 403, "account_forbidden", ""},
			{"account missing for a restricted key", noCert, "GET", "/v1/gifts", []string{"Authorization", "Bearer " + f.keys["R"]}, 403, "account_forbidden", ""},
			{"account case differs", noCert, "GET", "/v1/gifts", []string{"Authorization", "Bearer " + f.keys["R"], "X-Account-ID", "ACME-US"}, 403, "account_forbidden", ""},
			{"restricted key on an authenticated rule without account", noCert, "GET", "/v1/me", []string{"Authorization", "Bearer " + f.keys["R"]}, 403, "account_forbidden", ""},
			{"key with no accounts", noCert, "GET", "/v1/me", []string{"Authorization", "Bearer " + f.keys["NOACCOUNTS"], "X-Account-ID", "acme-us"}, 403, "account_forbidden", ""},
			{"unrestricted key without account", noCert, "GET", "/v1/me", []string{"Authorization", "Bearer " + f.keys["F"]}, 200, "", ""},
			{"scope wildcard on resource", noCert, "POST", "/v1/gifts", []string{"Authorization", "Bearer " + f.keys["GIFTS"], "X-Account-ID", "acme-eu"}, 200, "", ""},
			{"scope wildcard does not cross resources", noCert, "GET", "/v1/employees", []string{"Authorization", "Bearer " + f.keys["GIFTS"], "X-Account-ID", "acme-eu"}, 403, "insufficient_scope", `Bearer realm="scoped_auth", error="insufficient_scope", scope="employees:read"`},
			{"no matching rule", noCert, "GET", "/v1/secret", []string{"Authorization", "Bearer " + f.keys["F"]}, 403, "no_matching_rule", ""},
			{"GET-only rule refuses HEAD", noCert, "HEAD", "/v1/employees", []string{"Authorization", "Bearer " + f.keys["F"]}, 403, "no_matching_rule", ""},
			{"unknown method", noCert, "TRACE", "/v1/gifts", []string{"Authorization", "Bearer " + f.keys["F"]}, 403, "no_matching_rule", ""},
			{"preflight without a rule", noCert, "OPTIONS", "/v1/budgets/b1/spend", []string{"Access-Control-Request-Method", "POST"}, 403, "no_matching_rule", ""},
			{"public route without key", noCert, "GET", "/healthz", nil, 200, "", ""},
			{"public route ignores a bad key", noCert, "GET", "/healthz", []string{"Authorization", "Bearer junk"}, 200, "", ""},
			{"ambiguous request", noCert, "GET", "/v1/gifts", []string{"Authorization", "Bearer " + f.keys["F"], "X-HTTP-Method-Override", "POST"}, 400, "bad_request", ""},
			{"rotation: previous key inside grace", noCert, "GET", "/v1/gifts", []string{"Authorization", "Bearer " + f.keys["ROT_PREVIOUS"]}, 200, "", ""},
			{"rotation: current key", noCert, "GET", "/v1/gifts", []string{"Authorization", "Bearer " + f.keys["ROT"]}, 200, "", ""},
			{"rotation: previous key after grace", noCert, "GET", "/v1/gifts", []string{"Authorization", "Bearer " + f.keys["ROTOLD_PREVIOUS"]}, 401, "invalid_key", `Bearer realm="scoped_auth", error="invalid_token"`},
			{"rotation: current key after grace", noCert, "GET", "/v1/gifts", []string{"Authorization", "Bearer " + f.keys["ROTOLD"]}, 200, "", ""},
		}
		for _, c := range cases {
			before := f.upstream.count()
			got := f.do(t, c.c, c.method, url(mainPort, c.path), c.headers...)
			name := proto + ": " + c.name
			if c.method == "HEAD" && got.status >= 400 {
				got.body = `{"error":"` + c.code + `"}` // HEAD answers have no body
			}
			f.expect(t, name, got, before, c.status, c.code)
			if h := got.header.Get("Www-Authenticate"); h != c.challenge {
				t.Errorf("%s: WWW-Authenticate %q, want %q", name, h, c.challenge)
			}
			if c.status >= 400 && c.method != "HEAD" && got.header.Get("Content-Type") != "application/json" {
				t.Errorf("%s: Content-Type %q", name, got.header.Get("Content-Type"))
			}
		}
	}
}

// TestUnknownWrongSecretExpiredIndistinguishable: the client cannot tell
// an unknown key from a wrong secret or an expired key.
func TestUnknownWrongSecretExpiredIndistinguishable(t *testing.T) {
	f := setup(t)
	c := f.client(nil, "h1")
	var first response
	for i, k := range []string{f.keys["UNKNOWN"], f.keys["ROTOLD_PREVIOUS"], f.keys["EXPIRED"], f.keys["DISABLED"], f.keys["NOTYET"]} {
		got := f.do(t, c, "GET", url(mainPort, "/v1/gifts"), "Authorization", "Bearer "+k)
		got.header.Del("Date")
		if i == 0 {
			first = got
			continue
		}
		if got.status != first.status || got.body != first.body || fmt.Sprint(got.header) != fmt.Sprint(first.header) {
			t.Errorf("key %d answered differently: %+v vs %+v", i, got, first)
		}
	}
}

// TestStoreNotAskedForBadChecksum is covered in the unit tests (the store
// counts lookups); here: the 401 comes without the key's id in the log.

// TestCertificateBindings binds keys by each pin type.
func TestCertificateBindings(t *testing.T) {
	f := setup(t)
	cases := []struct {
		name   string
		key    string
		cert   *testpki.Leaf
		port   int
		status int
		code   string
	}{
		{"leaf pin, same cert", "B", f.c1, mainPort, 200, ""},
		{"leaf pin, renewed cert (same key)", "B", f.c1renewed, mainPort, 403, "client_certificate_mismatch"},
		{"SPKI pin, same cert", "BSPKI", f.c1, mainPort, 200, ""},
		{"SPKI pin, renewed cert (same key)", "BSPKI", f.c1renewed, mainPort, 200, ""},
		{"SPKI pin, other cert", "BSPKI", f.c2, mainPort, 403, "client_certificate_mismatch"},
		{"URI pin with issuer, same cert", "BURI", f.c1, mainPort, 200, ""},
		{"URI pin with issuer, cert from the second CA", "BURI", f.c3, mainPort, 403, "client_certificate_mismatch"},
		{"URI pin without issuer, cert from the second CA", "BURINOPIN", f.c3, mainPort, 200, ""},
		{"URI pin, cert with two URI SANs", "BURINOPIN", f.twoURIs, mainPort, 403, "client_certificate_mismatch"},
		{"subject pin with issuer, same cert", "BSUBJ", f.c1, mainPort, 200, ""},
		{"subject pin with issuer, cert from the second CA", "BSUBJ", f.c3, mainPort, 403, "client_certificate_mismatch"},
		{"subject pin without issuer, second CA", "BSUBJNOPIN", f.c3, mainPort, 200, ""},
		{"subject pin, other cert", "BSUBJ", f.c2, mainPort, 403, "client_certificate_mismatch"},
		{"self-signed copy under mode request", "B", f.rogue, requestPort, 403, "client_certificate_required"},
		{"self-signed copy of the URI under mode request", "BURINOPIN", f.rogue, requestPort, 403, "client_certificate_required"},
		{"genuine cert under mode request is not verified either", "B", f.c1, requestPort, 403, "client_certificate_required"},
	}
	for _, proto := range []string{"h1", "h2"} {
		for _, c := range cases {
			before := f.upstream.count()
			got := f.do(t, f.client(c.cert, proto), "GET", url(c.port, "/v1/gifts"), "Authorization", "Bearer "+f.keys[c.key])
			f.expect(t, proto+": "+c.name, got, before, c.status, c.code)
		}
	}
}

// TestHandshakeRefusals: certificates Go's verification refuses never get
// as far as the handler under verify_if_given.
func TestHandshakeRefusals(t *testing.T) {
	f := setup(t)
	for name, cert := range map[string]*testpki.Leaf{"self-signed": f.rogue, "serverAuth only": f.srvAuth, "expired": f.expired} {
		before := f.upstream.count()
		req, _ := http.NewRequest("GET", url(mainPort, "/v1/gifts"), nil)
		req.Header.Set("Authorization", "Bearer "+f.keys["B"])
		resp, err := f.client(cert, "h1").Do(req)
		if err == nil {
			resp.Body.Close()
			t.Errorf("%s: handshake succeeded with status %d", name, resp.StatusCode)
		}
		if f.upstream.count() != before {
			t.Errorf("%s: reached the upstream", name)
		}
	}
}

// TestCertificatePrincipal: a certificate alone identifies a service.
func TestCertificatePrincipal(t *testing.T) {
	f := setup(t)
	c2 := f.client(f.c2, "h1")
	before := f.upstream.count()
	f.expect(t, "principal reads gifts", f.do(t, c2, "GET", url(mainPort, "/v1/gifts")), before, 200, "")
	if got := f.upstream.last().Header.Get("X-Key-Id"); got != f.records["PRINCIPAL"].ID {
		t.Errorf("upstream saw X-Key-Id %q", got)
	}
	before = f.upstream.count()
	f.expect(t, "principal lacks gifts:send", f.do(t, c2, "POST", url(mainPort, "/v1/gifts")), before, 403, "insufficient_scope")
	// A cert from the second CA with the same URI is not the principal.
	before = f.upstream.count()
	f.expect(t, "same URI, second CA", f.do(t, f.client(f.c3, "h1"), "GET", url(mainPort, "/v1/gifts")), before, 401, "missing_key")
	// A request that carries a key is judged by the key.
	before = f.upstream.count()
	f.expect(t, "key wins over principal", f.do(t, c2, "GET", url(mainPort, "/v1/gifts"), "Authorization", "Bearer "+f.keys["UNKNOWN"]), before, 401, "invalid_key")
	before = f.upstream.count()
	f.expect(t, "valid key with principal cert", f.do(t, c2, "POST", url(mainPort, "/v1/gifts"), "Authorization", "Bearer "+f.keys["F"]), before, 200, "")
	if got := f.upstream.last().Header.Get("X-Key-Id"); got != f.records["F"].ID {
		t.Errorf("upstream saw X-Key-Id %q, want the key's", got)
	}
}

// TestRequireClientCert: the route demands a verified certificate.
func TestRequireClientCert(t *testing.T) {
	f := setup(t)
	before := f.upstream.count()
	f.expect(t, "no cert", f.do(t, f.client(nil, "h1"), "GET", url(mainPort, "/mtls/x"), "Authorization", "Bearer "+f.keys["F"]), before, 403, "client_certificate_required")
	before = f.upstream.count()
	f.expect(t, "verified cert", f.do(t, f.client(f.c1, "h1"), "GET", url(mainPort, "/mtls/x"), "Authorization", "Bearer "+f.keys["F"]), before, 200, "")
}

// TestAmbiguousRequests: every case of SPEC's 400 catalogue, sent raw.
func TestAmbiguousRequests(t *testing.T) {
	f := setup(t)
	F := bearer(f.keys["F"])
	R := bearer(f.keys["R"])
	cases := []struct{ name, req string }{
		{"encoded slash", rawReq("POST", "/v1/budgets/b1%2Fspend", R)},
		{"encoded slash lower", rawReq("POST", "/v1/budgets/b1%2fspend", R)},
		{"encoded slash and dots", rawReq("GET", "/v1/gifts/..%2F..%2Fbudgets/b1/spend", R)},
		{"dot-dot", rawReq("GET", "/v1/gifts/../budgets/b1/spend", R)},
		{"encoded dot-dot", rawReq("GET", "/v1/gifts/%2e%2e/budgets/b1/spend", R)},
		{"mixed dot-dot", rawReq("GET", "/v1/gifts/.%2E/budgets/b1/spend", R)},
		{"dot", rawReq("GET", "/v1/gifts/./x", R)},
		{"encoded dot", rawReq("GET", "/v1/gifts/%2e/x", R)},
		{"leading //", rawReq("POST", "//v1/gifts", R)},
		{"inner //", rawReq("POST", "/v1//gifts", R)},
		{"empty segment", rawReq("POST", "/v1/budgets//spend", R)},
		{"semicolon dot-dot", rawReq("GET", "/v1/gifts/..;/budgets/b1/spend", R)},
		{"path parameter", rawReq("POST", "/v1/budgets/b1;x=1/spend", R)},
		{"encoded semicolon", rawReq("GET", "/v1/gifts%3Bx", R)},
		{"encoded semicolon lower", rawReq("GET", "/v1/gifts%3bx", R)},
		{"backslash", rawReq("GET", "/v1/gifts\\x", R)},
		{"encoded backslash", rawReq("POST", "/v1/budgets/b1%5Cspend", R)},
		{"encoded NUL", rawReq("GET", "/v1/gifts%00", R)},
		{"double encoding", rawReq("POST", "/v1/budgets/b1%252Fspend", R)},
		{"encoded percent", rawReq("GET", "/v1/gifts%25", R)},
		{"encoded question mark", rawReq("GET", "/v1/gifts%3Fx=1", R)},
		{"encoded hash", rawReq("GET", "/v1/gifts%23frag", R)},
		{"non-ASCII path", rawReq("GET", "/v1/%EF%BD%87ifts", F)},
		{"overlong UTF-8", rawReq("GET", "/v1/gifts/%C0%AF", F)},
		{"lower-case method", rawReq("post", "/v1/gifts", R)},
		{"mixed-case method", rawReq("PoSt", "/v1/gifts", R)},
		{"two Authorization headers", rawReq("GET", "/v1/gifts", R, F)},
		{"comma list of keys", rawReq("GET", "/v1/gifts", "Authorization: Bearer "+f.keys["R"]+", Bearer "+f.keys["F"])},
		{"two spaces after Bearer", rawReq("GET", "/v1/gifts", "Authorization: Bearer  "+f.keys["F"])},
		{"tab in key", rawReq("GET", "/v1/gifts", "Authorization: Bearer "+f.keys["F"][:10]+"\t"+f.keys["F"][10:])},
		{"Authorization alias", rawReq("GET", "/v1/gifts", F, "Authori~zation: Bearer x")},
		{"two account headers", rawReq("GET", "/v1/gifts", R, "X-Account-ID: acme-us", "X-Account-ID: acme-us")},
		{"account comma list", rawReq("GET", "/v1/gifts", R, "X-Account-ID: acme-us,acme-eu")},
		{"account with space", rawReq("GET", "/v1/gifts", R, "X-Account-ID: acme us")},
		{"empty account", rawReq("GET", "/v1/gifts", R, "X-Account-ID: ")},
		{"account alias", rawReq("GET", "/v1/gifts", R, "X-Account-ID: acme-us", "X~Account~ID: acme-eu")},
		{"account alias without dashes", rawReq("GET", "/v1/gifts", R, "X-Account-ID: acme-us", "XAccountID: acme-eu")},
		{"X-HTTP-Method-Override", rawReq("GET", "/v1/gifts", R, "X-HTTP-Method-Override: POST")},
		{"X-HTTP-Method", rawReq("GET", "/v1/gifts", R, "X-HTTP-Method: POST")},
		{"X-Method-Override", rawReq("GET", "/v1/gifts", R, "x-method-override: POST")},
		{"X-Original-URL", rawReq("GET", "/v1/gifts", R, "X-Original-URL: /v1/budgets/b1/spend")},
		{"X-Rewrite-URL", rawReq("GET", "/v1/gifts", R, "X-Rewrite-URL: /v1/budgets/b1/spend")},
		{"_method query", rawReq("GET", "/v1/gifts?_method=POST", R)},
		{"encoded _method query", rawReq("GET", "/v1/gifts?%5Fmethod=POST", R)},
		{"Connection names a header", rawReq("GET", "/v1/gifts", R, "Connection: close, X-Account")},
		{"Connection names the key header", rawReq("GET", "/v1/gifts", R, "Connection: Authorization")},
		{"public route is checked too", rawReq("GET", "/healthz/../v1/gifts")},
	}
	for _, c := range cases {
		before := f.upstream.count()
		got := f.raw(t, mainPort, nil, c.req)
		f.expect(t, c.name, got, before, 400, "bad_request")
	}
	// Query and path-segment account sources.
	q := []struct{ name, target string }{
		{"repeated query account", "/q/gifts?account=acme-us&account=acme-eu"},
		{"query account[]", "/q/gifts?account[]=acme-us"},
		{"query account with comma", "/q/gifts?account=acme-us,acme-eu"},
		{"query with semicolon", "/q/gifts?account=acme-us;account=acme-eu"},
	}
	for _, c := range q {
		before := f.upstream.count()
		f.expect(t, c.name, f.raw(t, mainPort, nil, rawReq("GET", c.target, R)), before, 400, "bad_request")
	}
	before := f.upstream.count()
	f.expect(t, "path segment account", f.raw(t, mainPort, nil, rawReq("GET", "/seg/acme-us/gifts", R)), before, 200, "")
	before = f.upstream.count()
	f.expect(t, "path segment other account", f.raw(t, mainPort, nil, rawReq("GET", "/seg/acme-eu/gifts", R)), before, 403, "account_forbidden")
	before = f.upstream.count()
	f.expect(t, "path segment with comma", f.raw(t, mainPort, nil, rawReq("GET", "/seg/acme-us,acme-eu/gifts", R)), before, 400, "bad_request")
	before = f.upstream.count()
	f.expect(t, "query account", f.raw(t, mainPort, nil, rawReq("GET", "/q/gifts?account=acme-us", R)), before, 200, "")
	before = f.upstream.count()
	f.expect(t, "query account other", f.raw(t, mainPort, nil, rawReq("GET", "/q/gifts?account=acme-eu", R)), before, 403, "account_forbidden")
	// Allowed variants that look odd but are not ambiguous.
	before = f.upstream.count()
	f.expect(t, "unreserved escape is decoded", f.raw(t, mainPort, nil, rawReq("POST", "/v1/budgets/b1/%73pend", R, "X-Account-ID: acme-us")), before, 403, "insufficient_scope")
	before = f.upstream.count()
	f.expect(t, "trailing slash matches no POST rule", f.raw(t, mainPort, nil, rawReq("POST", "/v1/gifts/", R, "X-Account-ID: acme-us")), before, 403, "no_matching_rule")
	before = f.upstream.count()
	f.expect(t, "absolute-form target", f.raw(t, mainPort, nil, rawReq("POST", fmt.Sprintf("https://localhost:%d/v1/gifts", mainPort), R, "X-Account-ID: acme-us")), before, 403, "insufficient_scope")
}

// TestRewriteChecksOriginalAndCurrent: rules see the path after
// handle_path, and the 400 catalogue applies to the original URI too.
func TestRewriteChecksOriginalAndCurrent(t *testing.T) {
	f := setup(t)
	R := bearer(f.keys["R"])
	before := f.upstream.count()
	f.expect(t, "rewritten path is judged", f.raw(t, mainPort, nil, rawReq("GET", "/rw/v1/gifts", R, "X-Account-ID: acme-us")), before, 200, "")
	if got := f.upstream.last().URL.Path; got != "/v1/gifts" {
		t.Errorf("upstream path %q", got)
	}
	before = f.upstream.count()
	f.expect(t, "rewritten POST needs its scope", f.raw(t, mainPort, nil, rawReq("POST", "/rw/v1/gifts", R, "X-Account-ID: acme-us")), before, 403, "insufficient_scope")
	before = f.upstream.count()
	f.expect(t, "original URI is checked", f.raw(t, mainPort, nil, rawReq("GET", "/rw/v1/gifts%2F..%2Fx", R, "X-Account-ID: acme-us")), before, 400, "bad_request")
}

// TestIdentityHeadersNeverForged: what reaches the upstream carries only
// the identity the gateway established, and never the key.
func TestIdentityHeadersNeverForged(t *testing.T) {
	f := setup(t)
	spoof := []string{
		"X-Key-Id: " + f.records["F"].ID, "X-Account: acme-eu", "X~Key~Id: evil", "X-Key-Id~: evil",
		"X-Forwarded-Client-Cert: Hash=" + f.c1.SHA256Hex() + ";URI=spiffe://acme.test/hris",
		"X-Forwarded-Tls-Client-Cert: x", "X-Forwarded-Tls-Client-Cert-Info: x", "X-SSL-Client-Cert: x",
		"X-Client-Cert: x", "Ssl-Client-Verify: SUCCESS", "X-Amzn-Mtls-Clientcert: x",
	}
	check := func(name string, wantID, wantAccount string) {
		t.Helper()
		up := f.upstream.last()
		for h := range up.Header {
			if strings.ContainsAny(h, "~_.") {
				t.Errorf("%s: header %q reached the upstream", name, h)
			}
		}
		for _, h := range []string{"X-Forwarded-Client-Cert", "X-Forwarded-Tls-Client-Cert", "X-Forwarded-Tls-Client-Cert-Info", "X-Ssl-Client-Cert", "X-Client-Cert", "Ssl-Client-Verify", "X-Amzn-Mtls-Clientcert", "Authorization"} {
			if v := up.Header.Get(h); v != "" {
				t.Errorf("%s: %s reached the upstream: %q", name, h, v)
			}
		}
		if got := up.Header.Get("X-Key-Id"); got != wantID {
			t.Errorf("%s: X-Key-Id %q, want %q", name, got, wantID)
		}
		if got := up.Header.Get("X-Account"); got != wantAccount {
			t.Errorf("%s: X-Account %q, want %q", name, got, wantAccount)
		}
	}
	before := f.upstream.count()
	f.expect(t, "read-only key with spoofed headers", f.raw(t, mainPort, nil, rawReq("GET", "/v1/gifts", append([]string{bearer(f.keys["R"]), "X-Account-ID: acme-us"}, spoof...)...)), before, 200, "")
	check("keyed", f.records["R"].ID, "acme-us")
	up := f.upstream.last()
	if up.Header.Get("X-Key-Scopes") != "*:read" || up.Header.Get("X-Key-Pii") != "false" || up.Header.Get("X-Key-Permission") != "gifts:read" ||
		up.Header.Get("X-User-Id") != f.records["R"].ID || up.Header.Get("X-Key-Name") != "R" {
		t.Errorf("placeholders: %v", up.Header)
	}
	before = f.upstream.count()
	f.expect(t, "public route with spoofed headers", f.raw(t, mainPort, nil, rawReq("GET", "/healthz", append([]string{bearer(f.keys["F"])}, spoof...)...)), before, 200, "")
	check("public", "", "")
	if up := f.upstream.last(); up.Header.Get("X-Key-Pii") != "" || up.Header.Get("X-Key-Permission") != "" {
		t.Errorf("public route placeholders not empty: %v", up.Header)
	}
	// With a certificate, cert-forwarding headers are still dropped.
	before = f.upstream.count()
	f.expect(t, "principal with spoofed headers", f.raw(t, mainPort, f.c2, rawReq("GET", "/v1/gifts", spoof...)), before, 200, "")
	check("principal", f.records["PRINCIPAL"].ID, "")
	// strip_credentials off keeps the key header.
	before = f.upstream.count()
	f.expect(t, "keep credentials", f.raw(t, mainPort, nil, rawReq("GET", "/keep/x", bearer(f.keys["F"]))), before, 200, "")
	if got := f.upstream.last().Header.Get("Authorization"); got != "Bearer "+f.keys["F"] {
		t.Errorf("strip_credentials off: upstream Authorization %q", got)
	}
	// The PII opt-in shows in the placeholder.
	before = f.upstream.count()
	f.expect(t, "pii key", f.raw(t, mainPort, nil, rawReq("GET", "/v1/gifts", bearer(f.keys["PII"]))), before, 200, "")
	if got := f.upstream.last().Header.Get("X-Key-Pii"); got != "true" {
		t.Errorf("X-Key-Pii %q", got)
	}
}

// TestHandleErrors: with handle_errors, denials become errors with the
// code as message, and the challenge header survives.
func TestHandleErrors(t *testing.T) {
	f := setup(t)
	c := f.client(nil, "h1")
	got := f.do(t, c, "POST", url(errorsPort, "/v1/gifts"), "Authorization", "Bearer "+f.keys["R"], "X-Account-ID", "acme-us")
	if got.status != 403 || got.body != "denied 403 insufficient_scope" {
		t.Errorf("got %d %q", got.status, got.body)
	}
	if h := got.header.Get("Www-Authenticate"); h != `Bearer realm="scoped_auth", error="insufficient_scope", scope="gifts:send"` {
		t.Errorf("challenge %q", h)
	}
	got = f.do(t, c, "GET", url(errorsPort, "/v1/gifts"))
	if got.status != 401 || got.body != "denied 401 missing_key" {
		t.Errorf("got %d %q", got.status, got.body)
	}
}

// TestKeysFileReload: changes are picked up while running; a bad file keeps
// the last good set.
func TestKeysFileReload(t *testing.T) {
	f := setup(t)
	c := f.client(nil, "h1")
	// Disable F by rewriting the file (as the CLI's revoke does).
	f.records["F"].Disabled = true
	f.records["F"].Version++
	f.writeKeys(t)
	defer func() {
		f.records["F"].Disabled = false
		f.records["F"].Version++
		f.writeKeys(t)
		waitStatus(t, f, c, f.keys["F"], 200)
	}()
	start := time.Now()
	waitStatus(t, f, c, f.keys["F"], 401)
	t.Logf("revocation picked up in %v", time.Since(start))
	// A broken file keeps the last good set: F stays revoked, R still works.
	if err := writeAtomic(f.keysFile, []byte(`{"keys": [ {"id": "broken"`)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond)
	if got := f.do(t, c, "GET", url(mainPort, "/v1/me"), "Authorization", "Bearer "+f.keys["F"]); got.status != 401 {
		t.Errorf("revoked key after a bad file: %d", got.status)
	}
	if got := f.do(t, c, "GET", url(mainPort, "/v1/gifts"), "Authorization", "Bearer "+f.keys["R"], "X-Account-ID", "acme-us"); got.status != 200 {
		t.Errorf("good key after a bad file: %d", got.status)
	}
}

func waitStatus(t *testing.T, f *fixture, c *http.Client, key string, status int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := f.do(t, c, "GET", url(mainPort, "/v1/me"), "Authorization", "Bearer "+key)
		if got.status == status {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("status stayed %d, want %d", got.status, status)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// badChecksum changes the last checksum digit of a key.
func badChecksum(k string) string {
	last := "0"
	if k[len(k)-1] == '0' {
		last = "1"
	}
	return k[:len(k)-1] + last
}

// TestPIIOptInThroughRedact: redact masks the upstream's PII unless the
// key's record says "pii": true (the {http.auth.key.pii} placeholder).
func TestPIIOptInThroughRedact(t *testing.T) {
	f := setup(t)
	c := f.client(nil, "h2")
	masked := f.do(t, c, "GET", url(mainPort, "/masked/x"), "Authorization", "Bearer "+f.keys["F"])
	if masked.status != 200 || strings.Contains(masked.body, "ada@acme.test") || !strings.Contains(masked.body, `"email":"[REDACTED]"`) {
		t.Errorf("key without pii: %d %s", masked.status, masked.body)
	}
	exposed := f.do(t, c, "GET", url(mainPort, "/masked/x"), "Authorization", "Bearer "+f.keys["PII"])
	if exposed.status != 200 || !strings.Contains(exposed.body, "ada@acme.test") {
		t.Errorf("key with pii: %d %s", exposed.status, exposed.body)
	}
	for _, r := range []response{masked, exposed} {
		if r.header.Get("Cache-Control") != "private" || !strings.Contains(strings.Join(r.header.Values("Vary"), ","), "Authorization") {
			t.Errorf("cache headers: %v", r.header)
		}
	}
}
