package caddyauth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/scopegate/scopegate/caddyauth/internal/keyring"
	"github.com/scopegate/scopegate/internal/testpki"
)

// countingStore wraps a Set and counts lookups, to prove that a bad
// checksum never reaches the store.
type countingStore struct {
	*keyring.Set
	lookups atomic.Int64
}

func (s *countingStore) Lookup(ctx context.Context, id string) (*keyring.Key, error) {
	s.lookups.Add(1)
	return s.Set.Lookup(ctx, id)
}

type unitEnv struct {
	h     *ScopedAuth
	store *countingStore
	keys  map[string]string
	leaf  *testpki.Leaf
	chain []*x509.Certificate
}

func newUnitEnv(tb testing.TB) *unitEnv {
	tb.Helper()
	ca := testpki.Must(testpki.NewCA("unit CA"))
	leaf := testpki.Must(ca.Client("svc", testpki.URIs("spiffe://acme.test/svc")))
	env := &unitEnv{keys: map[string]string{}, leaf: leaf, chain: []*x509.Certificate{leaf.Cert, ca.Cert}}
	var recs []*keyring.Record
	add := func(name string, r keyring.Record) {
		r.ID = testpki.Must(keyring.NewID())
		k := testpki.Must(keyring.NewKey(r.ID))
		r.Hash = keyring.FormatHash(keyring.HashKey(k))
		r.Version = 1
		env.keys[name] = k
		recs = append(recs, &r)
	}
	add("R", keyring.Record{Scopes: []string{"*:read"}, Accounts: []string{"acme-us"}})
	add("B", keyring.Record{Scopes: []string{"*:*"}, ClientCert: &keyring.CertBinding{SHA256: []string{leaf.SHA256Hex()}}})
	set, err := keyring.NewSet(recs)
	if err != nil {
		tb.Fatal(err)
	}
	env.store = &countingStore{Set: set}
	h := &ScopedAuth{
		Account: &AccountSource{Header: "X-Account-ID"},
		Rules: []Rule{
			{Methods: []string{"GET", "HEAD"}, Path: "/v1/gifts*", Permission: "gifts:read"},
			{Methods: []string{"POST"}, Path: "/v1/gifts", Permission: "gifts:send"},
			{Methods: []string{"POST"}, Path: "/v1/budgets/*/spend", Permission: "budgets:spend"},
			{Path: "/healthz", Permission: "public"},
		},
		StripHeaders: []string{"X-Key-Id"},
	}
	h.logger = zap.NewNop()
	initMetrics()
	if err := h.provisionRequest(); err != nil {
		tb.Fatal(err)
	}
	if err := h.provisionRules(); err != nil {
		tb.Fatal(err)
	}
	h.store = env.store
	env.h = h
	return env
}

var okHandler = caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error { return nil })

// request builds a request as Caddy's server prepares it.
func (env *unitEnv) request(method, target string, tlsChain []*x509.Certificate, headers ...string) (*httptest.ResponseRecorder, *http.Request) {
	w := httptest.NewRecorder()
	r := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(headers); i += 2 {
		r.Header.Add(headers[i], headers[i+1])
	}
	if tlsChain != nil {
		r.TLS = &tls.ConnectionState{HandshakeComplete: true, PeerCertificates: tlsChain[:1], VerifiedChains: [][]*x509.Certificate{tlsChain}}
	}
	r = caddyhttp.PrepareRequest(r, caddy.NewReplacer(), w, nil)
	return w, r
}

