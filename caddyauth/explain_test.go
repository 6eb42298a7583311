package caddyauth_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/scopegate/scopegate/caddyauth"
	"github.com/scopegate/scopegate/caddyauth/internal/keyring"
	"github.com/scopegate/scopegate/internal/testpki"
	"github.com/scopegate/scopegate/internal/testredis"
)

// explainResult is one run of `caddy scoped-key explain`.
type explainResult struct {
	stdout, stderr string
	err            error
	code           int // the exit status caddy would end with
}

func runExplain(t *testing.T, args ...string) explainResult {
	t.Helper()
	var out, errb bytes.Buffer
	err := caddyauth.RunScopedKey(&out, &errb, append([]string{"explain"}, args...)...)
	res := explainResult{stdout: out.String(), stderr: errb.String(), err: err}
	if err != nil {
		res.code = 1 // caddy's main: any error
		var ec interface{ ExitCode() int }
		if errors.As(err, &ec) {
			res.code = ec.ExitCode()
		}
	}
	return res
}

// explainWorld is a config with two sites, a keys file made with the CLI,
// and client certificates.
type explainWorld struct {
	dir, keys, config string
	jsonConfig        string            // config, adapted to JSON
	ids               map[string]string // key name → id
	hashes            []string          // every stored hash: must never be printed
	c1Chain, c2Chain  string            // PEM files: leaf then CA
	c3Chain, c1Leaf   string            // c3: another CA; c1Leaf: the leaf alone
	c4Chain           string            // on the denylist; the principal's URI
}

