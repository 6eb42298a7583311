package caddyauth_test

import (
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"

	"github.com/scopegate/scopegate/caddyauth/internal/keyring"
)

// Why a protocol refuses or cannot carry a request; the catalogue and
// SECURITY.md quote these.
const (
	byGoH1      = "Go's HTTP/1.1 server"
	byGoH2      = "Go's HTTP/2 server"
	byQuic      = "quic-go's HTTP/3 server"
	byHandshake = "TLS handshake"
	bySNI       = "Caddy's strict SNI-Host check"
)

// attackCatalogue is the table: research rows A1–F5, in order. Keys (see
// fixture_test.go): R = *:read for [acme-us]; F = *:*; B = *:* bound to
// c1's leaf SHA-256. Rules: GET,HEAD /v1/gifts* gifts:read; POST /v1/gifts
// gifts:send; POST /v1/budgets/*/spend budgets:spend; GET /v1/employees*
// employees:read; * /v1/me authenticated; * /healthz public.
func attackCatalogue(f *fixture) []attackRow {
	R := func(kv ...string) []string {
		return append([]string{"Authorization", "Bearer " + f.keys["R"], "X-Account-ID", "acme-us"}, kv...)
	}
	F := func(kv ...string) []string { return append([]string{"Authorization", "Bearer " + f.keys["F"]}, kv...) }
	key := func(name string, kv ...string) []string {
		return append([]string{"Authorization", "Bearer " + f.keys[name]}, kv...)
	}
	bad := denied(400, "bad_request")
	// an ambiguous request: 400 on every protocol
	amb := func(name, method, target string, kv []string) attackCase {
		return attackCase{name: name, req: rq(method, target, kv...), want: bad}
	}
	noH2H3Absolute := map[string]string{
		"h2": "HTTP/2 has no absolute-form: the target is :scheme + :authority + :path; :authority ≠ SNI is E13",
		"h3": "HTTP/3 has no absolute-form: the target is :scheme + :authority + :path; :authority ≠ SNI is E13",
	}
	longPath := "/v1/gifts/" + strings.Repeat("a/", 32<<10) // 64 KiB: beyond Caddy's 16 KiB header limit
	manySegments := strings.Repeat("/a", 5000)              // 10 KB, 5000 segments: within it
	forwarding := []string{
		"X-Forwarded-Client-Cert", "Hash=" + f.c1.SHA256Hex() + ";URI=spiffe://acme.test/hris",
		"X-Forwarded-Tls-Client-Cert", "MIIB", "X-Forwarded-Tls-Client-Cert-Info", "Subject=CN=hris",
		"X-SSL-Client-Cert", "MIIB", "X-Client-Cert", "MIIB", "Ssl-Client-Verify", "SUCCESS", "X-Amzn-Mtls-Clientcert", "MIIB",
	}
	seg := func(acct string) *string { return &acct }

	return []attackRow{
		// A. Path differentials
		{id: "A1", what: "encoded slash", cases: []attackCase{
			amb("R POST %2F", "POST", "/v1/budgets/b1%2Fspend", R()),
			amb("R POST %2f", "POST", "/v1/budgets/b1%2fspend", R()),
			amb("F POST %2F (a key that could spend)", "POST", "/v1/budgets/b1%2Fspend", F()),
		}},
		{id: "A2", what: "encoded slash and dot segments", cases: []attackCase{
			amb("R GET ..%2F..%2F", "GET", "/v1/gifts/..%2F..%2Fbudgets/b1/spend", R()),
		}},
		{id: "A3", what: "dot-dot segment", cases: []attackCase{
			amb("R GET /../", "GET", "/v1/gifts/../budgets/b1/spend", R()),
			amb("R POST trailing /..", "POST", "/v1/budgets/b1/spend/..", R()),
		}},
		{id: "A4", what: "encoded dot-dot", cases: []attackCase{
			amb("%2e%2e", "GET", "/v1/gifts/%2e%2e/budgets/b1/spend", R()),
			amb(".%2e", "GET", "/v1/gifts/.%2e/budgets/b1/spend", R()),
			amb("%2E%2E", "GET", "/v1/gifts/%2E%2E/budgets/b1/spend", R()),
		}},
		{id: "A5", what: "single-dot segments", cases: []attackCase{
			amb("/./", "GET", "/v1/gifts/./x", R()),
			amb("/%2e/", "GET", "/v1/gifts/%2e/x", R()),
		}},
		{id: "A6", what: "empty segments", cases: []attackCase{
			amb("leading //", "POST", "//v1/gifts", R()),
			amb("inner //", "POST", "/v1//gifts", R()),
			amb("empty segment in a glob", "POST", "/v1/budgets//spend", F()),
		}},
		{id: "A7", what: "path parameters", cases: []attackCase{
			amb("..;/", "GET", "/v1/gifts/..;/budgets/b1/spend", R()),
			amb(";x=1", "POST", "/v1/budgets/b1;x=1/spend", R()),
		}},
		{id: "A8", what: "encoded semicolon", cases: []attackCase{
			amb("%3B", "GET", "/v1/gifts%3Bx", R()),
			amb("%3b in a middle segment", "POST", "/v1/budgets/b1%3b/spend", F()),
		}},
		{id: "A9", what: "backslash", cases: []attackCase{
			amb("literal \\", "GET", `/v1/gifts\x`, R()),
			amb("%5C", "POST", "/v1/budgets/b1%5Cspend", R()),
			amb("%5c", "POST", "/v1/budgets/b1%5cspend", R()),
		}},
		{id: "A10", what: "NUL", cases: []attackCase{
			amb("%00 in the path", "GET", "/v1/gifts%00", R()),
			{name: "raw NUL in a header value", req: rq("GET", "/v1/gifts", R("X-Note", "a\x00b")...),
				want: refused(400, byGoH1), per: map[string]want{"h2": refused(0, byGoH2+" (RST_STREAM PROTOCOL_ERROR)"), "h3": refused(0, byQuic+" (H3_MESSAGE_ERROR)")}},
		}},
		{id: "A11", what: "double encoding", cases: []attackCase{
			amb("%252F", "POST", "/v1/budgets/b1%252Fspend", R()),
			amb("%252e%252e", "GET", "/v1/gifts/%252e%252e/budgets/b1/spend", R()),
		}},
		{id: "A12", what: "encoded ? and #, raw #", cases: []attackCase{
			amb("%3F", "GET", "/v1/gifts%3Fx=1", R()),
			amb("%23", "GET", "/v1/gifts%23frag", R()),
			amb("raw # in the target / :path", "POST", "/v1/gifts#/../budgets/b1/spend", R()),
		}},
		{id: "A13", what: "case of the path", cases: []attackCase{
			{name: "R POST /V1/BUDGETS/b1/SPEND", req: rq("POST", "/V1/BUDGETS/b1/SPEND", R()...), want: denied(403, "insufficient_scope")},
			{name: "F POST /V1/BUDGETS/b1/SPEND (the rule applies, the path goes up as sent)", req: rq("POST", "/V1/BUDGETS/b1/SPEND", F()...), want: allowedAs("F")},
		}},
		{id: "A14", what: "trailing slash", cases: []attackCase{
			{name: "R POST /v1/gifts/", req: rq("POST", "/v1/gifts/", R()...), want: denied(403, "no_matching_rule")},
			{name: "F POST /v1/gifts/", req: rq("POST", "/v1/gifts/", F()...), want: denied(403, "no_matching_rule")},
			{name: "R GET /v1/gifts/ (under the gifts* prefix)", req: rq("GET", "/v1/gifts/", R()...), want: allowedAs("R")},
		}},
		{id: "A15", what: "glob prefix without a slash", cases: []attackCase{
			{name: "R GET /v1/giftsadmin matches /v1/gifts* by design", req: rq("GET", "/v1/giftsadmin", R()...), want: allowedAs("R")},
		}},
		{id: "A16", what: "escaped unreserved characters", cases: []attackCase{
			{name: "R POST /v1/budgets/b1/%73pend is /spend", req: rq("POST", "/v1/budgets/b1/%73pend", R()...), want: denied(403, "insufficient_scope")},
			{name: "R GET /v1/%67ifts is /v1/gifts, forwarded as sent", req: rq("GET", "/v1/%67ifts", R()...), want: allowedAs("R")},
		}},
		{id: "A17", what: "non-ASCII and overlong UTF-8", cases: []attackCase{
			amb("fullwidth g, encoded", "GET", "/v1/%EF%BD%87ifts", F()),
			amb("fullwidth g, raw UTF-8", "GET", "/v1/ｇifts", F()),
			amb("overlong %C0%AF", "GET", "/v1/gifts/%C0%AF", F()),
		}},
		{id: "A18", what: "absolute-form request target", cases: []attackCase{
			{name: "R POST https://localhost:port/v1/gifts: the rule sees /v1/gifts", req: rq("POST", fmt.Sprintf("https://localhost:%d/v1/gifts", mainPort), R()...),
				want: denied(403, "insufficient_scope"), na: noH2H3Absolute},
			{name: "F GET http://other.test/v1/me with Host: localhost", req: rq("GET", "http://other.test/v1/me", F()...),
				want: refused(421, bySNI+" (Go takes the host from the absolute-form target)"), na: noH2H3Absolute},
		}},
		{id: "A19", what: "over-long paths", cases: []attackCase{
			{name: "R GET under gifts* with 5000 segments: judged in linear time", req: rq("GET", "/v1/gifts"+manySegments, R()...), want: allowedAs("R")},
			{name: "F POST /v1/budgets/<5000 segments>/spend: * stays in one segment", req: rq("POST", "/v1/budgets"+manySegments+"/spend", F()...), want: denied(403, "no_matching_rule")},
			{name: "R GET with a 64 KiB path", req: rq("GET", longPath, R()...), want: refused(431, byGoH1+" (max_header_bytes 16 KiB)"),
				per: map[string]want{"h2": refused(0, byGoH2+" (GOAWAY COMPRESSION_ERROR: over MAX_HEADER_LIST_SIZE)"), "h3": {status: 431, stack: byQuic + " (431, or the stream reset with H3_EXCESSIVE_LOAD)", orReset: true}}},
		}},

		// B. Method confusion
		{id: "B1", what: "method override headers", cases: []attackCase{
			amb("X-HTTP-Method-Override", "GET", "/v1/gifts", R("X-HTTP-Method-Override", "POST")),
			amb("X-HTTP-Method", "GET", "/v1/gifts", R("X-HTTP-Method", "POST")),
			amb("x-method-override (lower case)", "GET", "/v1/gifts", R("x-method-override", "POST")),
			amb("X-Original-URL", "GET", "/v1/gifts", R("X-Original-URL", "/v1/budgets/b1/spend")),
			amb("X-Rewrite-URL", "GET", "/v1/gifts", R("X-Rewrite-URL", "/v1/budgets/b1/spend")),
		}},
		{id: "B2", what: "_method parameter", cases: []attackCase{
			amb("?_method=POST", "GET", "/v1/gifts?_method=POST", R()),
			amb("?%5Fmethod=POST", "GET", "/v1/gifts?%5Fmethod=POST", R()),
			amb("?_METHOD=post;x", "GET", "/v1/gifts?a=1;_METHOD=post", R()),
			{name: "R POST with a form body _method=DELETE: judged as the POST it is", req: wireReq{method: "POST", target: "/v1/gifts", body: "_method=DELETE",
				headers: hdr(R("Content-Type", "application/x-www-form-urlencoded")...)}, want: denied(403, "insufficient_scope")},
			{name: "F POST with a form body _method=DELETE: forwarded as a POST, body untouched", req: wireReq{method: "POST", target: "/v1/gifts", body: "_method=DELETE",
				headers: hdr(F("Content-Type", "application/x-www-form-urlencoded")...)}, want: allowedAs("F"),
				check: func(t *testing.T, up *http.Request) {
					if up.ContentLength != int64(len("_method=DELETE")) {
						t.Errorf("B2: upstream Content-Length %d", up.ContentLength)
					}
				}},
		}},
		{id: "B3", what: "method case", cases: []attackCase{
			amb("post", "post", "/v1/gifts", R()),
			amb("PoSt", "PoSt", "/v1/gifts", R()),
			amb("get (even where GET is allowed)", "get", "/v1/gifts", R()),
		}},
		{id: "B4", what: "CORS preflight", cases: []attackCase{
			{name: "anonymous OPTIONS /v1/budgets/b1/spend", req: rq("OPTIONS", "/v1/budgets/b1/spend", "Origin", "https://evil.test", "Access-Control-Request-Method", "POST"), want: denied(403, "no_matching_rule")},
			{name: "anonymous OPTIONS on a public rule", req: rq("OPTIONS", "/healthz", "Origin", "https://evil.test", "Access-Control-Request-Method", "GET"), want: allowedAs("")},
		}},
		{id: "B5", what: "HEAD", cases: []attackCase{
			{name: "R HEAD /v1/gifts (rule GET,HEAD)", req: rq("HEAD", "/v1/gifts", R()...), want: allowedAs("R")},
			{name: "F HEAD /v1/employees (rule GET only)", req: rq("HEAD", "/v1/employees", F()...), want: denied(403, "no_matching_rule")},
		}},
		{id: "B6", what: "other methods", cases: []attackCase{
			{name: "TRACE", req: rq("TRACE", "/v1/gifts", F()...), want: denied(403, "no_matching_rule")},
			{name: "MOVE", req: rq("MOVE", "/v1/gifts", F("Destination", "/v1/budgets/b1/spend")...), want: denied(403, "no_matching_rule")},
			{name: "FOO", req: rq("FOO", "/v1/gifts", F()...), want: denied(403, "no_matching_rule")},
			{name: "CONNECT to an origin-form path", req: rq("CONNECT", "/v1/gifts", F()...), want: denied(403, "no_matching_rule"),
				na: map[string]string{
					"h2": "CONNECT carries no :path in HTTP/2 (RFC 9113 8.5); the authority form is the next case",
					"h3": "CONNECT carries no :path in HTTP/3 (RFC 9114 4.4); the authority form is the next case",
				}},
			{name: "CONNECT, authority form (no path to judge)", req: rq("CONNECT", fmt.Sprintf("localhost:%d", mainPort), F()...), want: bad},
		}},
		{id: "B7", what: "0-RTT early data", cases: []attackCase{
			{name: "F POST /v1/gifts as HTTP/3 0-RTT", do: earlyData("POST"), na: noEarlyData},
			{name: "F GET /v1/gifts as HTTP/3 0-RTT", do: earlyData("GET"), na: noEarlyData},
		}},

		// C. Credentials
		{id: "C1", what: "two Authorization headers", cases: []attackCase{
			amb("R then F", "GET", "/v1/gifts", []string{"Authorization", "Bearer " + f.keys["R"], "Authorization", "Bearer " + f.keys["F"]}),
		}},
		{id: "C2", what: "comma list of keys", cases: []attackCase{
			amb("Bearer R, Bearer F", "GET", "/v1/gifts", []string{"Authorization", "Bearer " + f.keys["R"] + ", Bearer " + f.keys["F"]}),
		}},
		{id: "C3", what: "key in the query", cases: []attackCase{
			// F's id with another secret: Caddy's access log records the URI
			// (README), so no key of the fixture goes there.
			{name: "?api_key= and no header", req: rq("GET", "/v1/gifts?api_key="+must(keyring.NewKey(f.records["F"].ID))), want: denied(401, "missing_key")},
		}},
		{id: "C4", what: "Bearer spellings", cases: []attackCase{
			{name: "bearer (lower case)", req: rq("GET", "/v1/me", "Authorization", "bearer "+f.keys["F"]), want: allowedAs("F")},
			{name: "BEARER", req: rq("GET", "/v1/me", "Authorization", "BEARER "+f.keys["F"]), want: allowedAs("F")},
			amb("two spaces", "GET", "/v1/me", []string{"Authorization", "Bearer  " + f.keys["F"]}),
			{name: "trailing space", req: rq("GET", "/v1/me", "Authorization", "Bearer "+f.keys["F"]+" "),
				want: allowedAs("F"), per: map[string]want{"h2": bad, "h3": bad}},
			{name: "tab instead of the space", req: rq("GET", "/v1/me", "Authorization", "Bearer\t"+f.keys["F"]), want: denied(401, "invalid_key")},
			{name: "no space", req: rq("GET", "/v1/me", "Authorization", "Bearer"+f.keys["F"]), want: denied(401, "invalid_key")},
			{name: "Basic scheme", req: rq("GET", "/v1/me", "Authorization", "Basic Zjpn"), want: denied(401, "invalid_key")},
		}},
		{id: "C5", what: "wrong checksum", cases: []attackCase{
			{name: "F with its last checksum digit changed", req: rq("GET", "/v1/me", "Authorization", "Bearer "+badChecksum(f.keys["F"])), want: denied(401, "invalid_key")},
		}},
		{id: "C6", what: "flood of distinct unknown ids", cases: []attackCase{
			{name: "2000 unknown ids per protocol", do: keyFlood(2000)},
			{name: "500 unknown ids per protocol through the Redis store, twice", around: fleetRedis, do: redisKeyFlood(500), na: noRedis()},
		}},
		{id: "C7", what: "unknown id vs wrong secret", cases: []attackCase{
			{name: "identical answers", do: indistinguishable("UNKNOWN", "ROTOLD_PREVIOUS", "EXPIRED", "DISABLED", "NOTYET")},
		}},
		{id: "C8", what: "timing", elsewhere: "a benchmark, not a test: BenchmarkDeniedUnknownKey, BenchmarkDeniedBadChecksum, BenchmarkDeniedScope, BenchmarkAllowed (handler_test.go); lookup by id, then subtle.ConstantTimeCompare of the SHA-256"},
		{id: "C9", what: "key in a custom header and the access log", cases: []attackCase{
			{name: "X-Api-Key with the README's log filter", do: customHeaderKey},
		}},
		{id: "C10", what: "no key or hash in any log or metric", cases: []attackCase{
			{name: "every log line of the catalogue and the metrics", do: noSecretsLogged, na: map[string]string{
				"h2": "one check over the logs of all protocols (run once, as h1)", "h3": "one check over the logs of all protocols (run once, as h1)"}},
		}},
		{id: "C11", what: "key forwarded upstream", cases: []attackCase{
			{name: "F GET /v1/me: the key header is removed", req: rq("GET", "/v1/me", F()...), want: allowedAs("F")},
			{name: "strip_credentials off keeps it (explicit opt-out)", do: keptCredentials},
		}},
		{id: "C12", what: "rotation grace", cases: []attackCase{
			{name: "previous secret inside and after the grace period", do: rotationGrace},
		}},
		{id: "C13", what: "expired, not yet valid, disabled", cases: []attackCase{
			{name: "expired", req: rq("GET", "/v1/me", key("EXPIRED")...), want: denied(401, "invalid_key")},
			{name: "not yet valid", req: rq("GET", "/v1/me", key("NOTYET")...), want: denied(401, "invalid_key")},
			{name: "disabled", req: rq("GET", "/v1/me", key("DISABLED")...), want: denied(401, "invalid_key")},
		}},

		// D. Identity headers
		{id: "D1", what: "forged identity headers", cases: []attackCase{
			{name: "R with F's id in every header_up name", req: rq("GET", "/v1/gifts", R("X-Key-Id", f.records["F"].ID, "X-Account", "acme-eu", "X-Key-Scopes", "*:*", "X-Key-Pii", "true", "X-User-Id", f.records["F"].ID, "X-Key-Permission", "budgets:spend")...),
				want: allowedAs("R"), check: func(t *testing.T, up *http.Request) {
					if up.Header.Get("X-Key-Scopes") != "*:read" || up.Header.Get("X-Key-Pii") != "false" || up.Header.Get("X-User-Id") != f.records["R"].ID || up.Header.Get("X-Key-Permission") != "gifts:read" {
						t.Errorf("D1: upstream identity %v", up.Header)
					}
				}},
			{name: "forged headers on a public route are removed too", req: rq("GET", "/healthz", "X-Key-Id", f.records["F"].ID, "X-Account", "acme-eu"), want: allowedAs("")},
		}},
		{id: "D2", what: "header aliases", cases: []attackCase{
			{name: "X_Key_Id, X.Key.Id, X~Key~Id, x~key~id, X-Key-Id~, X_Account", req: rq("GET", "/v1/gifts", R("X_Key_Id", "evil", "X.Key.Id", "evil", "X~Key~Id", "evil", "x~key~id", "evil", "X-Key-Id~", "evil", "X_Account", "acme-eu")...), want: allowedAs("R")},
		}},
		{id: "D3", what: "Connection naming identity headers", cases: []attackCase{
			{name: "Connection: close, X-Account", req: rq("GET", "/v1/gifts", R("Connection", "close, X-Account")...), want: bad, per: connectionRefused},
			{name: "connection: x-key-id (lower case)", req: rq("GET", "/v1/gifts", R("connection", "x-key-id")...), want: bad, per: connectionRefused},
			{name: "Connection: KEEP-ALIVE, X-KEY-ID", req: rq("GET", "/v1/gifts", R("Connection", "KEEP-ALIVE, X-KEY-ID")...), want: bad, per: connectionRefused},
		}},
		{id: "D4", what: "certificate-forwarding headers", cases: []attackCase{
			{name: "B without a certificate, with every forwarding header", req: rq("GET", "/v1/gifts", key("B", forwarding...)...), want: denied(403, "client_certificate_required")},
			{name: "F with every forwarding header: none reaches the upstream", req: rq("GET", "/v1/gifts", F(forwarding...)...), want: allowedAs("F")},
		}},
		{id: "D5", what: "X-Forwarded-For and a per-key IP allowlist", cases: []attackCase{
			{name: "per-key IP allowlists are not built", na: map[string]string{
				"h1": "not built: no per-key IP allowlist (SECURITY.md)", "h2": "not built: no per-key IP allowlist (SECURITY.md)", "h3": "not built: no per-key IP allowlist (SECURITY.md)"}},
		}},
		{id: "D6", what: "account ambiguity", cases: []attackCase{
			amb("X-Account-ID twice", "GET", "/v1/gifts", R("X-Account-ID", "acme-us")),
			amb("X-Account-ID: acme-us,acme-eu", "GET", "/v1/gifts", key("R", "X-Account-ID", "acme-us,acme-eu")),
			{name: "path_segment source: the path decides, a header disagreeing is not a source", req: rq("GET", "/seg/acme-eu/gifts", R()...), want: denied(403, "account_forbidden")},
			{name: "path_segment source: header disagreeing, path allowed", req: rq("GET", "/seg/acme-us/gifts", key("R", "X-Account-ID", "acme-eu")...), want: allowedAs("R"), account: seg("acme-us")},
		}},
		{id: "D7", what: "restricted key without an account", cases: []attackCase{
			{name: "R GET /v1/gifts", req: rq("GET", "/v1/gifts", key("R")...), want: denied(403, "account_forbidden")},
			{name: "R GET /v1/me (authenticated)", req: rq("GET", "/v1/me", key("R")...), want: denied(403, "account_forbidden")},
		}},
		{id: "D8", what: "account normalisation", cases: []attackCase{
			{name: "ACME-US", req: rq("GET", "/v1/gifts", key("R", "X-Account-ID", "ACME-US")...), want: denied(403, "account_forbidden")},
			{name: "leading space", req: rq("GET", "/v1/gifts", key("R", "X-Account-ID", " acme-us")...), want: allowedAs("R"), per: map[string]want{"h2": bad, "h3": bad}},
			{name: "acme-us%00 (literal) in the header", req: rq("GET", "/v1/gifts", key("R", "X-Account-ID", "acme-us%00")...), want: denied(403, "account_forbidden")},
			{name: "path_segment acme-us%00", req: rq("GET", "/seg/acme-us%00/gifts", key("R")...), want: bad},
			{name: "path_segment acme-us/../acme-eu", req: rq("GET", "/seg/acme-us/../acme-eu/gifts", key("R")...), want: bad},
			{name: "path_segment ACME-US", req: rq("GET", "/seg/ACME-US/gifts", key("R")...), want: denied(403, "account_forbidden")},
		}},

		// E. Certificates and binding
		{id: "E1", what: "bound key without a certificate", cases: []attackCase{
			{name: "B, no certificate", req: rq("GET", "/v1/gifts", key("B")...), want: denied(403, "client_certificate_required")},
		}},
		{id: "E2", what: "bound key, another certificate of the same CA", cases: []attackCase{
			{name: "B with c2", req: rq("GET", "/v1/gifts", key("B")...).withCert(f.c2), want: denied(403, "client_certificate_mismatch")},
		}},
		{id: "E3", what: "self-signed copy of the bound certificate", cases: []attackCase{
			{name: "B with a self-signed copy of c1, client_auth mode request", req: rq("GET", "/v1/gifts", key("B")...).withCert(f.rogue).onPort(requestPort), want: denied(403, "client_certificate_required")},
			{name: "URI binding with the copy, mode request", req: rq("GET", "/v1/gifts", key("BURINOPIN")...).withCert(f.rogue).onPort(requestPort), want: denied(403, "client_certificate_required")},
			{name: "the genuine c1 under mode request is not verified either", req: rq("GET", "/v1/gifts", key("B")...).withCert(f.c1).onPort(requestPort), want: denied(403, "client_certificate_required")},
			{name: "the copy under verify_if_given", req: rq("GET", "/v1/gifts", key("B")...).withCert(f.rogue), want: refused(0, byHandshake)},
		}},
		{id: "E4", what: "second trusted CA, same subject and URI", cases: []attackCase{
			{name: "URI binding with issuer pin, c3", req: rq("GET", "/v1/gifts", key("BURI")...).withCert(f.c3), want: denied(403, "client_certificate_mismatch")},
			{name: "subject binding with issuer pin, c3", req: rq("GET", "/v1/gifts", key("BSUBJ")...).withCert(f.c3), want: denied(403, "client_certificate_mismatch")},
			{name: "URI binding without issuer pin, c3: accepted (documented; validate warns)", req: rq("GET", "/v1/gifts", key("BURINOPIN")...).withCert(f.c3), want: allowedAs("BURINOPIN")},
		}},
		{id: "E5", what: "two URI SANs", cases: []attackCase{
			{name: "URI binding, cert with c1's URI and another", req: rq("GET", "/v1/gifts", key("BURINOPIN")...).withCert(f.twoURIs), want: denied(403, "client_certificate_mismatch")},
		}},
		{id: "E6", what: "serverAuth-only certificate", cases: []attackCase{
			{name: "B with a serverAuth-only cert", req: rq("GET", "/v1/gifts", key("B")...).withCert(f.srvAuth), want: refused(0, byHandshake)},
		}},
		{id: "E7", what: "expired certificate", cases: []attackCase{
			{name: "verify_if_given", req: rq("GET", "/v1/gifts", key("B")...).withCert(f.expired), want: refused(0, byHandshake)},
			{name: "mode request: not verified, so no certificate", req: rq("GET", "/v1/gifts", key("B")...).withCert(f.expired).onPort(requestPort), want: denied(403, "client_certificate_required")},
		}},
		{id: "E8", what: "missing or garbled CA file", cases: []attackCase{
			{name: "caddy validate refuses a missing or unparsable CA file", do: configRefused, na: map[string]string{
				"h2": "a configuration check (run once, as h1)", "h3": "a configuration check (run once, as h1)"}},
			{name: "CA file with no PEM block (accepted as an empty pool): c1 is refused, fail closed", req: rq("GET", "/v1/me", key("B")...).withCert(f.c1).onPort(emptyCAPort), want: refused(0, byHandshake)},
			{name: "CA file with no PEM block: a certificate of the second CA is refused too", req: rq("GET", "/v1/me", F()...).withCert(f.c3).onPort(emptyCAPort), want: refused(0, byHandshake)},
			{name: "CA file with no PEM block: no certificate, unbound key", req: rq("GET", "/v1/me", F()...).onPort(emptyCAPort), want: allowedAs("F")},
		}},
		{id: "E9", what: "re-issued certificate, same key", cases: []attackCase{
			{name: "SPKI binding, c1 re-issued", req: rq("GET", "/v1/gifts", key("BSPKI")...).withCert(f.c1renewed), want: allowedAs("BSPKI")},
			{name: "leaf binding, c1 re-issued", req: rq("GET", "/v1/gifts", key("B")...).withCert(f.c1renewed), want: denied(403, "client_certificate_mismatch")},
		}},
		{id: "E10", what: "certificate principal with another key", cases: []attackCase{
			{name: "principal's cert alone", req: rq("GET", "/v1/gifts").withCert(f.c2), want: allowedAs("PRINCIPAL")},
			{name: "principal's cert + F (unbound): judged by F", req: rq("POST", "/v1/gifts", F()...).withCert(f.c2), want: allowedAs("F")},
			{name: "principal's cert + B (bound to c1)", req: rq("GET", "/v1/gifts", key("B")...).withCert(f.c2), want: denied(403, "client_certificate_mismatch")},
			{name: "principal's cert + an unknown key: no fallback to the principal", req: rq("GET", "/v1/gifts", key("UNKNOWN")...).withCert(f.c2), want: denied(401, "invalid_key")},
		}},
		{id: "E11", what: "TLS session resumption", cases: []attackCase{
			{name: "no resumption with client auth; binding on each full handshake", do: noResumption},
		}},
		{id: "E12", what: "same outcome on HTTP/1.1, HTTP/2, HTTP/3", cases: []attackCase{
			{name: "B with c1", req: rq("GET", "/v1/gifts", key("B")...).withCert(f.c1), want: allowedAs("B")},
			{name: "B with c2", req: rq("POST", "/v1/gifts", key("B")...).withCert(f.c2), want: denied(403, "client_certificate_mismatch")},
			{name: "require_client_cert route without a certificate", req: rq("GET", "/mtls/x", F()...), want: denied(403, "client_certificate_required")},
		}},
		{id: "E13", what: "SNI and Host disagree", cases: []attackCase{
			{name: "SNI localhost, Host other.test", req: wireReq{method: "GET", target: "/v1/me", host: "other.test", headers: hdr(F()...)}, want: refused(421, bySNI)},
			{name: "no SNI, Host localhost", req: wireReq{method: "GET", target: "/v1/me", sni: "-", headers: hdr(F()...)}, want: refused(421, bySNI)},
			{name: "SNI other.test (no certificate for it)", req: wireReq{method: "GET", target: "/v1/me", sni: "other.test", headers: hdr(F()...)}, want: refused(0, byHandshake)},
		}},
		{id: "E14", elsewhere: "TestDenylistKeysFile, TestDenylistDetails, TestDenylistCLIWhileRunning (denylist_test.go, HTTP/1.1 and HTTP/2), TestRedisFleet/a_denied_client_certificate (fleet-wide); keyring TestRedisDenylist, TestFileStoreDenylistReload"},

		// F. Store, cache, fleet
		{id: "F1", elsewhere: "TestRedisFleet/after_revoke_both_deny_within_a_second, TestRedisFleet/a_lost_announcement:_denied_within_cache_ttl; keyring TestRevocationPropagation"},
		{id: "F2", elsewhere: "keyring TestRedisStoreVersionRace"},
		{id: "F3", elsewhere: "TestRedisFleet/redis_down:_cached_keys_work,_uncached_get_503, TestRedisFleet/redis_paused_(a_partition)…; keyring TestRedisStoreRedisDown"},
		{id: "F4", elsewhere: "keyring TestRedisStoreForgedMessages"},
		{id: "F5", what: "bad keys file on reload", cases: []attackCase{
			{name: "the last good set stays", around: badKeysFile, do: lastGoodSet},
		}},
	}
}