func TestBadChecksumNeverAsksTheStore(t *testing.T) {
	env := newUnitEnv(t)
	good := env.keys["R"]
	for _, k := range []string{flipLastChar(good), "sg_" + good[3:20] + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA000000", "junk"} {
		w, r := env.request("GET", "/v1/gifts", nil, "Authorization", "Bearer "+k)
		if err := env.h.ServeHTTP(w, r, okHandler); err != nil {
			t.Fatal(err)
		}
		if w.Code != 401 {
			t.Errorf("status %d", w.Code)
		}
	}
	if n := env.store.lookups.Load(); n != 0 {
		t.Fatalf("store asked %d times for keys with a bad checksum", n)
	}
	w, r := env.request("GET", "/v1/gifts", nil, "Authorization", "Bearer "+good, "X-Account-ID", "acme-us")
	if err := env.h.ServeHTTP(w, r, okHandler); err != nil || w.Code != 200 {
		t.Fatalf("good key: %v %d", err, w.Code)
	}
	if n := env.store.lookups.Load(); n != 1 {
		t.Fatalf("store asked %d times for one good key", n)
	}
}

func TestEarlyData(t *testing.T) {
	env := newUnitEnv(t)
	for method, want := range map[string]int{"POST": 425, "GET": 200, "HEAD": 200} {
		w, r := env.request(method, "/v1/gifts", nil, "Authorization", "Bearer "+env.keys["B"])
		r.TLS = &tls.ConnectionState{HandshakeComplete: false}
		called := false
		next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { called = true; return nil })
		if err := env.h.ServeHTTP(w, r, next); err != nil {
			t.Fatal(err)
		}
		// GET/HEAD go on to the checks: the bound key then needs a verified
		// certificate, which early data never counts as.
		if method != "POST" {
			want = 403
		}
		if w.Code != want || (want >= 400 && called) {
			t.Errorf("%s: status %d, want %d (next called: %v)", method, w.Code, want, called)
		}
	}
}

func TestStoreErrorIs503(t *testing.T) {
	env := newUnitEnv(t)
	core, logs := observer.New(zapcore.InfoLevel)
	env.h.logger = zap.New(core)
	defer func() {
		// The denial line says why the store failed.
		for _, e := range logs.FilterMessage("request denied").All() {
			if e.ContextMap()["store_error"] == nil {
				t.Errorf("denial without store_error: %v", e.ContextMap())
			}
		}
	}()
	env.h.store = failingStore{}
	w, r := env.request("GET", "/v1/gifts", nil, "Authorization", "Bearer "+env.keys["R"])
	if err := env.h.ServeHTTP(w, r, okHandler); err != nil {
		t.Fatal(err)
	}
	if w.Code != 503 || w.Body.String() != `{"error":"store_unavailable"}` {
		t.Fatalf("got %d %q", w.Code, w.Body.String())
	}
	w, r = env.request("GET", "/v1/gifts", env.chain)
	if err := env.h.ServeHTTP(w, r, okHandler); err != nil {
		t.Fatal(err)
	}
	if w.Code != 503 {
		t.Fatalf("principal lookup failure: %d", w.Code)
	}
}

type failingStore struct{}

func (failingStore) Lookup(context.Context, string) (*keyring.Key, error) {
	return nil, keyring.ErrUnavailable
}

func (failingStore) LookupPrincipal(context.Context, []*x509.Certificate) (*keyring.Key, error) {
	return nil, keyring.ErrUnavailable
}

