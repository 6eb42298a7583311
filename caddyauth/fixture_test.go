package caddyauth_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"

	_ "github.com/scopegate/scopegate/caddyredact"

	"github.com/scopegate/scopegate/caddyauth/internal/keyring"
	"github.com/scopegate/scopegate/internal/testpki"
	"github.com/scopegate/scopegate/internal/testport"
	"github.com/scopegate/scopegate/internal/testredis"
)

// Ports of the integration server. The admin port differs from caddytest's
// default and from other packages', so `go test ./...` running packages in
// parallel never sends one package's config to another's Caddy.
// SCOPEGATE_TEST_PORT_OFFSET moves them all (internal/testport).
var (
	adminPort   = testport.Port(2991)
	httpPort    = testport.Port(9080)
	mainPort    = testport.Port(9443) // verify_if_given, two trusted CAs
	requestPort = testport.Port(9444) // client_auth mode request: certificates are not verified
	errorsPort  = testport.Port(9445) // handle_errors renders denials
)

const upstreamHost = "127.0.0.1"

// fixture is the shared world of the integration tests: certificates, keys,
// a recording upstream and one running Caddy.
type fixture struct {
	dir      string
	keysFile string
	logFile  string
	ca1, ca2 *testpki.CA
	// client certificates
	c1        *testpki.Leaf // CN=hris, spiffe://acme.test/hris, from ca1
	c1renewed *testpki.Leaf // same key as c1, new serial
	c2        *testpki.Leaf // another client of ca1
	c3        *testpki.Leaf // from ca2, same subject and URI as c1
	twoURIs   *testpki.Leaf // ca1, two URI SANs, the first is c1's
	rogue     *testpki.Leaf // self-signed copy of c1
	srvAuth   *testpki.Leaf // ca1, serverAuth EKU only
	expired   *testpki.Leaf // ca1, expired
	// keys, by name: the plaintext
	keys     map[string]string
	records  map[string]*keyring.Record
	upstream *recorder
	config   string // the Caddyfile loaded
	// redisPort is where the Redis of the fleet site (redis_integration_test.go)
	// listens once TestRedisFleet starts it; chosen free when the fixture is built.
	redisPort         int
	srvCert, srvKey   string
	clientTrustBundle string
}

// fixtureSites lets a test file add site blocks to the fixture's one
// Caddyfile (caddytest runs one Caddy per process): register in init(); the
// function may write files under f.dir and must use its own ports
// (testport.Port of a base no other file uses).
var fixtureSites = map[string]func(f *fixture) string{}

var (
	fixtureOnce sync.Once
	theFixture  *fixture
)