// noRedis: the Redis variant needs redis-server (testredis.Binary).
func noRedis() map[string]string {
	if _, err := exec.LookPath("redis-server"); err == nil {
		return nil
	}
	why := "redis-server is not on PATH"
	return map[string]string{"h1": why, "h2": why, "h3": why}
}

// noEarlyData: TLS 1.3 early data exists only on HTTP/3 here.
var noEarlyData = map[string]string{
	"h1": "Go's crypto/tls has no TLS 1.3 early data over TCP: Caddy accepts 0-RTT only on HTTP/3",
	"h2": "Go's crypto/tls has no TLS 1.3 early data over TCP: Caddy accepts 0-RTT only on HTTP/3",
}

// connectionRefused: HTTP/2 and HTTP/3 forbid the Connection header (RFC
// 9113 8.2.2, RFC 9114 4.2); the servers refuse it before any handler.
var connectionRefused = map[string]want{
	"h2": refused(400, byGoH2+` ("Connection" is not valid in HTTP/2)`),
	"h3": refused(0, byQuic+" (H3_MESSAGE_ERROR)"),
}

// indistinguishable (C7): an unknown id, a wrong secret, an expired, a
// disabled and a not-yet-valid key get byte-identical answers (but Date).
func indistinguishable(names ...string) func(t *testing.T, f *fixture, proto string) string {
	return func(t *testing.T, f *fixture, proto string) string {
		t.Helper()
		var first wireResp
		for i, name := range names {
			before := f.upstream.count()
			got := f.send(rq("GET", "/v1/gifts", "Authorization", "Bearer "+f.keys[name]), proto)
			if got.err != nil || f.upstream.count() != before {
				t.Fatalf("C7 %s [%s]: %v, upstream reached: %v", name, proto, got.err, f.upstream.count() != before)
			}
			got.header.Del("Date")
			if i == 0 {
				first = got
				if got.status != 401 || got.body != `{"error":"invalid_key"}` {
					t.Errorf("C7 %s [%s]: %d %q", name, proto, got.status, got.body)
				}
				continue
			}
			if got.status != first.status || got.body != first.body || fmt.Sprint(got.header) != fmt.Sprint(first.header) {
				t.Errorf("C7 [%s]: %s answered %d %q %v, %s answered %d %q %v", proto, name, got.status, got.body, got.header, names[0], first.status, first.body, first.header)
			}
		}
		return kindDenied
	}
}

// keptCredentials (C11): with strip_credentials off the key goes upstream,
// as configured; nothing else changes.
func keptCredentials(t *testing.T, f *fixture, proto string) string {
	t.Helper()
	before := f.upstream.count()
	got := f.send(rq("GET", "/keep/x", "Authorization", "Bearer "+f.keys["F"]), proto)
	if got.err != nil || got.status != 200 || f.upstream.count() != before+1 {
		t.Fatalf("C11 keep [%s]: %d %v", proto, got.status, got.err)
	}
	if up := f.upstream.last(); up.Header.Get("Authorization") != "Bearer "+f.keys["F"] {
		t.Errorf("C11 keep [%s]: upstream Authorization %q", proto, up.Header.Get("Authorization"))
	}
	return kindAllowed
}

// lastGoodSet (F5): with the keys file broken, the catalogue site still
// answers from the last good set.
func lastGoodSet(t *testing.T, f *fixture, proto string) string {
	t.Helper()
	c := attackCase{req: wireReq{method: "GET", target: "/v1/me", port: attackPort, headers: hdr("X-Api-Key", attackSite.keys["AK"])}, want: allowedAs("AK")}
	return f.runAttack(t, "F5 key of the last good set ["+proto+"]", c, proto)
}