func TestProvisionErrors(t *testing.T) {
	cases := map[string]*ScopedAuth{
		"no rules":                 {KeysFile: "x"},
		"custom header unredacted": {Header: "X-Api-Key", Rules: []Rule{{Path: "/", Permission: "public"}}},
		"two account sources":      {Account: &AccountSource{Header: "X-A", Query: "a"}, Rules: []Rule{{Path: "/", Permission: "public"}}},
		"account is key header":    {Account: &AccountSource{Header: "Authorization"}, Rules: []Rule{{Path: "/", Permission: "public"}}},
		"bad strip header":         {StripHeaders: []string{"X_Key"}, Rules: []Rule{{Path: "/", Permission: "public"}}},
		"percent pattern":          {Rules: []Rule{{Path: "/v1/%2F", Permission: "public"}}},
		"wildcard permission":      {Rules: []Rule{{Path: "/v1", Permission: "gifts:*"}}},
	}
	for name, h := range cases {
		h.logger = zap.NewNop()
		err := h.provisionRequest()
		if err == nil {
			err = h.provisionRules()
		}
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	h := &ScopedAuth{Header: "X-Api-Key", LogRedactionConfigured: true, Rules: []Rule{{Path: "/", Permission: "public"}}}
	if err := h.provisionRequest(); err != nil {
		t.Errorf("custom header with log_redaction_configured: %v", err)
	}
}

// Benchmarks of the handler's own cost per request (next does nothing).
//
// Each iteration gives the prepared request a fresh replacer (as every real
// request has its own) and restores the headers the handler strips. That
// setup is measured alone by BenchmarkSetupOnly: the handler's cost is the
// difference, in time and in allocations.
func benchmarkServe(b *testing.B, env *unitEnv, method, target string, chain []*x509.Certificate, headers ...string) {
	benchmarkLoop(b, env, env.h.ServeHTTP, method, target, chain, headers...)
}

func benchmarkLoop(b *testing.B, env *unitEnv, serve func(http.ResponseWriter, *http.Request, caddyhttp.Handler) error, method, target string, chain []*x509.Certificate, headers ...string) {
	_, base := env.request(method, target, chain, headers...)
	saved := base.Header.Clone()
	w := &discardWriter{h: http.Header{}}
	baseCtx := base.Context()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for name, v := range saved {
			base.Header[name] = v
		}
		// Like Caddy's server: a new replacer with the HTTP provider mapped.
		repl := caddy.NewReplacer()
		repl.Map(httpVarsStandIn)
		r := base.WithContext(context.WithValue(baseCtx, caddy.ReplacerCtxKey, repl))
		_ = serve(w, r, okHandler)
	}
}

// httpVarsStandIn takes the place of the provider caddyhttp adds to every
// request's replacer, so the replacer's slice of providers has the capacity
// it has in a real request.
func httpVarsStandIn(string) (any, bool) { return nil, false }

// BenchmarkSetupOnly is the per-iteration setup of the benchmarks below,
// with a handler that only calls next: subtract it from them.
func BenchmarkSetupOnly(b *testing.B) {
	env := newUnitEnv(b)
	pass := func(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
		return next.ServeHTTP(w, r)
	}
	benchmarkLoop(b, env, pass, "GET", "/v1/gifts/g1", nil, "Authorization", "Bearer "+env.keys["R"], "X-Account-ID", "acme-us")
}

func BenchmarkAllowed(b *testing.B) {
	env := newUnitEnv(b)
	benchmarkServe(b, env, "GET", "/v1/gifts/g1", nil, "Authorization", "Bearer "+env.keys["R"], "X-Account-ID", "acme-us")
}

func BenchmarkAllowedCertBound(b *testing.B) {
	env := newUnitEnv(b)
	benchmarkServe(b, env, "POST", "/v1/budgets/b1/spend", env.chain, "Authorization", "Bearer "+env.keys["B"])
}

func BenchmarkDeniedScope(b *testing.B) {
	env := newUnitEnv(b)
	benchmarkServe(b, env, "POST", "/v1/gifts", nil, "Authorization", "Bearer "+env.keys["R"], "X-Account-ID", "acme-us")
}

func BenchmarkDeniedBadChecksum(b *testing.B) {
	env := newUnitEnv(b)
	k := env.keys["R"]
	benchmarkServe(b, env, "GET", "/v1/gifts", nil, "Authorization", "Bearer "+flipLastChar(k))
}

func BenchmarkDeniedUnknownKey(b *testing.B) {
	env := newUnitEnv(b)
	k := testpki.Must(keyring.NewKey(testpki.Must(keyring.NewID())))
	benchmarkServe(b, env, "GET", "/v1/gifts", nil, "Authorization", "Bearer "+k)
}

// discardWriter is the cheapest ResponseWriter, so benchmarks measure the
// handler rather than httptest.ResponseRecorder.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}

