package caddyauth

import (
	"encoding/json"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/scopegate/scopegate/caddyauth/internal/keyring"
	"github.com/scopegate/scopegate/internal/testpki"
	"github.com/scopegate/scopegate/internal/testredis"
)

// skDenyPKI: a client certificate issued by an intermediate, written as
// PEM (leaf + intermediate, as clients keep it).
type skDenyPKI struct {
	inter          *testpki.CA
	leaf           *testpki.Leaf
	leafPEM, caPEM string
}

func newSkDenyPKI(t *testing.T) *skDenyPKI {
	t.Helper()
	root := skMust(testpki.NewCA("CLI Root"))
	p := &skDenyPKI{inter: skMust(root.Intermediate("CLI Issuing CA", testpki.Org("Acme, Inc.")))}
	p.leaf = skMust(p.inter.Client("svc", testpki.Serial(big.NewInt(0x0a1b2c))))
	dir := t.TempDir()
	var err error
	if p.leafPEM, _, err = p.leaf.Write(dir, "leaf"); err != nil {
		t.Fatal(err)
	}
	if p.caPEM, err = p.inter.Write(dir, "ca", false); err != nil {
		t.Fatal(err)
	}
	return p
}

func skDenied(t *testing.T, keys string) []*keyring.DeniedCert {
	t.Helper()
	f, _, err := keyring.LoadFile(keys)
	if err != nil {
		t.Fatal(err)
	}
	return f.DeniedCerts
}

