package caddyredact_test

// The leak catalogue: every row of the research notes' leak catalogues
// (shared/research/redact-leaks.md, peers-redact.md §2, peers-auth.md §4 G),
// run through the package's real Caddy and a real upstream, over HTTP/1.1,
// HTTP/2 and HTTP/3. The harness is here; the table is in
// leak_catalogue_rows_test.go.

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/scopegate/scopegate/caddyauth"
	"github.com/scopegate/scopegate/internal/testpki"
	"github.com/scopegate/scopegate/internal/testport"
)

// lcPort is the HTTPS site of the catalogue: HTTP/1.1 and HTTP/2 over TCP,
// HTTP/3 over UDP, all on 127.0.0.1.
var lcPort = testport.Port(9181)

// lcDoc carries the canaries: lcSecrets must never reach a client of a
// masked response, whole or in part.
const lcDoc = `{"data":[{"id":"emp_1","first_name":"Zorbulon","last_name":"Quixter","email":"zorb.quix@hidden-mail.test","work_phone":"+1 (415) 555-0199","department":"Engineering","notes":"plain text"}],"count":1}`

var lcSecrets = []string{"Zorbulon", "Quixter", "zorb.quix@hidden-mail.test", "555-0199"}

// lcBig is larger than the 1 KiB max_buffer of the /small site and than
// encode's minimum length.
var (
	lcBigPrefix = `{"items":[` + strings.Repeat(`{"name":"Zorbulon Quixter","id":12345,"email":"zorb.quix@hidden-mail.test","city":"London"},`, 40)
	lcBig       = lcBigPrefix + strings.Repeat(`{"name":"Zorbulon Quixter","id":12345,"email":"zorb.quix@hidden-mail.test","city":"London"},`, 160) + `{"name":"Last"}]}`
)

// lcBigEnd is how lcBig ends once masked.
const lcBigEnd = `{"name":"[REDACTED]"}]}`

// leakWindow is the length of the canary substrings looked for: no 6-byte
// piece of a canary may reach a client.
const leakWindow = 6

// lcEnv is the catalogue's part of the fixture.
type lcEnv struct {
	up       *httptest.Server
	handlers map[string]http.HandlerFunc
	mu       sync.Mutex
	seen     map[string]http.Header // request headers the upstream saw, by path
	sync     map[string]chan struct{}
	roots    *x509.CertPool
	keys     map[string]string // "pii", "plain": scoped_auth API keys
	logFile  string            // redact's and the error logger's output
	access   string            // the site's access log
}

var lc lcEnv

func init() {
	extraGlobal = append(extraGlobal, lcGlobal)
	extraSites = append(extraSites, lcSite)
}

func lcGlobal(t *testing.T, dir string) string {
	lc.logFile = filepath.Join(dir, "lc-handlers.log")
	return fmt.Sprintf(`	log lchandlers {
		output file %s
		level DEBUG
		include http.handlers.redact http.handlers.reverse_proxy http.log.error
	}
`, lc.logFile)
}

