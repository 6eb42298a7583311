package caddyauth_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scopegate/scopegate/caddyauth/internal/keyring"
	"github.com/scopegate/scopegate/internal/testpki"
	"github.com/scopegate/scopegate/internal/testport"
)

// shadowDenyPort is a site in shadow mode over the fixture's keys file.
var shadowDenyPort = testport.Port(9610)

func init() {
	fixtureSites["denylist-shadow"] = func(f *fixture) string {
		return fmt.Sprintf(`
https://localhost:%d {
	tls %s %s {
		client_auth {
			mode verify_if_given
			trust_pool file %s
		}
	}
	scoped_auth {
		keys_file %s
		shadow
		rule GET /v1/gifts* gifts:read
		rule *   /healthz   public
	}
	reverse_proxy %s
}
`, shadowDenyPort, f.srvCert, f.srvKey, f.clientTrustBundle, f.keysFile, strings.TrimPrefix(f.upstream.srv.URL, "http://"))
	}
}

// writeDenylist writes the fixture's keys (as writeKeys does) with a
// denied_certs list.
func (f *fixture) writeDenylist(t *testing.T, entries ...*keyring.DeniedCert) {
	t.Helper()
	file := keyring.File{DeniedCerts: entries}
	for _, name := range slices.Sorted(maps.Keys(f.records)) {
		file.Keys = append(file.Keys, f.records[name])
	}
	data, err := json.MarshalIndent(file, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := writeAtomic(f.keysFile, data); err != nil {
		t.Fatal(err)
	}
}

func denySHA(c *testpki.Leaf) *keyring.DeniedCert { return &keyring.DeniedCert{SHA256: c.SHA256Hex()} }

func denySerial(c *testpki.Leaf) *keyring.DeniedCert {
	s, _ := keyring.CanonicalSerial(c.Cert.SerialNumber)
	return &keyring.DeniedCert{Issuer: c.Cert.Issuer.String(), Serial: s, Reason: "by serial"}
}

// denyWaitPublic polls the public route with a client until it answers status,
// and returns how long that took.
func denyWaitPublic(t *testing.T, f *fixture, c *http.Client, port, status int) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		got := f.do(t, c, "GET", url(port, "/healthz"))
		if got.status == status {
			return time.Since(start)
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("public route answered %d %s, want %d", got.status, got.body, status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// denyEventually polls cond until it holds (at most 10 s).
func denyEventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("%s: still not the case after 10s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// denyRestoreKeys puts the fixture's keys file back without a denylist and
// waits until the running Caddy has it: the main route, then one more poll
// interval, by which every other handler of the fixture (each polls the
// file on its own) has reloaded too.
func denyRestoreKeys(t *testing.T, f *fixture) {
	f.writeKeys(t)
	denyWaitPublic(t, f, f.client(f.c1, "h1"), mainPort, 200)
	denyWaitPublic(t, f, f.client(f.c2, "h1"), mainPort, 200)
	time.Sleep(1500 * time.Millisecond)
}

// TestDenylistKeysFile: a denied certificate is refused with 403
// client_certificate_revoked on every route (a key bound to it, a key not
// bound to it, a certificate principal, a public route), over HTTP/1.1 and
// HTTP/2, also on connections opened before the denial; nothing reaches
// the upstream; denying the CA cuts off everything it issued; removing the
// entries restores access.
func TestDenylistKeysFile(t *testing.T) {
	f := setup(t)
	defer denyRestoreKeys(t, f)
	type check struct {
		name    string
		cert    *testpki.Leaf
		method  string
		path    string
		headers []string
		status  int
		code    string
	}
	revoked := "client_certificate_revoked"
	bound := []string{"Authorization", "Bearer " + f.keys["B"]}
	unbound := []string{"Authorization", "Bearer " + f.keys["F"]}
	// Each step is in force once its probe certificate's status on the
	// public route has changed.
	steps := []struct {
		name    string
		entries []*keyring.DeniedCert
		probe   *testpki.Leaf
		checks  []check
	}{
		{"c1 by fingerprint, c2 by issuer and serial", []*keyring.DeniedCert{denySHA(f.c1), denySerial(f.c2)}, f.c1, []check{
			{"key bound to the certificate", f.c1, "GET", "/v1/gifts", bound, 403, revoked},
			{"key not bound to it", f.c1, "POST", "/v1/gifts", unbound, 403, revoked},
			{"certificate principal", f.c2, "GET", "/v1/gifts", nil, 403, revoked},
			{"public route", f.c1, "GET", "/healthz", nil, 403, revoked},
			{"public route, principal's certificate", f.c2, "GET", "/healthz", nil, 403, revoked},
			{"no rule still wins", f.c1, "GET", "/v1/secret", unbound, 403, "no_matching_rule"},
			{"no certificate", nil, "GET", "/v1/gifts", unbound, 200, ""},
			{"renewed certificate, same key", f.c1renewed, "GET", "/v1/gifts", unbound, 200, ""},
			{"other CA, same subject", f.c3, "GET", "/v1/gifts", unbound, 200, ""},
		}},
		{"the CA by fingerprint", []*keyring.DeniedCert{{SHA256: testpki.LeafSHA256Hex(f.ca1.Cert), Reason: "CA compromised"}}, f.c1renewed, []check{
			{"c1 with an unbound key", f.c1, "GET", "/v1/gifts", unbound, 403, revoked},
			{"c2 principal", f.c2, "GET", "/v1/gifts", nil, 403, revoked},
			{"c1 renewed, public route", f.c1renewed, "GET", "/healthz", nil, 403, revoked},
			{"other CA", f.c3, "GET", "/v1/gifts", unbound, 200, ""},
			{"no certificate", nil, "GET", "/healthz", nil, 200, ""},
		}},
		{"entries removed", nil, f.c1, []check{
			{"key bound to the certificate", f.c1, "GET", "/v1/gifts", bound, 200, ""},
			{"certificate principal", f.c2, "GET", "/v1/gifts", nil, 200, ""},
			{"public route", f.c1, "GET", "/healthz", nil, 200, ""},
		}},
	}
	// Clients (and so connections) made before the first denial.
	clients := map[string]*http.Client{}
	client := func(cert *testpki.Leaf, proto string) *http.Client {
		k := proto
		if cert != nil {
			k += cert.SHA256Hex()
		}
		if clients[k] == nil {
			clients[k] = f.client(cert, proto)
			f.do(t, clients[k], "GET", url(mainPort, "/healthz"))
		}
		return clients[k]
	}
	for _, proto := range []string{"h1", "h2"} {
		for _, cert := range []*testpki.Leaf{nil, f.c1, f.c2, f.c1renewed, f.c3} {
			client(cert, proto)
		}
	}
	for _, step := range steps {
		f.writeDenylist(t, step.entries...)
		want := 403
		if step.entries == nil {
			want = 200
		}
		d := denyWaitPublic(t, f, client(step.probe, "h1"), mainPort, want)
		t.Logf("%s: in force %v after the keys file was written", step.name, d)
		for _, proto := range []string{"h1", "h2"} {
			for _, c := range step.checks {
				before := f.upstream.count()
				got := f.do(t, client(c.cert, proto), c.method, url(mainPort, c.path), c.headers...)
				f.expect(t, proto+": "+step.name+": "+c.name, got, before, c.status, c.code)
			}
		}
	}
}

// TestDenylistDetails: the denial line names the denied certificate, the
// outcome is counted, handle_errors sees the code, unverified certificates
// are never consulted, and shadow mode only logs and counts.
func TestDenylistDetails(t *testing.T) {
	f := setup(t)
	defer denyRestoreKeys(t, f)
	caFP := testpki.LeafSHA256Hex(f.ca1.Cert)
	countBefore := metricValue(t, metrics(t), `scopegate_auth_requests_total{result="client_certificate_revoked"}`)
	f.writeDenylist(t, &keyring.DeniedCert{SHA256: caFP})
	c1 := f.client(f.c1, "h2")
	denyWaitPublic(t, f, c1, mainPort, 403)

	// handle_errors renders the new code (every site's handler polls the
	// file on its own: wait for this one).
	denyEventually(t, "handle_errors renders the denial", func() bool {
		got := f.do(t, c1, "GET", url(errorsPort, "/v1/gifts"), "Authorization", "Bearer "+f.keys["F"])
		return got.status == 403 && got.body == "denied 403 client_certificate_revoked"
	})
	// Caddy does not verify certificates on the request-mode site: the
	// denylist is not consulted, and the certificate counts for nothing.
	time.Sleep(1500 * time.Millisecond) // past the site's next poll of the keys file
	before := f.upstream.count()
	f.expect(t, "unverified certificate", f.do(t, f.client(f.c1, "h1"), "GET", url(requestPort, "/v1/gifts"), "Authorization", "Bearer "+f.keys["F"]), before, 200, "")
	before = f.upstream.count()
	f.expect(t, "unverified certificate, bound key", f.do(t, f.client(f.c1, "h1"), "GET", url(requestPort, "/v1/gifts"), "Authorization", "Bearer "+f.keys["B"]), before, 403, "client_certificate_required")

	// Shadow mode lets it through, logs it at WARN and counts it apart.
	shadowSeries := `scopegate_auth_requests_total{result="shadow_client_certificate_revoked"}`
	shadowBefore := metricValue(t, metrics(t), shadowSeries)
	denyEventually(t, "shadow mode counts the would-be denial", func() bool {
		before := f.upstream.count()
		if got := f.do(t, f.client(f.c1, "h1"), "GET", url(shadowDenyPort, "/healthz")); got.status != 200 || f.upstream.count() != before+1 {
			t.Fatalf("shadow mode: %d, upstream %d → %d", got.status, before, f.upstream.count())
		}
		return metricValue(t, metrics(t), shadowSeries) == shadowBefore+1
	})
	if v := metricValue(t, metrics(t), `scopegate_auth_requests_total{result="client_certificate_revoked"}`); v <= countBefore {
		t.Errorf("revoked count %v → %v", countBefore, v)
	}

	time.Sleep(200 * time.Millisecond) // let the log writers flush
	logs, err := os.ReadFile(f.logFile)
	if err != nil {
		t.Fatal(err)
	}
	var denied, shadow bool
	for _, line := range strings.Split(string(logs), "\n") {
		if !strings.Contains(line, `"error":"client_certificate_revoked"`) {
			continue
		}
		var entry map[string]any
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Fatal(err)
		}
		if entry["denied_cert_sha256"] != caFP || entry["client_cert_sha256"] != f.c1.SHA256Hex() || entry["status"] != float64(403) {
			continue
		}
		switch entry["msg"] {
		case "request denied":
			denied = true
		case "request would be denied (shadow mode)":
			shadow = entry["level"] == "warn"
		}
	}
	if !denied || !shadow {
		t.Errorf("denial line with denied_cert_sha256: %v, shadow line at WARN: %v", denied, shadow)
	}
}

// TestDenylistCLIWhileRunning: deny-cert and allow-cert on the keys file
// take effect in the running Caddy within about a second.
func TestDenylistCLIWhileRunning(t *testing.T) {
	f := setup(t)
	defer denyRestoreKeys(t, f)
	certFile, _, err := f.c1.Write(t.TempDir(), "c1")
	if err != nil {
		t.Fatal(err)
	}
	c := f.client(f.c1, "h2")
	denyWaitPublic(t, f, c, mainPort, 200)
	start := time.Now()
	scopedKey(t, "deny-cert", "--keys", f.keysFile, "--cert", certFile, "--reason", "laptop stolen")
	denyWaitPublic(t, f, c, mainPort, 403)
	t.Logf("deny-cert --keys took effect after %v", time.Since(start))
	before := f.upstream.count()
	f.expect(t, "bound key after deny-cert", f.do(t, c, "GET", url(mainPort, "/v1/gifts"), "Authorization", "Bearer "+f.keys["B"]), before, 403, "client_certificate_revoked")

	list := scopedKey(t, "denied-certs", "--keys", f.keysFile)
	var e keyring.DeniedCert
	if err := json.Unmarshal([]byte(list), &e); err != nil || e.SHA256 != f.c1.SHA256Hex() || e.Reason != "laptop stolen" || e.AddedAt == nil {
		t.Errorf("denied-certs printed %q (%v)", list, err)
	}
	start = time.Now()
	scopedKey(t, "allow-cert", "--keys", f.keysFile, "--cert", certFile)
	denyWaitPublic(t, f, c, mainPort, 200)
	t.Logf("allow-cert --keys took effect after %v", time.Since(start))
}

// fleetDenylist is TestRedisFleet's denylist case: deny-cert --redis is
// enforced by both instances within a second (public route included), a
// lost announcement within cache_ttl, and allow-cert restores access.
func fleetDenylist(t *testing.T, fl *fleet) {
	f := fl.f
	ctx := context.Background()
	key := scopedKey(t, "new", "--redis", fl.url, "--scope", "read_only")
	id := idOf(key)
	certFile, _, err := f.c1.Write(t.TempDir(), "c1")
	if err != nil {
		t.Fatal(err)
	}
	c := f.client(f.c1, "h1")
	get := func(inst, path string) int {
		return f.do(t, c, "GET", url(fl.ports[inst], path), "Authorization", "Bearer "+key).status
	}
	// watch runs change and polls both instances until each answers want,
	// and logs how long each took from the start of change.
	watch := func(what string, want int, limit time.Duration, change func()) {
		t.Helper()
		got := map[string]time.Duration{}
		start := time.Now()
		change()
		for len(got) < 2 {
			for _, inst := range []string{"A", "B"} {
				if _, done := got[inst]; !done && get(inst, "/v1/me") == want {
					got[inst] = time.Since(start)
				}
			}
			if time.Since(start) > limit {
				t.Fatalf("%s: after %v, only %v answer %d", what, limit, got, want)
			}
			time.Sleep(2 * time.Millisecond)
		}
		t.Logf("%s: A after %v, B after %v", what, got["A"], got["B"])
	}
	for _, inst := range []string{"A", "B"} {
		if s := get(inst, "/v1/me"); s != 200 {
			t.Fatalf("%s: %d before the denial", inst, s)
		}
	}
	watch("deny-cert --redis", 403, time.Second, func() {
		scopedKey(t, "deny-cert", "--redis", fl.url, "--cert", certFile, "--reason", "stolen")
	})
	forwarded := fl.forwarded(id, "")
	for _, inst := range []string{"A", "B"} {
		for _, path := range []string{"/v1/me", "/healthz"} {
			if s := get(inst, path); s != 403 {
				t.Errorf("%s %s: %d with a denied certificate", inst, path, s)
			}
		}
	}
	if n := fl.forwarded(id, ""); n != forwarded {
		t.Errorf("requests with a denied certificate reached the upstream %d times", n-forwarded)
	}
	if out := scopedKey(t, "denied-certs", "--redis", fl.url); !strings.Contains(out, f.c1.SHA256Hex()) || strings.Count(out, "\n") != 0 {
		t.Errorf("denied-certs: %q", out)
	}
	watch("allow-cert --redis", 200, time.Second, func() {
		scopedKey(t, "allow-cert", "--redis", fl.url, "--cert", certFile)
	})

	// A lost announcement: written without the script, seen within cache_ttl.
	entry := denySerial(f.c1)
	data, _ := json.Marshal(entry)
	watch("denied without an announcement (cache_ttl "+fleetCacheTTL.String()+")", 403, fleetCacheTTL+time.Second, func() {
		if err := fl.raw.HSet(ctx, keyring.RedisDenylistKey, entry.ID(), data).Err(); err != nil {
			t.Fatal(err)
		}
	})
	watch("allow-cert --redis (serial)", 200, time.Second, func() {
		scopedKey(t, "allow-cert", "--redis", fl.url, "--cert", certFile, "--by-serial")
	})
}