// recorder is the upstream: it records every request that reached it.
type recorder struct {
	mu   sync.Mutex
	reqs []*http.Request
	srv  *httptest.Server
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec.mu.Lock()
	rec.reqs = append(rec.reqs, r.Clone(r.Context()))
	rec.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"ok":true,"owner":{"name":"Ada Lovelace","email":"ada@acme.test"}}`)
}

func (rec *recorder) count() int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return len(rec.reqs)
}

func (rec *recorder) last() *http.Request {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.reqs) == 0 {
		return nil
	}
	return rec.reqs[len(rec.reqs)-1]
}

func (rec *recorder) all() []*http.Request {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]*http.Request(nil), rec.reqs...)
}

func must[T any](v T, err error) T { return testpki.Must(v, err) }

func newKey(f *fixture, name string, rec keyring.Record) {
	id := must(keyring.NewID())
	rec.ID = id
	if rec.Name == "" {
		rec.Name = name
	}
	if rec.Version == 0 {
		rec.Version = 1
	}
	if rec.Hash == "" && rec.ClientCert == nil {
		panic("key without hash or binding")
	}
	f.records[name] = &rec
}

func secretKey(f *fixture, name string, rec keyring.Record) {
	rec.ID = must(keyring.NewID())
	k := must(keyring.NewKey(rec.ID))
	rec.Hash = keyring.FormatHash(keyring.HashKey(k))
	if rec.Name == "" {
		rec.Name = name
	}
	rec.Version = 1
	f.keys[name] = k
	f.records[name] = &rec
}

func (f *fixture) writeKeys(t testing.TB, extra ...*keyring.Record) {
	t.Helper()
	var file keyring.File
	for _, name := range slices.Sorted(maps.Keys(f.records)) {
		file.Keys = append(file.Keys, f.records[name])
	}
	file.Keys = append(file.Keys, extra...)
	data, err := json.MarshalIndent(file, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := writeAtomic(f.keysFile, data); err != nil {
		t.Fatal(err)
	}
}

func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// setup builds the fixture once and starts Caddy with it.
func setup(t *testing.T) *fixture {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: starts Caddy")
	}
	fixtureOnce.Do(func() { theFixture = buildFixture(t) })
	if theFixture == nil {
		t.Fatal("fixture failed")
	}
	return theFixture
}

func buildFixture(t *testing.T) *fixture {
	dir, err := os.MkdirTemp("", "scopegate-it-")
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{dir: dir, keys: map[string]string{}, records: map[string]*keyring.Record{}}
	f.ca1 = must(testpki.NewCA("Acme Client CA 1"))
	f.ca2 = must(testpki.NewCA("Acme Client CA 2"))
	hrisURI := "spiffe://acme.test/hris"
	f.c1 = must(f.ca1.Client("hris", testpki.URIs(hrisURI)))
	f.c1renewed = must(f.ca1.Client("hris", testpki.URIs(hrisURI), testpki.WithKey(f.c1.Key)))
	f.c2 = must(f.ca1.Client("other", testpki.URIs("spiffe://acme.test/other")))
	f.c3 = must(f.ca2.Client("hris", testpki.URIs(hrisURI)))
	f.twoURIs = must(f.ca1.Client("hris2", testpki.URIs(hrisURI, "spiffe://acme.test/extra")))
	f.rogue = must(testpki.Rogue(f.c1))
	f.srvAuth = must(f.ca1.Client("srvonly", testpki.ServerAuthOnly()))
	f.expired = must(f.ca1.Client("old", testpki.Expired()))
	server := must(f.ca1.Server("localhost", "127.0.0.1"))
	srvCert, srvKey := must2(server.Write(dir, "server"))
	trust := must(testpki.WriteBundle(dir, "client-cas", f.ca1, f.ca2))

	past := time.Now().Add(-time.Hour)
	future := time.Now().Add(time.Hour)
	secretKey(f, "R", keyring.Record{Scopes: []string{"*:read"}, Accounts: []string{"acme-us"}})
	secretKey(f, "F", keyring.Record{Scopes: []string{"*:*"}, Accounts: []string{"*"}})
	secretKey(f, "PII", keyring.Record{Scopes: []string{"*:read"}, PII: true})
	secretKey(f, "B", keyring.Record{Scopes: []string{"*:*"}, ClientCert: &keyring.CertBinding{SHA256: []string{f.c1.SHA256Hex()}}})
	secretKey(f, "BSPKI", keyring.Record{Scopes: []string{"*:*"}, ClientCert: &keyring.CertBinding{SPKISHA256: []string{f.c1.SPKISHA256Hex()}}})
	secretKey(f, "BURI", keyring.Record{Scopes: []string{"*:*"}, ClientCert: &keyring.CertBinding{URI: []string{hrisURI}, IssuerSPKISHA256: []string{f.ca1.SPKISHA256Hex()}}})
	secretKey(f, "BURINOPIN", keyring.Record{Scopes: []string{"*:*"}, ClientCert: &keyring.CertBinding{URI: []string{hrisURI}}})
	secretKey(f, "BSUBJ", keyring.Record{Scopes: []string{"*:*"}, ClientCert: &keyring.CertBinding{Subject: f.c1.Cert.Subject.String(), IssuerSPKISHA256: []string{f.ca1.SPKISHA256Hex()}}})
	secretKey(f, "BSUBJNOPIN", keyring.Record{Scopes: []string{"*:*"}, ClientCert: &keyring.CertBinding{Subject: f.c1.Cert.Subject.String()}})
	secretKey(f, "EXPIRED", keyring.Record{Scopes: []string{"*:*"}, ExpiresAt: &past})
	secretKey(f, "NOTYET", keyring.Record{Scopes: []string{"*:*"}, NotBefore: &future})
	secretKey(f, "DISABLED", keyring.Record{Scopes: []string{"*:*"}, Disabled: true})
	secretKey(f, "NOACCOUNTS", keyring.Record{Scopes: []string{"*:*"}, Accounts: []string{}})
	secretKey(f, "GIFTS", keyring.Record{Scopes: []string{"gifts:*"}, Accounts: []string{"acme-us", "acme-eu"}})
	// Rotation: ROT's current key, and its previous one still in grace;
	// ROTOLD's previous key is past its grace.
	secretKey(f, "ROT", keyring.Record{Scopes: []string{"*:read"}})
	oldKey := must(keyring.NewKey(f.records["ROT"].ID))
	f.keys["ROT_PREVIOUS"] = oldKey
	f.records["ROT"].PreviousHash = keyring.FormatHash(keyring.HashKey(oldKey))
	f.records["ROT"].PreviousExpiresAt = &future
	secretKey(f, "ROTOLD", keyring.Record{Scopes: []string{"*:read"}})
	oldKey2 := must(keyring.NewKey(f.records["ROTOLD"].ID))
	f.keys["ROTOLD_PREVIOUS"] = oldKey2
	f.records["ROTOLD"].PreviousHash = keyring.FormatHash(keyring.HashKey(oldKey2))
	f.records["ROTOLD"].PreviousExpiresAt = &past
	// A certificate principal: c2 identifies a service by its SPIFFE URI,
	// pinned to ca1.
	newKey(f, "PRINCIPAL", keyring.Record{Scopes: []string{"gifts:read"}, ClientCert: &keyring.CertBinding{
		URI: []string{"spiffe://acme.test/other"}, IssuerSPKISHA256: []string{f.ca1.SPKISHA256Hex()}}})
	// An unknown-but-well-formed key.
	f.keys["UNKNOWN"] = must(keyring.NewKey(must(keyring.NewID())))

	f.keysFile = filepath.Join(dir, "keys.json")
	f.writeKeys(t)
	f.logFile = filepath.Join(dir, "caddy.log")

	f.upstream = &recorder{}
	f.upstream.srv = httptest.NewServer(f.upstream)
	t.Cleanup(func() {})

	tlsBlock := func(mode string) string {
		return fmt.Sprintf(`tls %s %s {
		client_auth {
			mode %s
			trust_pool file %s
		}
	}`, srvCert, srvKey, mode, trust)
	}
	auth := func(extra string) string {
		return fmt.Sprintf(`scoped_auth {
			keys_file %s
			account header X-Account-ID
			strip_headers X-Key-Id X-Account
			%s
			rule GET,HEAD /v1/gifts*          gifts:read
			rule POST     /v1/gifts           gifts:send
			rule POST     /v1/budgets/*/spend budgets:spend
			rule GET      /v1/employees*      employees:read
			rule *        /v1/me              authenticated
			rule *        /healthz            public
		}`, f.keysFile, extra)
	}
	proxy := fmt.Sprintf(`reverse_proxy %s {
			header_up X-Key-Id {http.auth.key.id}
			header_up X-Account {http.auth.key.account}
			header_up X-Key-Name {http.auth.key.name}
			header_up X-Key-Scopes {http.auth.key.scopes}
			header_up X-Key-Pii {http.auth.key.pii}
			header_up X-Key-Permission {http.auth.key.permission}
			header_up X-User-Id {http.auth.user.id}
		}`, strings.TrimPrefix(f.upstream.srv.URL, "http://"))

	config := fmt.Sprintf(`{
	admin localhost:%d
	http_port %d
	https_port %d
	grace_period 1ns
	skip_install_trust
	auto_https disable_redirects
	storage file_system %s
	log {
		output file %s
		level DEBUG
	}
}
https://localhost:%d {
	%s
	log {
		output file %s
	}
	handle_path /rw/* {
		%s
		%s
	}
	handle /seg/* {
		scoped_auth {
			keys_file %s
			account path_segment 2
			rule GET /seg/*/gifts* gifts:read
		}
		%s
	}
	handle /q/* {
		scoped_auth {
			keys_file %s
			account query account
			rule GET /q/gifts* gifts:read
		}
		%s
	}
	handle /mtls/* {
		scoped_auth {
			keys_file %s
			require_client_cert
			rule * /mtls/* authenticated
		}
		%s
	}
	handle /masked/* {
		scoped_auth {
			keys_file %s
			rule * /masked/* authenticated
		}
		redact
		%s
	}
	handle /keep/* {
		scoped_auth {
			keys_file %s
			strip_credentials off
			rule * /keep/* authenticated
		}
		%s
	}
	handle {
		%s
		%s
	}
}
https://localhost:%d {
	%s
	%s
	%s
}
https://localhost:%d {
	%s
	%s
	%s
	handle_errors {
		respond "denied {err.status_code} {err.message}"
	}
}
`, adminPort, httpPort, mainPort, filepath.Join(dir, "storage"), f.logFile,
		mainPort, tlsBlock("verify_if_given"), f.logFile,
		auth(""), proxy,
		f.keysFile, proxy,
		f.keysFile, proxy,
		f.keysFile, proxy,
		f.keysFile, proxy,
		f.keysFile, proxy,
		auth(""), proxy,
		requestPort, tlsBlock("request"), auth(""), proxy,
		errorsPort, tlsBlock("verify_if_given"), auth(""), proxy)
	// The fleet site: scoped_auth with the Redis store (redis_integration_test.go).
	f.redisPort = must(testredis.FreePort())
	f.srvCert, f.srvKey, f.clientTrustBundle = srvCert, srvKey, trust
	config += redisSiteConfig(f, redisSitePort, "127.0.0.1", "A")
	for _, site := range slices.Sorted(maps.Keys(fixtureSites)) {
		config += fixtureSites[site](f)
	}
	tc := caddytest.NewTester(t).WithDefaultOverrides(caddytest.Config{AdminPort: adminPort, LoadRequestTimeout: 10 * time.Second, TestRequestTimeout: 10 * time.Second})
	f.config = config
	tc.InitServer(config, "caddyfile")
	if t.Failed() {
		return nil
	}
	return f
}

func must2[A, B any](a A, b B, err error) (A, B) {
	if err != nil {
		panic(err)
	}
	return a, b
}

// clientTLS is the TLS config of a test client; cert may be nil.
func (f *fixture) clientTLS(cert *testpki.Leaf) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(f.ca1.Root().Cert)
	cfg := &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	if cert != nil {
		c := cert.TLSCertificate()
		// Sent whatever the server's CA list says, so negative tests can
		// present untrusted certificates.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
	}
	return cfg
}

// client returns an HTTP client for one protocol ("h1" or "h2").
func (f *fixture) client(cert *testpki.Leaf, proto string) *http.Client {
	tr := &http.Transport{
		TLSClientConfig: f.clientTLS(cert),
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			_, port, _ := net.SplitHostPort(addr)
			return (&net.Dialer{}).DialContext(ctx, network, net.JoinHostPort(upstreamHost, port))
		},
	}
	if proto == "h2" {
		tr.ForceAttemptHTTP2 = true
	} else {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

type response struct {
	status int
	header http.Header
	body   string
}

// do sends a request with the standard client.
func (f *fixture) do(t *testing.T, c *http.Client, method, url string, headers ...string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, resp.Header, string(body)}
}

// raw sends a request exactly as written (HTTP/1.1 over TLS), so paths and
// headers are not normalised by a client library.
func (f *fixture) raw(t *testing.T, port int, cert *testpki.Leaf, request string) response {
	t.Helper()
	conn, err := tls.Dial("tcp", fmt.Sprintf("%s:%d", upstreamHost, port), f.clientTLS(cert))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if !strings.Contains(request, "\r\n\r\n") {
		request += "\r\n"
	}
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading response to %q: %v", request, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, resp.Header, string(body)}
}

// rawReq builds a raw HTTP/1.1 request with Host and Connection: close.
func rawReq(method, target string, headers ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: localhost:%d\r\n", method, target, mainPort)
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("Connection: close\r\n\r\n")
	return b.String()
}

func bearer(k string) string { return "Authorization: Bearer " + k }

func url(port int, path string) string { return fmt.Sprintf("https://localhost:%d%s", port, path) }