func lcSite(t *testing.T, dir string) string {
	ca := testpki.Must(testpki.NewCA("leak catalogue CA"))
	srv := testpki.Must(ca.Server("localhost", "127.0.0.1"))
	cert, key, err := srv.Write(dir, "lc-server")
	if err != nil {
		t.Fatal(err)
	}
	lc.roots = ca.Pool()

	// API keys for the opt-in rows, made by the real CLI.
	keysFile := filepath.Join(dir, "lc-keys.json")
	lc.keys = map[string]string{}
	for name, args := range map[string][]string{"pii": {"--pii"}, "plain": nil} {
		var out, errOut bytes.Buffer
		argv := append([]string{"new", "--keys", keysFile, "--scope", "*:*", "--name", name}, args...)
		if err := caddyauth.RunScopedKey(&out, &errOut, argv...); err != nil {
			t.Fatalf("scoped-key new: %v: %s", err, errOut.String())
		}
		lc.keys[name] = strings.TrimSpace(out.String())
	}

	// A JSON file for file_server (io.Copy → ReadFrom).
	files := filepath.Join(dir, "lcfiles")
	if err := os.MkdirAll(files, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(files, "people.json"), []byte(lcDoc), 0o644); err != nil {
		t.Fatal(err)
	}

	lc.handlers = lcHandlers()
	lc.seen = map[string]http.Header{}
	lc.sync = map[string]chan struct{}{}
	lc.up = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lc.mu.Lock()
		lc.seen[r.URL.Path] = r.Header.Clone()
		h := lc.handlers[r.URL.Path]
		lc.mu.Unlock()
		if h == nil {
			http.NotFound(w, r)
			return
		}
		h(w, r)
	}))
	upAddr := strings.TrimPrefix(lc.up.URL, "http://")
	lc.access = filepath.Join(dir, "lc-access.log")
	hashKey := strings.Repeat("k", 32)

	// Site routes: one per redact configuration the rows need. handle_path
	// strips the prefix, so the upstream sees /<scenario>.
	routes := []struct{ prefix, body string }{
		{"/d", `redact
		reverse_proxy UP`},
		{"/small", `redact {
			max_buffer 1KiB
		}
		reverse_proxy UP`},
		{"/pass", `redact {
			pass_types text/csv
		}
		reverse_proxy UP`},
		{"/detect", `redact {
			fields ssn key
			detect email phone
		}
		reverse_proxy UP`},
		{"/partial", `redact {
			strategy partial
			detect email phone
		}
		reverse_proxy UP`},
		{"/hash", `redact {
			strategy hash
			hash_key ` + hashKey + `
		}
		reverse_proxy UP`},
		{"/keep", `redact {
			keep $.company.name
		}
		reverse_proxy UP`},
		{"/expose", `redact {
			expose_if {http.request.uri.query.expose}
		}
		reverse_proxy UP`},
		{"/expunknown", `redact {
			expose_if {no.such.placeholder}
		}
		reverse_proxy UP`},
		{"/encout", `encode gzip
		redact
		reverse_proxy UP`},
		{"/encin", `route {
			redact
			encode gzip
			reverse_proxy UP
		}`},
		{"/enctwice", `encode gzip
		route {
			redact
			encode gzip
			reverse_proxy UP
		}`},
		{"/flush", `redact
		reverse_proxy UP {
			flush_interval -1
		}`},
		{"/ticker", `redact
		reverse_proxy UP {
			flush_interval 2ms
		}`},
		{"/files", `redact
		root * ` + files + `
		file_server`},
		{"/auth", `scoped_auth {
			keys_file ` + keysFile + `
			rule * /* authenticated
		}
		redact
		reverse_proxy UP`},
		{"/authwrong", `route {
			redact
			scoped_auth {
				keys_file ` + keysFile + `
				rule * /* authenticated
			}
			reverse_proxy UP
		}`},
		{"/err", `error "boom" 500`},
	}
	var b strings.Builder
	fmt.Fprintf(&b, "https://localhost:%d {\n\tbind 127.0.0.1\n\ttls %s %s\n", lcPort, cert, key)
	fmt.Fprintf(&b, "\tlog {\n\t\toutput file %s\n\t}\n\tlog_append redact_fields {http.redact.fields}\n", lc.access)
	for _, r := range routes {
		fmt.Fprintf(&b, "\thandle_path %s/* {\n\t\t%s\n\t}\n", r.prefix, strings.ReplaceAll(r.body, "UP", upAddr))
	}
	// An upstream error page re-proxied by handle_errors (C7): redact
	// placed there, as the README tells operators.
	fmt.Fprintf(&b, "\thandle_errors 500 {\n\t\tredact\n\t\trewrite * /errpage\n\t\treverse_proxy %s\n\t}\n}\n", upAddr)
	return b.String()
}

// outcome is what a client saw.
type outcome uint8

const (
	oMasked  outcome = 1 << iota // complete response, masked
	oRefused                     // a clean 502 before anything was sent
	oAborted                     // a broken transfer (the stream was aborted)
	oPassed                      // complete response, unchanged by a rule (HEAD/1xx/204/304, pass_types, expose_if, unmatched)
	oDenied                      // refused by another handler (scoped_auth)
	oNA                          // not exercised on this protocol
)

// failClosed is the expectation of a row whose error can come before or
// after the response was committed (e.g. a chunked upstream: reverse_proxy
// flushes after every read, which ends the buffer phase).
const failClosed = oRefused | oAborted