func TestScopedKeyDenyCertFile(t *testing.T) {
	p := newSkDenyPKI(t)
	keys := filepath.Join(t.TempDir(), "keys.json")
	now := time.Date(2026, 11, 29, 10, 0, 0, 500, time.UTC)
	var events []scopedKeyChange
	cli := &scopedKeyCLI{now: func() time.Time { return now }, audit: func(e scopedKeyChange) { events = append(events, e) }}
	key := skNewKey(t, cli, "--keys", keys, "--scope", "read_only")

	leafFP := keyring.HexDigest(keyring.LeafSHA256(p.leaf.Cert))
	caFP := keyring.HexDigest(keyring.LeafSHA256(p.inter.Cert))
	issuer := p.leaf.Cert.Issuer.String() // CN=CLI Issuing CA,O=Acme\, Inc.
	upperColons := strings.ToUpper(caFP[:2]) + ":" + strings.ToUpper(caFP[2:4]) + ":" + caFP[4:]
	for _, args := range [][]string{
		{"--cert", p.leafPEM, "--reason", "laptop stolen"},
		{"--cert", p.leafPEM, "--by-serial"},
		{"--sha256", upperColons},
		{"--issuer-dn", "CN=Other CA", "--serial", "0x00:0A"},
	} {
		if out := skOK(t, cli, append([]string{"deny-cert", "--keys", keys}, args...)...); out != "" {
			t.Errorf("deny-cert printed %q", out)
		}
	}
	got := skDenied(t, keys)
	want := []keyring.DeniedCert{
		{SHA256: leafFP, Reason: "laptop stolen"},
		{Issuer: issuer, Serial: "a1b2c"},
		{SHA256: caFP},
		{Issuer: "CN=Other CA", Serial: "a"},
	}
	if len(got) != len(want) {
		t.Fatalf("entries %+v", got)
	}
	for i, w := range want {
		g := *got[i]
		if g.AddedAt == nil || !g.AddedAt.Equal(now.Truncate(time.Second).Add(time.Second)) {
			t.Errorf("entry %d added_at %v", i, g.AddedAt)
		}
		g.AddedAt = nil
		if g != w {
			t.Errorf("entry %d: %+v, want %+v", i, g, w)
		}
	}
	if recs := skLoad(t, keys); len(recs) != 1 || recs[0].ID != idOfKey(key) {
		t.Errorf("keys changed: %+v", recs)
	}

	// Twice: exit 0, a note on stderr, the file untouched.
	fi1, _ := os.Stat(keys)
	time.Sleep(10 * time.Millisecond)
	res := skRun(t, cli, "deny-cert", "--keys", keys, "--sha256", leafFP, "--reason", "again")
	if res.err != nil || res.stdout != "" || !strings.Contains(res.stderr, "already denied") {
		t.Errorf("second deny: %+v", res)
	}
	if fi2, _ := os.Stat(keys); !os.SameFile(fi1, fi2) || !fi1.ModTime().Equal(fi2.ModTime()) {
		t.Error("a second deny rewrote the file")
	}

	// denied-certs: one JSON object per line, in file order.
	out := skOK(t, cli, "denied-certs", "--keys", keys)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("denied-certs printed %q", out)
	}
	for i, line := range lines {
		e, err := keyring.DecodeDeniedCert([]byte(line))
		if err != nil || e.ID() != got[i].ID() {
			t.Errorf("line %d %q: %v", i, line, err)
		}
	}
	if !strings.Contains(lines[1], `"issuer":"CN=CLI Issuing CA,O=Acme\\, Inc."`) {
		t.Errorf("issuer not written as is: %s", lines[1])
	}

	// allow-cert removes exactly the entry named the same way.
	skOK(t, cli, "allow-cert", "--keys", keys, "--cert", p.leafPEM, "--by-serial")
	if left := skDenied(t, keys); len(left) != 3 || left[1].SHA256 != caFP {
		t.Errorf("after allow-cert: %+v", left)
	}
	skFail(t, cli, "is not denied", "allow-cert", "--keys", keys, "--cert", p.leafPEM, "--by-serial")
	skOK(t, cli, "allow-cert", "--keys", keys, "--issuer-dn", "CN=Other CA", "--serial", "a")

	wantEvents := []string{"new", "deny-cert", "deny-cert", "deny-cert", "deny-cert", "allow-cert", "allow-cert"}
	if len(events) != len(wantEvents) {
		t.Fatalf("audit events %+v", events)
	}
	for i, e := range events {
		if e.Action != wantEvents[i] || e.Store != "file "+keys {
			t.Errorf("event %d: %+v", i, e)
		}
	}
	if events[1].ID != "sha256:"+leafFP || events[5].ID != "serial:"+keyring.IssuerDigest(issuer)+":a1b2c" {
		t.Errorf("event ids %s, %s", events[1].ID, events[5].ID)
	}
}

func idOfKey(key string) string { id, _ := keyring.ParseKey(key); return id }