// provisionStoreForTest opens the keys file as Provision does, without a
// Caddy context.
func (h *ScopedAuth) provisionStoreForTest() error {
	_, err := keyring.OpenFileStore(h.KeysFile)
	return err
}

// flipLastChar changes a key's last checksum digit, so the checksum fails.
func flipLastChar(k string) string {
	if k[len(k)-1] == '0' {
		return k[:len(k)-1] + "1"
	}
	return k[:len(k)-1] + "0"
}

func TestProvisionWarnsAboutShadowedRules(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	h := &ScopedAuth{Rules: []Rule{
		{Path: "/v1/*", Permission: "authenticated"},
		{Methods: []string{"POST"}, Path: "/v1/gifts", Permission: "gifts:send"},
		{Path: "/healthz", Permission: "public"},
	}}
	h.logger = zap.New(core)
	if err := h.provisionRequest(); err != nil {
		t.Fatal(err)
	}
	if err := h.provisionRules(); err != nil {
		t.Fatal(err)
	}
	warned := logs.FilterMessageSnippet("can never match").All()
	if len(warned) != 1 || warned[0].ContextMap()["rule"] != int64(2) || warned[0].ContextMap()["shadowed_by"] != int64(1) {
		t.Fatalf("warnings: %+v", logs.All())
	}
}

// TestShadowMode: nothing is denied, what would be is logged and counted
// apart, the key is still stripped and the placeholders are empty.
func TestShadowMode(t *testing.T) {
	env := newUnitEnv(t)
	core, logs := observer.New(zapcore.InfoLevel)
	env.h.logger = zap.New(core)
	env.h.Shadow = true
	var dm dto.Metric
	_ = insufficientScope.shadowCounter.Write(&dm)
	before := dm.GetCounter().GetValue()
	_ = insufficientScope.counter.Write(&dm)
	beforeEnforced := dm.GetCounter().GetValue()

	w, r := env.request("POST", "/v1/gifts", nil, "Authorization", "Bearer "+env.keys["R"], "X-Account-ID", "acme-us", "X~Key~Id", "forged")
	var seen *http.Request
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		seen = r
		w.WriteHeader(201)
		return nil
	})
	if err := env.h.ServeHTTP(w, r, next); err != nil {
		t.Fatal(err)
	}
	if seen == nil || w.Code != 201 {
		t.Fatalf("shadow mode denied: %d", w.Code)
	}
	if seen.Header.Get("Authorization") != "" || seen.Header.Get("X~key~id") != "" || len(seen.Header.Values("X~Key~Id")) != 0 {
		t.Errorf("headers reached next: %v", seen.Header)
	}
	repl := seen.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if v, _ := repl.GetString("http.auth.key.id"); v != "" {
		t.Errorf("placeholder key id %q on a would-be denial", v)
	}
	if n := len(logs.FilterMessageSnippet("would be denied").All()); n != 1 {
		t.Errorf("%d would-be-denied log lines", n)
	}
	_ = insufficientScope.shadowCounter.Write(&dm)
	if dm.GetCounter().GetValue() != before+1 {
		t.Error("shadow_insufficient_scope not counted")
	}
	_ = insufficientScope.counter.Write(&dm)
	if dm.GetCounter().GetValue() != beforeEnforced {
		t.Error("an enforced insufficient_scope was counted in shadow mode")
	}
	// Allowed requests are unchanged, placeholders included.
	_, r = env.request("GET", "/v1/gifts", nil, "Authorization", "Bearer "+env.keys["R"], "X-Account-ID", "acme-us")
	next = caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		if v, _ := repl.GetString("http.auth.key.permission"); v != "gifts:read" {
			t.Errorf("permission placeholder %q", v)
		}
		return nil
	})
	if err := env.h.ServeHTTP(httptest.NewRecorder(), r, next); err != nil {
		t.Fatal(err)
	}
}