func (o outcome) String() string {
	var s []string
	for _, n := range []struct {
		o outcome
		s string
	}{{oMasked, "masked"}, {oRefused, "refused 502"}, {oAborted, "aborted"}, {oPassed, "passed by rule"}, {oDenied, "denied"}, {oNA, "n/a"}} {
		if o&n.o != 0 {
			s = append(s, n.s)
		}
	}
	return strings.Join(s, "|")
}

var lcProtos = []string{"h1", "h2", "h3"}

// lrow is one row of a research note's catalogue.
type lrow struct {
	id    string // research id (see leak_catalogue_rows_test.go)
	cat   string // category, the letter of peers-redact.md §2
	what  string
	cases []lcase
	unit  string // where the rest of the row is covered below the HTTP layer
}

// lcase is one request of a row.
type lcase struct {
	name    string
	path    string // site prefix + upstream scenario
	method  string // default GET
	hdr     []string
	protos  []string // default all three
	naWhy   string   // why the other protocols are n/a
	want    outcome
	secrets []string // canaries for this case (nil: lcSecrets; empty: none)
	has     []string // must appear in the decoded body
	hasNot  []string // must not appear in the decoded body (exact)
	status  int      // expected status when complete (0: 200 or the upstream's)
	sync    bool     // the streaming-order scenario: read line 1, then let the upstream write line 2
	check   func(t *testing.T, r *lres)
}

// lres is one response as a client saw it.
type lres struct {
	proto   string
	status  int
	major   int
	header  http.Header
	trailer http.Header
	body    []byte // raw bytes received
	plain   []byte // body, gunzipped if Content-Encoding says gzip
	err     error  // transport error: the transfer broke
	class   outcome
}

var (
	lcClientsOnce sync.Once
	lcClients     map[string]*http.Client
)