func TestScopedKeyDenyCertErrors(t *testing.T) {
	p := newSkDenyPKI(t)
	keys := filepath.Join(t.TempDir(), "keys.json")
	notPEM := filepath.Join(t.TempDir(), "x.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	fp := keyring.HexDigest(keyring.LeafSHA256(p.leaf.Cert))
	if err := os.WriteFile(keys, []byte(`{"keys":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing.json")
	for _, c := range []struct {
		want string
		args []string
	}{
		{"exactly one of", []string{"deny-cert", "--keys", keys}},
		{"exactly one of", []string{"deny-cert", "--keys", keys, "--cert", p.leafPEM, "--sha256", fp}},
		{"--by-serial goes with", []string{"deny-cert", "--keys", keys, "--sha256", fp, "--by-serial"}},
		{"64 hex digits", []string{"deny-cert", "--keys", keys, "--sha256", fp[:40]}},
		{"64 hex digits", []string{"deny-cert", "--keys", keys, "--sha256", strings.Repeat("g", 64)}},
		{"go together", []string{"deny-cert", "--keys", keys, "--serial", "1"}},
		{"go together", []string{"deny-cert", "--keys", keys, "--issuer-dn", "CN=A"}},
		{"OpenSSL", []string{"deny-cert", "--keys", keys, "--issuer-dn", "/C=US/CN=A", "--serial", "1"}},
		{"space after a separator", []string{"deny-cert", "--keys", keys, "--issuer-dn", "CN=A, O=B", "--serial", "1"}},
		{"serial number in hex", []string{"deny-cert", "--keys", keys, "--issuer-dn", "CN=A", "--serial", "xyz"}},
		{"reason: control", []string{"deny-cert", "--keys", keys, "--sha256", fp, "--reason", "a\x1bb"}},
		{"no PEM CERTIFICATE", []string{"deny-cert", "--keys", keys, "--cert", notPEM}},
		{"no such file", []string{"deny-cert", "--keys", keys, "--cert", filepath.Join(t.TempDir(), "missing.pem")}},
		{"no store", []string{"deny-cert", "--sha256", fp}},
		{"not both", []string{"deny-cert", "--keys", keys, "--redis", "redis://127.0.0.1:1/0", "--sha256", fp}},
		{"connection refused", []string{"deny-cert", "--redis", "redis://127.0.0.1:1/0", "--sha256", fp}},
		{"takes no arguments", []string{"deny-cert", "--keys", keys, "--sha256", fp, "extra"}},
		{"no such file", []string{"allow-cert", "--keys", missing, "--sha256", fp}},
		{"is not denied", []string{"allow-cert", "--keys", keys, "--sha256", fp}},
		{"exactly one of", []string{"allow-cert", "--keys", keys}},
		{"no such file", []string{"denied-certs", "--keys", missing}},
		{"connection refused", []string{"denied-certs", "--redis", "redis://127.0.0.1:1/0"}},
	} {
		skFail(t, nil, c.want, c.args...)
	}
	if d := skDenied(t, keys); len(d) != 0 {
		t.Errorf("failed commands wrote %+v", d)
	}
	if _, err := os.Stat(missing); err == nil {
		t.Error("allow-cert created a keys file")
	}
	// A keys file with a bad denylist is refused, not rewritten.
	if err := os.WriteFile(keys, []byte(`{"keys":[],"denied_certs":[{"sha256":"AB"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	skFail(t, nil, "denied_certs[0]", "deny-cert", "--keys", keys, "--sha256", fp)
	skFail(t, nil, "denied_certs[0]", "new", "--keys", keys, "--scope", "read_only")
}

func TestScopedKeyDenyCertRedis(t *testing.T) {
	srv := testredis.Start(t)
	p := newSkDenyPKI(t)
	var events []scopedKeyChange
	cli := &scopedKeyCLI{now: time.Now, audit: func(e scopedKeyChange) { events = append(events, e) }}
	url := srv.URL()
	skOK(t, cli, "deny-cert", "--redis", url, "--cert", p.caPEM, "--reason", "CA compromised")
	skOK(t, cli, "deny-cert", "--redis", url, "--cert", p.leafPEM, "--by-serial")
	if res := skRun(t, cli, "deny-cert", "--redis", url, "--cert", p.caPEM); res.err != nil || !strings.Contains(res.stderr, "already denied") {
		t.Errorf("second deny: %+v", res)
	}
	out := skOK(t, cli, "denied-certs", "--redis", url)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("denied-certs printed %q", out)
	}
	// Sorted by entry id: serial:… before sha256:….
	var ca keyring.DeniedCert
	if err := json.Unmarshal([]byte(lines[1]), &ca); err != nil || ca.SHA256 != keyring.HexDigest(keyring.LeafSHA256(p.inter.Cert)) || ca.Reason != "CA compromised" || ca.AddedAt == nil {
		t.Errorf("second line %s: %v", lines[1], err)
	}
	skOK(t, cli, "allow-cert", "--redis", url, "--cert", p.caPEM)
	skFail(t, cli, "is not denied in redis", "allow-cert", "--redis", url, "--cert", p.caPEM)
	if out := skOK(t, cli, "denied-certs", "--redis", url); strings.Count(out, "\n") != 1 || !strings.Contains(out, `"serial":"a1b2c"`) {
		t.Errorf("after allow-cert: %q", out)
	}
	// The Redis version counts changes: two denials and one removal.
	if len(events) != 3 || events[0].Version != 1 || events[1].Version != 2 || events[2].Version != 3 || events[2].Action != "allow-cert" || !strings.HasPrefix(events[2].Store, "redis ") {
		t.Errorf("audit events %+v", events)
	}
}

func TestScopedKeyDenyCertHelp(t *testing.T) {
	for cmd, flags := range map[string][]string{
		"deny-cert":    {"--keys", "--redis", "--cert", "--by-serial", "--sha256", "--issuer-dn", "--serial", "--reason"},
		"allow-cert":   {"--keys", "--redis", "--cert", "--by-serial", "--sha256", "--issuer-dn", "--serial"},
		"denied-certs": {"--keys", "--redis"},
	} {
		r := skRun(t, nil, cmd, "--help")
		if r.err != nil || !strings.Contains(r.stdout, "Usage:") {
			t.Fatalf("%s --help: %+v", cmd, r)
		}
		for _, f := range flags {
			if !strings.Contains(r.stdout, f) {
				t.Errorf("%s --help lacks %s", cmd, f)
			}
		}
	}
}

// deniedStore adds a denylist to a store, for handler unit tests.
type deniedStore struct {
	keyring.Store
	d *keyring.Denylist
}

func (s deniedStore) Denylist() *keyring.Denylist { return s.d }

// TestDenylistHandlerUnit: the handler consults the denylist on early
// data too (its chains were verified when the resumed session was made),
// on public rules, and not for a store without one.
func TestDenylistHandlerUnit(t *testing.T) {
	env := newUnitEnv(t)
	d, err := keyring.NewDenylist([]*keyring.DeniedCert{{SHA256: env.leaf.SHA256Hex()}})
	if err != nil {
		t.Fatal(err)
	}
	env.h.store = deniedStore{Store: env.store, d: d}
	for name, early := range map[string]bool{"handshake complete": false, "early data": true} {
		w, r := env.request("GET", "/healthz", env.chain)
		r.TLS.HandshakeComplete = !early
		called := false
		next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { called = true; return nil })
		if err := env.h.ServeHTTP(w, r, next); err != nil {
			t.Fatal(err)
		}
		if w.Code != 403 || w.Body.String() != `{"error":"client_certificate_revoked"}` || called {
			t.Errorf("%s: %d %q (next called: %v)", name, w.Code, w.Body.String(), called)
		}
	}
	// A store that has not loaded its denylist yet (Redis unreadable since
	// start): a request with a verified certificate cannot be judged, 503
	// on public and non-public rules alike; without a certificate, as usual.
	env.h.store = deniedStore{Store: env.store, d: nil}
	for _, path := range []string{"/healthz", "/v1/gifts"} {
		w, r := env.request("GET", path, env.chain)
		called := false
		next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { called = true; return nil })
		if err := env.h.ServeHTTP(w, r, next); err != nil {
			t.Fatal(err)
		}
		if w.Code != 503 || w.Body.String() != `{"error":"store_unavailable"}` || called {
			t.Errorf("denylist not loaded, %s: %d %q (next called: %v)", path, w.Code, w.Body.String(), called)
		}
	}
	w, r := env.request("GET", "/healthz", nil)
	if err := env.h.ServeHTTP(w, r, okHandler); err != nil || w.Code != 200 {
		t.Errorf("denylist not loaded, no certificate, public: %d %v", w.Code, err)
	}

	// A store without a denylist: nothing to consult.
	env.h.store = env.store
	w, r = env.request("GET", "/healthz", env.chain)
	if err := env.h.ServeHTTP(w, r, okHandler); err != nil || w.Code != 200 {
		t.Errorf("without a denylist: %d %v", w.Code, err)
	}
}