func newExplainWorld(t *testing.T) *explainWorld {
	t.Helper()
	w := &explainWorld{dir: t.TempDir(), ids: map[string]string{}}
	w.keys = filepath.Join(w.dir, "keys.json")
	ca1 := must(testpki.NewCA("Explain CA 1"))
	ca2 := must(testpki.NewCA("Explain CA 2"))
	c1 := must(ca1.Client("hris", testpki.URIs("spiffe://acme.test/hris")))
	c2 := must(ca1.Client("other", testpki.URIs("spiffe://acme.test/other")))
	c3 := must(ca2.Client("stranger"))
	c4 := must(ca1.Client("stolen", testpki.URIs("spiffe://acme.test/other")))
	write := func(name string, data []byte) string {
		p := filepath.Join(w.dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	w.c1Chain = write("c1-chain.pem", testpki.CertsPEM(c1.Cert, ca1.Cert))
	w.c1Leaf = write("c1.pem", testpki.CertsPEM(c1.Cert))
	w.c2Chain = write("c2-chain.pem", testpki.CertsPEM(c2.Cert, ca1.Cert))
	w.c3Chain = write("c3-chain.pem", testpki.CertsPEM(c3.Cert, ca2.Cert))
	w.c4Chain = write("c4-chain.pem", testpki.CertsPEM(c4.Cert, ca1.Cert))
	ca1File := write("ca1.pem", ca1.CertPEM())

	newKey := func(name string, args ...string) {
		out := scopedKey(t, append([]string{"new", "--keys", w.keys, "--name", name}, args...)...)
		if id, ok := keyring.ParseKey(out); ok {
			w.ids[name] = id
		} else if keyring.ValidID(out) {
			w.ids[name] = out // --no-secret prints the id
		} else {
			t.Fatalf("new %s printed %q", name, out)
		}
	}
	newKey("full", "--scope", "full_access")
	newKey("read", "--scope", "read_only", "--account", "acme-us")
	newKey("gifts", "--scope", "gifts:read")
	newKey("bound", "--scope", "full_access", "--cert", w.c1Chain)
	newKey("boundissuer", "--scope", "full_access", "--spiffe", "spiffe://acme.test/hris", "--issuer", ca1File)
	newKey("soon", "--scope", "full_access", "--not-before", "1h")
	newKey("short", "--scope", "full_access", "--expires", "1h")
	newKey("revoked", "--scope", "full_access")
	scopedKey(t, "revoke", "--keys", w.keys, w.ids["revoked"])
	newKey("principal", "--scope", "gifts:read", "--no-secret", "--spiffe", "spiffe://acme.test/other", "--issuer", ca1File)
	scopedKey(t, "deny-cert", "--keys", w.keys, "--cert", w.c4Chain, "--reason", "stolen")
	f, _ := must2(keyring.LoadFile(w.keys))
	for _, r := range f.Keys {
		if r.Hash != "" {
			w.hashes = append(w.hashes, r.Hash, strings.TrimPrefix(r.Hash, "sha256:"))
		}
	}

	w.config = write("Caddyfile", []byte(fmt.Sprintf(`{
	admin off
}
https://api.test {
	tls internal {
		client_auth {
			mode verify_if_given
			trust_pool file %[2]s
		}
	}
	handle /mtls/* {
		scoped_auth {
			keys_file %[1]s
			require_client_cert
			rule * /mtls/* authenticated
		}
		respond "mtls"
	}
	handle_path /rw/* {
		scoped_auth {
			keys_file %[1]s
			rule GET /v1/gifts* gifts:read
		}
		respond "rw"
	}
	handle {
		scoped_auth {
			keys_file %[1]s
			account header X-Account-ID
			rule GET,HEAD /v1/gifts*          gifts:read
			rule POST     /v1/budgets/*/spend budgets:spend
			rule GET      /v1/gifts/special   gifts:special
			rule *        /v1/me              authenticated
			rule *        /healthz            public
		}
		respond "main"
	}
}
http://other.test:8080 {
	scoped_auth {
		keys_file %[1]s
		rule GET /v1/gifts* gifts:admin
	}
	respond "other"
}
http://shadow.test:8081 {
	scoped_auth {
		keys_file %[1]s
		shadow
		rule GET /v1/gifts* gifts:admin
	}
	respond "shadow"
}
`, w.keys, ca1File)))
	adapted, _, err := caddyconfig.GetAdapter("caddyfile").Adapt(must(os.ReadFile(w.config)), nil)
	if err != nil {
		t.Fatal(err)
	}
	w.jsonConfig = write("caddy.json", adapted)
	return w
}

// TestExplainOutcomes runs every outcome through the CLI entry point.
func TestExplainOutcomes(t *testing.T) {
	w := newExplainWorld(t)
	site := []string{"--config", w.config, "--site", "api.test"}
	key := func(name string) []string { return []string{"--key-id", w.ids[name]} }
	cat := func(parts ...[]string) []string {
		var out []string
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	req := func(method, path string) []string { return []string{"--method", method, "--path", path} }
	tests := []struct {
		name string
		args []string
		code int
		want []string // substrings of stdout, in order
	}{
		{"allowed", cat(site, key("full"), req("POST", "/v1/budgets/b1/spend")), 0,
			[]string{"ok    rule", "rule 2: POST /v1/budgets/*/spend budgets:spend", "ok    permission", "granted by scope *:*", "outcome: allowed"}},
		{"authenticated", cat(site, key("gifts"), req("GET", "/v1/me")), 0,
			[]string{"rule 4: * /v1/me authenticated", "needs only a valid key", "outcome: allowed"}},
		{"public", cat(site, req("GET", "/healthz")), 0,
			[]string{"ok    public", "public rule", "skip  key", "outcome: allowed (public rule: no key needed)"}},
		{"public with key", cat(site, key("revoked"), req("GET", "/healthz")), 0,
			[]string{"outcome: allowed (public rule"}},
		{"no matching rule", cat(site, key("full"), req("DELETE", "/v1/gifts")), 1,
			[]string{"FAIL  rule", "no rule matches DELETE /v1/gifts", "outcome: 403 no_matching_rule", "fix: add a rule"}},
		{"ambiguous path", cat(site, key("full"), req("GET", "/v1/gifts%2F..%2Fbudgets")), 1,
			[]string{"FAIL  request", "dot segment", "outcome: 400 bad_request"}},
		{"encoded slash", cat(site, key("full"), req("GET", "/v1/gifts%2fb1")), 1,
			[]string{"FAIL  request", "encoded slash", "outcome: 400 bad_request"}},
		{"empty segment", cat(site, key("full"), req("GET", "/v1//gifts")), 1,
			[]string{"FAIL  request", "//", "outcome: 400 bad_request"}},
		{"lower-case method", cat(site, key("full"), req("get", "/v1/gifts")), 1,
			[]string{"upper-case token", "outcome: 400 bad_request"}},
		{"override header", cat(site, key("full"), req("GET", "/v1/gifts"), []string{"--header", "X-HTTP-Method-Override: DELETE"}), 1,
			[]string{"override", "outcome: 400 bad_request"}},
		{"bad account value", cat(site, key("full"), req("GET", "/v1/gifts"), []string{"--account", "a,b"}), 1,
			[]string{"FAIL  request", "outcome: 400 bad_request"}},
		{"missing key", cat(site, req("GET", "/v1/me")), 1,
			[]string{"FAIL  key", "no key and no verified client certificate", "outcome: 401 missing_key", "Bearer realm=\"scoped_auth\"", "fix: send the key as Authorization: Bearer <key>"}},
		{"disabled", cat(site, key("revoked"), req("GET", "/v1/me")), 1,
			[]string{"ok    key", "FAIL  validity", "disabled (revoked)", "outcome: 401 invalid_key"}},
		{"expired", cat(site, key("short"), req("GET", "/v1/me"), []string{"--at", "2h"}), 1,
			[]string{"FAIL  validity", "expired", "outcome: 401 invalid_key"}},
		{"not yet valid", cat(site, key("soon"), req("GET", "/v1/me")), 1,
			[]string{"FAIL  validity", "not yet valid", "outcome: 401 invalid_key", "fix: the key becomes valid at"}},
		{"valid later", cat(site, key("soon"), req("GET", "/v1/me"), []string{"--at", "2h"}), 0,
			[]string{"ok    validity", "enabled; valid from ", "outcome: allowed"}},
		{"cert required by binding", cat(site, key("bound"), req("GET", "/v1/me")), 1,
			[]string{"FAIL  cert binding", "bound to a client certificate", "outcome: 403 client_certificate_required", "--cert PEM"}},
		{"cert required by handler", cat(site, key("full"), req("GET", "/mtls/x")), 1,
			[]string{"path /mtls/*", "FAIL  client cert", "require_client_cert", "outcome: 403 client_certificate_required"}},
		{"cert mismatch", cat(site, key("bound"), req("GET", "/v1/me"), []string{"--cert", w.c2Chain}), 1,
			[]string{"FAIL  cert binding", "matches none of the key's pins", "outcome: 403 client_certificate_mismatch"}},
		{"cert match", cat(site, key("bound"), req("GET", "/v1/me"), []string{"--cert", w.c1Chain}), 0,
			[]string{"ok    cert binding", "outcome: allowed", "note: the --cert chain is treated as verified"}},
		{"issuer pin needs the chain", cat(site, key("boundissuer"), req("GET", "/v1/me"), []string{"--cert", w.c1Leaf}), 1,
			[]string{"outcome: 403 client_certificate_mismatch", "put the issuer after the leaf"}},
		{"issuer pin with chain", cat(site, key("boundissuer"), req("GET", "/v1/me"), []string{"--cert", w.c1Chain}), 0,
			[]string{"outcome: allowed"}},
		{"insufficient scope", cat(site, key("read"), req("POST", "/v1/budgets/b1/spend"), []string{"--account", "acme-us"}), 1,
			[]string{"FAIL  permission", "needs budgets:spend; the key's scopes: *:read", "outcome: 403 insufficient_scope",
				`scope="budgets:spend"`, "fix: add scope budgets:spend"}},
		{"later failures shown", cat(site, key("read"), req("POST", "/v1/budgets/b1/spend"), []string{"--account", "acme-eu"}), 1,
			[]string{"FAIL  permission", "skip  account", "would also fail: account \"acme-eu\"", "outcome: 403 insufficient_scope"}},
		{"account forbidden", cat(site, key("read"), req("GET", "/v1/gifts"), []string{"--account", "acme-eu"}), 1,
			[]string{"FAIL  account", `account "acme-eu" is not among the key's accounts (acme-us)`, "outcome: 403 account_forbidden"}},
		{"account missing", cat(site, key("read"), req("GET", "/v1/gifts")), 1,
			[]string{"FAIL  account", "names no account", "outcome: 403 account_forbidden", "fix: send the account in header X-Account-Id"}},
		{"account allowed", cat(site, key("read"), req("GET", "/v1/gifts"), []string{"--account", "acme-us"}), 0,
			[]string{`account "acme-us" is one of the key's accounts`, "outcome: allowed"}},
		{"later rule shadowed", cat(site, key("gifts"), req("GET", "/v1/gifts/special")), 0,
			[]string{"rule 1: GET,HEAD /v1/gifts* gifts:read", "later rule 3 also matches", "outcome: allowed"}},
		{"principal", cat(site, req("GET", "/v1/gifts"), []string{"--cert", w.c2Chain}), 0,
			[]string{"certificate principal " + w.ids["principal"], "outcome: allowed: the request goes on with certificate principal"}},
		{"principal by id", cat(site, key("principal"), req("GET", "/v1/me"), []string{"--cert", w.c2Chain}), 0,
			[]string{"certificate principal " + w.ids["principal"], "outcome: allowed"}},
		{"principal without cert", cat(site, key("principal"), req("GET", "/v1/me")), 1,
			[]string{"is a certificate principal", "outcome: 401 missing_key"}},
		{"principal scope", cat(site, req("POST", "/v1/budgets/b1/spend"), []string{"--cert", w.c2Chain}), 1,
			[]string{"outcome: 403 insufficient_scope"}},
		{"denied certificate", cat(site, req("GET", "/v1/gifts"), []string{"--cert", w.c4Chain}), 1,
			[]string{"FAIL  cert denylist", "CN=stolen", "is on the denylist", "outcome: 403 client_certificate_revoked"}},
		{"denied certificate on a public rule", cat(site, key("full"), req("GET", "/healthz"), []string{"--cert", w.c4Chain}), 1,
			[]string{"FAIL  cert denylist", "skip  public", "outcome: 403 client_certificate_revoked"}},
		{"certificate not denied", cat(site, key("full"), req("GET", "/healthz"), []string{"--cert", w.c1Chain}), 0,
			[]string{"ok    cert denylist", "outcome: allowed (public"}},
		{"unknown certificate", cat(site, req("GET", "/v1/me"), []string{"--cert", w.c3Chain}), 1,
			[]string{"matches no certificate principal", "outcome: 401 missing_key"}},
		{"rewritten path", cat(site, key("gifts"), req("GET", "/rw/v1/gifts")), 0,
			[]string{"path /rw/*", "path after rewrites: /v1/gifts", "outcome: allowed"}},
		{"site port", []string{"--config", w.config, "--site", "other.test:8080", "--key-id", w.ids["gifts"], "--method", "GET", "--path", "/v1/gifts"}, 1,
			[]string{"site other.test on :8080", "needs gifts:admin", "outcome: 403 insufficient_scope"}},
		{"every site", []string{"--config", w.config, "--key-id", w.ids["gifts"], "--method", "GET", "--path", "/v1/gifts"}, 1,
			[]string{"site api.test on :443", "outcome: allowed", "site other.test on :8080", "outcome: 403 insufficient_scope", "site shadow.test on :8081", "outcome: allowed: shadow mode", "result: denied on at least one site"}},
		{"shadow mode", []string{"--config", w.config, "--site", "shadow.test", "--key-id", w.ids["gifts"], "--method", "GET", "--path", "/v1/gifts"}, 0,
			[]string{"FAIL  permission", "outcome: allowed: shadow mode; without it 403 insufficient_scope"}},
		{"not guarded", []string{"--config", w.config, "--site", "nowhere.test", "--method", "GET", "--path", "/x"}, 0,
			[]string{"no scoped_auth handler is reached"}},
		{"json config", []string{"--config", w.jsonConfig, "--adapter", "json", "--site", "api.test", "--key-id", w.ids["read"], "--method", "GET", "--path", "/v1/gifts", "--account", "acme-eu"}, 1,
			[]string{"host api.test", "outcome: 403 account_forbidden"}},
		{"store override", cat(site, key("full"), req("GET", "/v1/me"), []string{"--keys", w.keys}), 0,
			[]string{"store:  file " + w.keys, "outcome: allowed"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := runExplain(t, tc.args...)
			if res.code != tc.code {
				t.Fatalf("exit %d, want %d (err %v)\n%s", res.code, tc.code, res.err, res.stdout)
			}
			rest := res.stdout
			for _, want := range tc.want {
				i := strings.Index(rest, want)
				if i < 0 {
					t.Fatalf("missing %q (in order) in:\n%s", want, res.stdout)
				}
				rest = rest[i+len(want):]
			}
			for _, h := range w.hashes {
				if strings.Contains(res.stdout, h) || strings.Contains(res.stderr, h) {
					t.Fatalf("output contains a key hash:\n%s", res.stdout)
				}
			}
			if res.stderr != "" {
				t.Errorf("stderr: %q", res.stderr)
			}
		})
	}
}

// TestExplainJSON: --json is one object with the same outcome.
func TestExplainJSON(t *testing.T) {
	w := newExplainWorld(t)
	res := runExplain(t, "--config", w.config, "--site", "api.test", "--key-id", w.ids["read"],
		"--method", "POST", "--path", "/v1/budgets/b1/spend", "--account", "acme-us", "--json")
	if res.code != 1 {
		t.Fatalf("exit %d: %v\n%s", res.code, res.err, res.stdout)
	}
	var rep struct {
		Allowed bool `json:"allowed"`
		Sites   []struct {
			Outcome struct {
				Allowed bool   `json:"allowed"`
				Status  int    `json:"status"`
				Error   string `json:"error"`
			} `json:"outcome"`
			Handlers []struct {
				Checks []struct{ Check, Status, Detail string } `json:"checks"`
				Fix    string                                   `json:"fix"`
			} `json:"handlers"`
		} `json:"sites"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &rep); err != nil {
		t.Fatalf("%v\n%s", err, res.stdout)
	}
	if rep.Allowed || len(rep.Sites) != 1 || rep.Sites[0].Outcome.Status != 403 || rep.Sites[0].Outcome.Error != "insufficient_scope" {
		t.Fatalf("%+v", rep)
	}
	checks := rep.Sites[0].Handlers[0].Checks
	if len(checks) != 11 || checks[9].Check != "permission" || checks[9].Status != "FAIL" {
		t.Errorf("checks: %+v", checks)
	}
	if !strings.Contains(rep.Sites[0].Handlers[0].Fix, "budgets:spend") {
		t.Errorf("fix: %q", rep.Sites[0].Handlers[0].Fix)
	}
}

// TestExplainBadInput: every usage, config or store error is one line and
// exit status 2.
func TestExplainBadInput(t *testing.T) {
	w := newExplainWorld(t)
	noAuth := filepath.Join(w.dir, "Caddyfile.plain")
	if err := os.WriteFile(noAuth, []byte("http://x.test {\n\trespond ok\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	broken := filepath.Join(w.dir, "Caddyfile.broken")
	if err := os.WriteFile(broken, []byte("http://x.test {\n\tscoped_auth {\n\t\tkeys_file k.json\n\t\trule GET /x%2F a:b\n\t}\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	unknown := must(keyring.NewID())
	fullKey := must(keyring.NewKey(w.ids["full"]))
	base := []string{"--method", "GET", "--path", "/v1/me"}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown id", []string{"--config", w.config, "--key-id", unknown}, "unknown key id " + unknown},
		{"key instead of id", []string{"--config", w.config, "--key-id", fullKey}, "not the key itself"},
		{"bad id", []string{"--config", w.config, "--key-id", "NOPE"}, "invalid key id"},
		{"missing config", []string{"--config", filepath.Join(w.dir, "missing")}, "no such file"},
		{"no config flag", []string{}, "--config"},
		{"no scoped_auth", []string{"--config", noAuth}, "no scoped_auth handler"},
		{"invalid rule", []string{"--config", broken, "--adapter", "caddyfile"}, "contains %"},
		{"bad adapter", []string{"--config", w.config, "--adapter", "yaml9"}, "no such config adapter"},
		{"bad flag", []string{"--config", w.config, "--nope"}, "unknown flag: --nope"},
		{"argument", []string{"--config", w.config, "extra"}, "takes no arguments"},
		{"both stores", []string{"--config", w.config, "--keys", w.keys, "--redis", "redis://127.0.0.1:1/0"}, "not both"},
		{"unreadable store", []string{"--config", w.config, "--keys", filepath.Join(w.dir, "nokeys.json"), "--key-id", w.ids["full"], "--site", "api.test"}, "no such file"},
		{"bad path", []string{"--config", w.config, "--path", "v1/me"}, "starting with /"},
		{"key in header", []string{"--config", w.config, "--header", "Authorization: Bearer " + fullKey}, "do not pass keys"},
		{"bad cert", []string{"--config", w.config, "--cert", w.config}, "no PEM CERTIFICATE"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if !strings.Contains(strings.Join(args, " "), "--path") && tc.name != "no config flag" {
				args = append(append([]string(nil), args...), base...)
			}
			res := runExplain(t, args...)
			if res.code != 2 || res.err == nil {
				t.Fatalf("exit %d, want 2 (err %v)\n%s", res.code, res.err, res.stdout)
			}
			msg := res.err.Error()
			if strings.Contains(msg, "\n") || !strings.Contains(msg, tc.want) {
				t.Errorf("error %q, want one line containing %q", msg, tc.want)
			}
			if strings.Contains(msg, fullKey) || strings.Contains(res.stdout, fullKey) {
				t.Errorf("the key was echoed")
			}
			if res.stdout != "" {
				t.Errorf("stdout on error: %q", res.stdout)
			}
		})
	}
}

// TestExplainRedis: the fleet store, given with --redis and as the
// handler's own redis.
func TestExplainRedis(t *testing.T) {
	srv := testredis.Start(t)
	dir := t.TempDir()
	out := scopedKey(t, "new", "--redis", srv.URL(), "--scope", "gifts:read", "--account", "acme-us")
	id, ok := keyring.ParseKey(out)
	if !ok {
		t.Fatalf("new printed %q", out)
	}
	config := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(config, []byte(fmt.Sprintf(`http://api.test {
	scoped_auth {
		redis %s
		account query account
		rule GET /v1/gifts* gifts:read
		rule POST /v1/gifts gifts:send
	}
	respond ok
}
`, srv.URL())), 0o644); err != nil {
		t.Fatal(err)
	}
	res := runExplain(t, "--config", config, "--key-id", id, "--method", "GET", "--path", "/v1/gifts?account=acme-us")
	if res.code != 0 || !strings.Contains(res.stdout, "store:  redis "+srv.URL()) || !strings.Contains(res.stdout, "outcome: allowed") {
		t.Fatalf("handler's redis: exit %d %v\n%s", res.code, res.err, res.stdout)
	}
	res = runExplain(t, "--config", config, "--redis", srv.URL(), "--key-id", id, "--method", "POST", "--path", "/v1/gifts", "--account", "acme-us")
	if res.code != 1 || !strings.Contains(res.stdout, "outcome: 403 insufficient_scope") {
		t.Fatalf("--redis: exit %d %v\n%s", res.code, res.err, res.stdout)
	}
	// The denylist, read from Redis.
	ca := must(testpki.NewCA("Explain Redis CA"))
	leaf := must(ca.Client("svc"))
	chain := filepath.Join(dir, "chain.pem")
	if err := os.WriteFile(chain, testpki.CertsPEM(leaf.Cert, ca.Cert), 0o600); err != nil {
		t.Fatal(err)
	}
	scopedKey(t, "deny-cert", "--redis", srv.URL(), "--cert", chain)
	tlsConfig := filepath.Join(dir, "Caddyfile.tls")
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tlsConfig, []byte(fmt.Sprintf(`https://api.test {
	tls internal {
		client_auth {
			mode verify_if_given
			trust_pool file %s
		}
	}
	scoped_auth {
		redis %s
		rule GET /v1/gifts* gifts:read
	}
	respond ok
}
`, caFile, srv.URL())), 0o644); err != nil {
		t.Fatal(err)
	}
	res = runExplain(t, "--config", tlsConfig, "--key-id", id, "--method", "GET", "--path", "/v1/gifts", "--cert", chain)
	if res.code != 1 || !strings.Contains(res.stdout, "outcome: 403 client_certificate_revoked") {
		t.Fatalf("denied certificate: exit %d %v\n%s", res.code, res.err, res.stdout)
	}

	scopedKey(t, "revoke", "--redis", srv.URL(), id)
	res = runExplain(t, "--config", config, "--key-id", id, "--method", "GET", "--path", "/v1/gifts", "--account", "acme-us")
	if res.code != 1 || !strings.Contains(res.stdout, "disabled (revoked), version 2") {
		t.Fatalf("revoked: exit %d %v\n%s", res.code, res.err, res.stdout)
	}
	res = runExplain(t, "--config", config, "--key-id", must(keyring.NewID()), "--method", "GET", "--path", "/v1/gifts")
	if res.code != 2 || !strings.Contains(res.err.Error(), "unknown key id") {
		t.Fatalf("unknown id: exit %d %v", res.code, res.err)
	}
	srv.Stop()
	res = runExplain(t, "--config", config, "--key-id", id, "--method", "GET", "--path", "/v1/gifts")
	if res.code != 2 || strings.Contains(res.err.Error(), "\n") {
		t.Fatalf("redis down: exit %d %v", res.code, res.err)
	}
}

// TestExplainAgreesWithCaddy: for each request, explain's outcome is the
// answer of the real Caddy running the same Caddyfile and keys file.
func TestExplainAgreesWithCaddy(t *testing.T) {
	f := setup(t)
	dir := t.TempDir()
	config := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(config, []byte(f.config), 0o600); err != nil {
		t.Fatal(err)
	}
	chainFile := func(leaf *testpki.Leaf, ca *testpki.CA) string {
		p := filepath.Join(dir, strings.ReplaceAll(leaf.Cert.Subject.CommonName, " ", "_")+fmt.Sprint(leaf.Cert.SerialNumber)+".pem")
		if err := os.WriteFile(p, testpki.CertsPEM(leaf.Cert, ca.Cert), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	type leafCA struct {
		leaf *testpki.Leaf
		ca   *testpki.CA
	}
	c1, c2, c3 := &leafCA{f.c1, f.ca1}, &leafCA{f.c2, f.ca1}, &leafCA{f.c3, f.ca2}
	type agreeCase struct {
		method, target, key, account string
		cert                         *leafCA
		headers                      []string
	}
	tests := []agreeCase{
		{"GET", "/v1/gifts", "R", "acme-us", nil, nil},
		{"POST", "/v1/budgets/b1/spend", "R", "acme-us", nil, nil},
		{"POST", "/v1/budgets/b1/spend", "F", "", nil, nil},
		{"GET", "/v1/gifts", "R", "", nil, nil},
		{"GET", "/v1/gifts", "R", "acme-eu", nil, nil},
		{"GET", "/v1/me", "EXPIRED", "", nil, nil},
		{"GET", "/v1/me", "DISABLED", "", nil, nil},
		{"GET", "/v1/me", "NOTYET", "", nil, nil},
		{"GET", "/v1/me", "NOACCOUNTS", "", nil, nil},
		{"GET", "/v1/me", "B", "", nil, nil},
		{"GET", "/v1/me", "B", "", c2, nil},
		{"GET", "/v1/me", "B", "", c1, nil},
		{"GET", "/v1/me", "BURI", "", c1, nil},
		{"GET", "/v1/me", "BURI", "", c3, nil},
		{"GET", "/v1/me", "BSUBJ", "", c3, nil},
		{"DELETE", "/v1/gifts", "F", "", nil, nil},
		{"GET", "/healthz", "", "", nil, nil},
		{"GET", "/healthz", "DISABLED", "", nil, nil},
		{"GET", "/v1/me", "", "", nil, nil},
		{"GET", "/v1/gifts", "", "", c2, nil},
		{"POST", "/v1/gifts", "", "", c2, nil},
		{"GET", "/v1/me", "", "", c1, nil},
		{"GET", "/v1//gifts", "F", "", nil, nil},
		{"GET", "/v1/gifts%2Fx", "F", "", nil, nil},
		{"GET", "/v1/./gifts", "F", "", nil, nil},
		{"GET", "/v1/gifts", "F", "", nil, []string{"X-HTTP-Method-Override: DELETE"}},
		{"GET", "/v1/gifts", "F", "", nil, []string{"Connection: X-Key-Id"}},
		{"GET", "/seg/acme-us/gifts", "GIFTS", "", nil, nil},
		{"GET", "/seg/other/gifts", "GIFTS", "", nil, nil},
		{"GET", "/q/gifts?account=acme-eu", "GIFTS", "", nil, nil},
		{"GET", "/q/gifts?account=a&account=b", "GIFTS", "", nil, nil},
		{"GET", "/rw/v1/gifts", "R", "acme-us", nil, nil},
		{"GET", "/rw/v1/gifts", "R", "", nil, nil},
		{"GET", "/mtls/x", "F", "", nil, nil},
		{"GET", "/mtls/x", "F", "", c2, nil},
		{"GET", "/keep/x", "R", "", nil, nil},
	}
	// The site whose client_auth mode is request: certificates are not
	// verified, so scoped_auth never counts them.
	onRequestPort := len(tests)
	tests = append(tests, agreeCase{"GET", "/v1/me", "B", "", c1, nil}, agreeCase{"GET", "/v1/gifts", "", "", c2, nil})
	for i, tc := range tests {
		port := mainPort
		if i >= onRequestPort {
			port = requestPort
		}
		name := fmt.Sprintf("port %d: %s %s key=%s account=%s cert=%v %v", port, tc.method, tc.target, tc.key, tc.account, tc.cert != nil, tc.headers)
		// The real Caddy.
		headers := append([]string(nil), tc.headers...)
		if tc.key != "" {
			headers = append(headers, bearer(f.keys[tc.key]))
		}
		if tc.account != "" {
			headers = append(headers, "X-Account-ID: "+tc.account)
		}
		var leaf *testpki.Leaf
		if tc.cert != nil {
			leaf = tc.cert.leaf
		}
		got := f.raw(t, port, leaf, rawReq(tc.method, tc.target, headers...))
		code := ""
		if got.status >= 400 {
			var body struct{ Error string }
			_ = json.Unmarshal([]byte(got.body), &body)
			code = body.Error
		}
		// explain.
		args := []string{"--config", config, "--site", fmt.Sprintf("localhost:%d", port), "--method", tc.method, "--path", tc.target, "--json"}
		if tc.key != "" {
			args = append(args, "--key-id", f.records[tc.key].ID)
		}
		if tc.account != "" {
			args = append(args, "--account", tc.account)
		}
		if tc.cert != nil {
			args = append(args, "--cert", chainFile(tc.cert.leaf, tc.cert.ca))
		}
		for _, h := range tc.headers {
			args = append(args, "--header", h)
		}
		res := runExplain(t, args...)
		if res.code == 2 {
			t.Errorf("%s: explain failed: %v", name, res.err)
			continue
		}
		var rep struct {
			Sites []struct {
				Outcome struct {
					Allowed bool   `json:"allowed"`
					Status  int    `json:"status"`
					Error   string `json:"error"`
				} `json:"outcome"`
			} `json:"sites"`
		}
		if err := json.Unmarshal([]byte(res.stdout), &rep); err != nil || len(rep.Sites) != 1 {
			t.Errorf("%s: explain output (%v):\n%s", name, err, res.stdout)
			continue
		}
		o := rep.Sites[0].Outcome
		explained := "allowed"
		if !o.Allowed {
			explained = fmt.Sprintf("%d %s", o.Status, o.Error)
		}
		real := "allowed"
		if got.status >= 400 {
			real = fmt.Sprintf("%d %s", got.status, code)
		} else if got.status != 200 {
			real = fmt.Sprintf("status %d", got.status)
		}
		t.Logf("%s: explain %s, Caddy %s", name, explained, real)
		if explained != real {
			t.Errorf("%s: explain says %s, Caddy answered %s (%q)", name, explained, real, got.body)
		}
		if (res.code == 0) != o.Allowed {
			t.Errorf("%s: exit %d with allowed=%v", name, res.code, o.Allowed)
		}
	}
	if t.Failed() {
		return
	}

	// A certificate on the denylist: refused on every rule, public included.
	c2File := chainFile(f.c2, f.ca1)
	scopedKey(t, "deny-cert", "--keys", f.keysFile, "--cert", c2File)
	defer func() {
		scopedKey(t, "allow-cert", "--keys", f.keysFile, "--cert", c2File)
		waitRaw(t, f, f.c2, "/healthz", 200)
	}()
	waitRaw(t, f, f.c2, "/healthz", 403)
	for _, target := range []string{"/healthz", "/v1/gifts"} {
		got := f.raw(t, mainPort, f.c2, rawReq("GET", target))
		res := runExplain(t, "--config", config, "--site", fmt.Sprintf("localhost:%d", mainPort), "--method", "GET", "--path", target, "--cert", c2File)
		if got.body != `{"error":"client_certificate_revoked"}` || res.code != 1 || !strings.Contains(res.stdout, "outcome: 403 client_certificate_revoked") {
			t.Errorf("denied certificate, %s: Caddy %d %s; explain exit %d:\n%s", target, got.status, got.body, res.code, res.stdout)
		}
	}
}

// waitRaw waits until the main site answers GET target with status (the
// keys file is polled about once a second).
func waitRaw(t *testing.T, f *fixture, cert *testpki.Leaf, target string, status int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := f.raw(t, mainPort, cert, rawReq("GET", target))
		if got.status == status {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: status stayed %d, want %d", target, got.status, status)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