func lcClient(proto string) *http.Client {
	lcClientsOnce.Do(func() {
		tlsCfg := func() *tls.Config {
			return &tls.Config{RootCAs: lc.roots, ServerName: "localhost", MinVersion: tls.VersionTLS12}
		}
		dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
			_, port, _ := net.SplitHostPort(addr)
			return (&net.Dialer{}).DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
		}
		h1 := &http.Transport{TLSClientConfig: tlsCfg(), DialContext: dial, DisableCompression: true,
			TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
		h2 := &http.Transport{TLSClientConfig: tlsCfg(), DialContext: dial, DisableCompression: true, ForceAttemptHTTP2: true}
		h2.Protocols = new(http.Protocols)
		h2.Protocols.SetHTTP2(true)
		h3 := &http3.Transport{TLSClientConfig: tlsCfg(), DisableCompression: true,
			Dial: func(ctx context.Context, addr string, tc *tls.Config, qc *quic.Config) (*quic.Conn, error) {
				_, port, _ := net.SplitHostPort(addr)
				return quic.DialAddrEarly(ctx, net.JoinHostPort("127.0.0.1", port), tc, qc)
			}}
		lcClients = map[string]*http.Client{}
		for p, rt := range map[string]http.RoundTripper{"h1": h1, "h2": h2, "h3": h3} {
			lcClients[p] = &http.Client{Transport: rt, Timeout: 60 * time.Second,
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		}
	})
	return lcClients[proto]
}

// lcDo sends one request of a case and reads the whole response.
func lcDo(t *testing.T, proto string, c lcase) *lres {
	t.Helper()
	method := c.method
	if method == "" {
		method = http.MethodGet
	}
	path, token := c.path, ""
	if c.sync {
		lc.mu.Lock()
		syncToken++
		token = fmt.Sprintf("%s-%d", proto, syncToken)
		lc.mu.Unlock()
		path += "?t=" + token
	}
	req, err := http.NewRequest(method, fmt.Sprintf("https://localhost:%d%s", lcPort, path), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(c.hdr); i += 2 {
		req.Header.Set(c.hdr[i], c.hdr[i+1])
	}
	r := &lres{proto: proto}
	resp, err := lcClient(proto).Do(req)
	if err != nil {
		r.err = err
		return r
	}
	defer resp.Body.Close()
	r.status, r.major, r.header = resp.StatusCode, resp.ProtoMajor, resp.Header
	if c.sync {
		r.body, r.err = syncRead(token)(t, resp.Body)
	} else {
		r.body, r.err = io.ReadAll(resp.Body)
	}
	r.trailer = resp.Trailer
	r.plain = r.body
	if strings.EqualFold(resp.Header.Get("Content-Encoding"), "gzip") && len(r.body) > 0 {
		zr, err := gzip.NewReader(bytes.NewReader(r.body))
		if err == nil {
			r.plain, err = io.ReadAll(zr)
		}
		if err != nil && r.err == nil {
			t.Errorf("%s: gzip body does not decode: %v", proto, err)
		}
	}
	return r
}

// leaks returns the first canary piece found in b.
func leaks(b []byte, secrets []string) string {
	for _, s := range secrets {
		if len(s) <= leakWindow {
			if bytes.Contains(b, []byte(s)) {
				return s
			}
			continue
		}
		for i := 0; i+leakWindow <= len(s); i++ {
			if bytes.Contains(b, []byte(s[i:i+leakWindow])) {
				return s[i : i+leakWindow]
			}
		}
	}
	return ""
}

func headerBytes(h http.Header) []byte {
	var b bytes.Buffer
	_ = h.Write(&b)
	return b.Bytes()
}

// unmaskedValidators are the headers that describe the unmasked body.
var unmaskedValidators = []string{"Etag", "Last-Modified", "Accept-Ranges", "Content-Md5", "Digest", "Content-Digest", "Repr-Digest", "Content-Range"}

// lcRun runs one case on one protocol and checks the invariants every row
// shares: no canary byte anywhere (body raw and decoded, headers,
// trailers), an outcome the row allows, and on a masked response the
// headers SPEC §6 requires.
func lcRun(t *testing.T, proto string, c lcase) *lres {
	t.Helper()
	r := lcDo(t, proto, c)
	secrets := c.secrets
	if secrets == nil {
		secrets = lcSecrets
	}
	for what, b := range map[string][]byte{"body": r.body, "decoded body": r.plain, "headers": headerBytes(r.header), "trailers": headerBytes(r.trailer)} {
		if s := leaks(b, secrets); s != "" {
			t.Errorf("LEAK %s: %q of a canary in the %s: %.300q", proto, s, what, b)
		}
	}
	switch {
	case r.err != nil:
		r.class = oAborted
	case r.status == http.StatusBadGateway && len(r.body) == 0:
		r.class = oRefused
	case r.status == http.StatusUnauthorized || r.status == http.StatusForbidden:
		r.class = oDenied
	case c.want&oMasked != 0:
		r.class = oMasked
	case c.want&oPassed != 0:
		r.class = oPassed
	default:
		r.class = oMasked
	}
	if c.want&(c.want-1) != 0 {
		t.Logf("%s: outcome %s (allowed: %s)", proto, r.class, c.want)
	}
	if r.class&c.want == 0 {
		t.Errorf("%s: outcome %s (status %d, err %v), want %s; body %.200q", proto, r.class, r.status, r.err, c.want, r.body)
		return r
	}
	if r.status != 0 && r.major != map[string]int{"h1": 1, "h2": 2, "h3": 3}[proto] {
		t.Errorf("%s: answered over HTTP/%d", proto, r.major)
	}
	switch r.class {
	case oRefused:
		if len(r.body) != 0 || r.header.Get("X-Upstream") != "" || r.header.Get("Content-Type") != "" {
			t.Errorf("%s: the 502 carries upstream headers or a body: %v %q", proto, r.header, r.body)
		}
	case oMasked:
		if c.status != 0 && r.status != c.status {
			t.Errorf("%s: status %d, want %d", proto, r.status, c.status)
		}
		lcMaskedHeaders(t, r)
		if mt, _, _ := mime.ParseMediaType(r.header.Get("Content-Type")); (mt == "application/json" || strings.HasSuffix(mt, "+json")) && len(r.plain) > 0 && !json.Valid(r.plain) {
			t.Errorf("%s: masked body is not valid JSON: %.300q", proto, r.plain)
		}
	case oPassed:
		if c.status != 0 && r.status != c.status {
			t.Errorf("%s: status %d, want %d", proto, r.status, c.status)
		}
	}
	if r.class&(oMasked|oPassed) != 0 {
		for _, s := range c.has {
			if !bytes.Contains(r.plain, []byte(s)) {
				t.Errorf("%s: body lacks %q: %.300q", proto, s, r.plain)
			}
		}
		for _, s := range c.hasNot {
			if bytes.Contains(r.plain, []byte(s)) {
				t.Errorf("%s: body has %q: %.300q", proto, s, r.plain)
			}
		}
	}
	if c.check != nil {
		c.check(t, r)
	}
	return r
}

// lcMaskedHeaders: SPEC §6 "Never leaks" for a masked (or exposed)
// response: no validator or digest of the unmasked body, a Content-Length
// that is the masked body's or none, Cache-Control private, Vary by the
// key header.
func lcMaskedHeaders(t *testing.T, r *lres) {
	t.Helper()
	for _, h := range unmaskedValidators {
		if v := r.header.Get(h); v != "" {
			t.Errorf("%s: %s %q of the unmasked body kept", r.proto, h, v)
		}
	}
	if cl := r.header.Get("Content-Length"); cl != "" && cl != fmt.Sprint(len(r.body)) {
		t.Errorf("%s: Content-Length %s for %d bytes", r.proto, cl, len(r.body))
	}
	if r.header.Get("Cache-Control") != "private" && r.header.Get("Cache-Control") != "private, no-store" {
		t.Errorf("%s: Cache-Control %q, want private", r.proto, r.header.Get("Cache-Control"))
	}
	if !slices.ContainsFunc(r.header.Values("Vary"), func(v string) bool { return strings.Contains(v, "Authorization") }) {
		t.Errorf("%s: Vary %q lacks Authorization", r.proto, r.header.Values("Vary"))
	}
}

// lcSeen returns the request headers the upstream last saw for a path.
func lcSeen(path string) http.Header {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return lc.seen[path]
}

// TestLeakCatalogue runs every row of the catalogue over h1, h2 and h3.
func TestLeakCatalogue(t *testing.T) {
	setup(t)
	rows := leakRows()
	ids := map[string]bool{}
	type key struct{ cat, proto, outcome string }
	counts := map[key]int{}
	for _, row := range rows {
		if ids[row.id] {
			t.Fatalf("duplicate row id %s", row.id)
		}
		ids[row.id] = true
		t.Run(row.id, func(t *testing.T) {
			if len(row.cases) == 0 {
				if row.unit == "" {
					t.Fatalf("%s: no case and no pointer to a unit test", row.id)
				}
				for _, p := range lcProtos {
					counts[key{row.cat, p, oNA.String()}]++
				}
				t.Logf("%s: not end to end: %s", row.id, row.unit)
				return
			}
			for _, c := range row.cases {
				protos := c.protos
				if protos == nil {
					protos = lcProtos
				}
				for _, p := range lcProtos {
					if !slices.Contains(protos, p) {
						t.Logf("%s on %s: n/a: %s", c.name, p, c.naWhy)
						counts[key{row.cat, p, oNA.String()}]++
						continue
					}
					name := c.name + "/" + p
					t.Run(name, func(t *testing.T) {
						r := lcRun(t, p, c)
						counts[key{row.cat, p, r.class.String()}]++
					})
				}
			}
		})
	}
	// What every row left in the logs of redact, reverse_proxy and the
	// error handler: offsets and states, never body bytes (peers-redact
	// J1). (The access log records response headers, and so the upstream
	// trailers of PR-A6; that row checks them.)
	t.Run("PR-J1/logs", func(t *testing.T) {
		for _, f := range []string{lc.logFile} {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if s := leaks(b, lcSecrets); s != "" {
				t.Errorf("LEAK: %q of a canary in %s", s, filepath.Base(f))
			}
		}
	})

	var ks []key
	for k := range counts {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool {
		a, b := ks[i], ks[j]
		if a.cat != b.cat {
			return a.cat < b.cat
		}
		if a.proto != b.proto {
			return a.proto < b.proto
		}
		return a.outcome < b.outcome
	})
	var sum strings.Builder
	fmt.Fprintf(&sum, "leak catalogue: %d rows; requests per category × protocol × outcome:\n", len(rows))
	for _, k := range ks {
		fmt.Fprintf(&sum, "  %s %-2s %-15s %4d\n", k.cat, k.proto, k.outcome, counts[k])
	}
	t.Log(sum.String())
}
