package caddyredact_test

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/klauspost/compress/zstd"

	_ "github.com/scopegate/scopegate/caddyauth"
	_ "github.com/scopegate/scopegate/caddyredact"
	"github.com/scopegate/scopegate/internal/testport"
)

// Ports of this package's in-process Caddy; distinct from caddyauth's so
// that `go test ./...` can run both packages at once.
// SCOPEGATE_TEST_PORT_OFFSET moves them (internal/testport).
var (
	adminPort = testport.Port(2992)
	httpPort  = testport.Port(9180)
)

const employees = `{"data":[{"id":"emp_1","first_name":"Ada","last_name":"Lovelace","email":"ada@acme.test","work_phone":"+1 (415) 555-0101","department":"Engineering","notes":"call ada@home.example"}],"count":1}`

// secrets are the values that must never reach a client of a masked
// response.
var secrets = []string{"Ada", "Lovelace", "ada@acme.test", "555-0101"}

// upstream serves canned responses chosen by path, and records the request
// headers it received.
type upstream struct {
	mu      sync.Mutex
	last    http.Header
	handler map[string]http.HandlerFunc
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	u.last = r.Header.Clone()
	h := u.handler[r.URL.Path]
	u.mu.Unlock()
	if h == nil {
		http.NotFound(w, r)
		return
	}
	h(w, r)
}

func (u *upstream) lastHeader() http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.last
}

var (
	setupOnce sync.Once
	up        *upstream
	dir       string
)

// extraGlobal and extraSites let other test files of the package add global
// options and site blocks to the one Caddyfile (Caddy runs once per test
// binary). Each function runs inside setup, with the temporary directory.
var (
	extraGlobal []func(t *testing.T, dir string) string
	extraSites  []func(t *testing.T, dir string) string
)

func gz(s string) []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	_, _ = zw.Write([]byte(s))
	_ = zw.Close()
	return b.Bytes()
}

func setup(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: starts Caddy")
	}
	setupOnce.Do(func() {
		var err error
		dir, err = os.MkdirTemp("", "scopegate-redact-")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "people.json"), []byte(employees), 0o644); err != nil {
			t.Fatal(err)
		}
		big := `{"items":[` + strings.Repeat(`{"name":"Ada Lovelace","id":12345,"city":"London"},`, 40000) + `{"name":"Last"}]}`
		json := func(body string, extra ...string) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Etag", `"abc"`)
				w.Header().Set("Last-Modified", "Mon, 02 Jan 2006 15:04:05 GMT")
				w.Header().Set("Accept-Ranges", "bytes")
				w.Header().Set("Digest", "sha-256=x")
				for i := 0; i+1 < len(extra); i += 2 {
					w.Header().Set(extra[i], extra[i+1])
				}
				_, _ = io.WriteString(w, body)
			}
		}
		raw := func(status int, ct, enc string, body []byte) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				if ct != "" {
					w.Header().Set("Content-Type", ct)
				} else {
					w.Header()["Content-Type"] = nil // no sniffing by net/http
				}
				if enc != "" {
					w.Header().Set("Content-Encoding", enc)
				}
				// A known length: reverse_proxy then does not flush after
				// every read, so the buffer phase (and a clean 502) does
				// not depend on how the body happened to be split.
				w.Header().Set("Content-Length", fmt.Sprint(len(body)))
				w.WriteHeader(status)
				_, _ = w.Write(body)
			}
		}
		var zl bytes.Buffer
		zw := zlib.NewWriter(&zl)
		_, _ = zw.Write([]byte(employees))
		_ = zw.Close()
		zenc, _ := zstd.NewWriter(nil)
		zst := zenc.EncodeAll([]byte(employees), nil)
		up = &upstream{handler: map[string]http.HandlerFunc{
			"/json":       json(employees),
			"/problem":    raw(422, "application/problem+json; charset=utf-8", "", []byte(`{"title":"bad","detail":"x","email":"ada@acme.test"}`)),
			"/vnd":        raw(200, "application/vnd.api+json; charset=utf-8", "", []byte(employees)),
			"/error500":   raw(500, "application/json", "", []byte(`{"error":"boom","name":"Ada"}`)),
			"/gzip":       raw(200, "application/json", "gzip", gz(employees)),
			"/deflate":    raw(200, "application/json", "deflate", zl.Bytes()),
			"/zstd":       raw(200, "application/json", "zstd", zst),
			"/br":         raw(200, "application/json", "br", []byte("whatever")),
			"/stacked":    raw(200, "application/json", "gzip, gzip", gz(employees)),
			"/ndjson":     raw(200, "application/x-ndjson", "", []byte(`{"email":"ada@acme.test"}`+"\n"+`{"name":"Ada"}`+"\n")),
			"/jsonl":      raw(200, "application/jsonl", "", []byte(`{"email":"ada@acme.test"}`+"\n")),
			"/seq":        raw(200, "application/json-seq", "", []byte("\x1e"+`{"email":"ada@acme.test"}`+"\n\x1e"+`{"name":"Ada"}`+"\n")),
			"/sniff":      raw(200, "", "", []byte(employees)),
			"/sniffbom":   raw(200, "", "", []byte("\xEF\xBB\xBF  "+employees)),
			"/sniffplain": raw(200, "", "", []byte("Ada Lovelace, ada@acme.test")),
			"/text":       raw(200, "text/plain", "", []byte("Ada Lovelace, ada@acme.test")),
			"/csv":        raw(200, "text/csv; charset=utf-8", "", []byte("name,email\nAda,ada@acme.test\n")),
			"/empty":      raw(200, "text/plain", "", nil),
			"/invalid":    raw(200, "application/json", "", []byte(`{"email":"ada@acme.test",,}`)),
			"/invalidbig": raw(200, "application/json", "", []byte(big[:len(big)-2]+`,,"email":"ada@acme.test"}`)),
			"/big":        raw(200, "application/json", "", []byte(big)),
			"/gzipbig":    raw(200, "application/json", "gzip", gz(big)),
			"/gzipbad":    raw(200, "application/json", "gzip", append(gz(big)[:5000], 0, 1, 2)),
			"/partial":    raw(206, "application/json", "", []byte(`{"email":"ada@acme.test"}`)),
			"/nocontent":  raw(204, "application/json", "", nil),
			"/notmod":     raw(304, "application/json", "", nil),
			"/truncated": func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Content-Length", "1000")
				_, _ = io.WriteString(w, `{"id":1,"email":"ada@acme`)
				// the handler returns: net/http closes the connection short
			},
			"/deep": raw(200, "application/json", "", []byte(strings.Repeat("[", 100000)+strings.Repeat("]", 100000))),
			"/hints": func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Link", "</style.css>; rel=preload")
				w.WriteHeader(http.StatusEarlyHints)
				w.Header().Set("Content-Type", "application/json")
				_, _ = io.WriteString(w, employees)
			},
			"/longstring": func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = io.WriteString(w, `{"notes":"`)
				chunk := bytes.Repeat([]byte("a"), 1<<20)
				for i := 0; i < 32; i++ {
					_, _ = w.Write(chunk)
				}
				_, _ = io.WriteString(w, `","email":"ada@acme.test","n":1e400,"z":-0}`)
			},
			"/huge": func(w http.ResponseWriter, r *http.Request) {
				// About 256 MiB of JSON, streamed (chunked, no Content-Length).
				w.Header().Set("Content-Type", "application/json")
				row := []byte(`{"id":1234567,"name":"Ada Lovelace","email":"ada@acme.test","city":"London","tags":["a","b"]},`)
				chunk := bytes.Repeat(row, 1<<16/len(row))
				_, _ = io.WriteString(w, `[`)
				for n := 0; n < 256<<20; n += len(chunk) {
					if _, err := w.Write(chunk); err != nil {
						return
					}
				}
				_, _ = io.WriteString(w, `{"last":true}]`)
			},
			"/flush": func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/x-ndjson")
				for i := 0; i < 3; i++ {
					fmt.Fprintf(w, `{"n":%d,"email":"ada@acme.test"}`+"\n", i)
					w.(http.Flusher).Flush()
					time.Sleep(20 * time.Millisecond)
				}
			},
		}}
		srv := httptest.NewServer(up)
		upAddr := strings.TrimPrefix(srv.URL, "http://")
		config := fmt.Sprintf(`{
	admin localhost:%d
	http_port %d
	grace_period 1ns
	skip_install_trust
	auto_https off
	storage file_system %s
%s}
http://localhost:%d {
	handle /files/* {
		uri strip_prefix /files
		redact
		root * %s
		file_server
	}
	handle /gzipped/* {
		uri strip_prefix /gzipped
		encode gzip
		redact
		reverse_proxy %s
	}
	handle /pass/* {
		uri strip_prefix /pass
		redact {
			pass_types text/csv text/*
		}
		reverse_proxy %s
	}
	handle /small/* {
		uri strip_prefix /small
		redact {
			max_buffer 1KiB
		}
		reverse_proxy %s
	}
	handle /expose/* {
		uri strip_prefix /expose
		redact {
			expose_if {http.request.header.X-Expose}
		}
		reverse_proxy %s
	}
	handle /custom/* {
		uri strip_prefix /custom
		redact {
			fields department
			keep $.data[*].last_name
			detect email
			strategy partial
		}
		reverse_proxy %s
	}
	handle /inner-encode/* {
		uri strip_prefix /inner-encode
		route {
			redact
			encode gzip
			reverse_proxy %s
		}
	}
	handle /errors/* {
		error "boom" 500
	}
	handle {
		redact
		reverse_proxy %s
	}
	handle_errors 500 {
		redact
		header Content-Type application/json
		respond `+"`"+`{"error":"{err.message}","contact":{"name":"Ada Lovelace","email":"ada@acme.test"}}`+"`"+` 500
	}
}
`, adminPort, httpPort, filepath.Join(dir, "storage"), extra(t, extraGlobal), httpPort, dir, upAddr, upAddr, upAddr, upAddr, upAddr, upAddr, upAddr)
		config += extra(t, extraSites)
		tc := caddytest.NewTester(t).WithDefaultOverrides(caddytest.Config{AdminPort: adminPort, LoadRequestTimeout: 10 * time.Second, TestRequestTimeout: 10 * time.Second})
		tc.InitServer(config, "caddyfile")
	})
}

// extra joins what the functions of extraGlobal or extraSites return.
func extra(t *testing.T, fns []func(t *testing.T, dir string) string) string {
	var b strings.Builder
	for _, fn := range fns {
		b.WriteString(fn(t, dir))
	}
	return b.String()
}

type result struct {
	status int
	header http.Header
	body   string
	err    error
}

func get(t *testing.T, method, path string, headers ...string) result {
	t.Helper()
	req, _ := http.NewRequest(method, fmt.Sprintf("http://localhost:%d%s", httpPort, path), nil)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	tr := &http.Transport{DisableCompression: true, TLSClientConfig: &tls.Config{}}
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return result{err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return result{resp.StatusCode, resp.Header, string(body), err}
}

func noSecrets(t *testing.T, name, body string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(body, s) {
			t.Errorf("%s: %q reached the client: %.200s", name, s, body)
		}
	}
}

func TestMaskedJSON(t *testing.T) {
	setup(t)
	for _, path := range []string{"/json", "/vnd", "/sniff", "/sniffbom", "/gzip", "/deflate", "/zstd", "/files/people.json"} {
		r := get(t, "GET", path)
		if r.err != nil || r.status != 200 {
			t.Errorf("%s: %d %v %q", path, r.status, r.err, r.body)
			continue
		}
		noSecrets(t, path, r.body)
		if !strings.Contains(r.body, `"first_name":"[REDACTED]"`) || !strings.Contains(r.body, `"department":"Engineering"`) {
			t.Errorf("%s: body %s", path, r.body)
		}
		if cl := r.header.Get("Content-Length"); cl != fmt.Sprint(len(r.body)) {
			t.Errorf("%s: Content-Length %q for %d bytes", path, cl, len(r.body))
		}
		for _, h := range []string{"Etag", "Last-Modified", "Accept-Ranges", "Digest", "Content-Encoding"} {
			if v := r.header.Get(h); v != "" {
				t.Errorf("%s: %s %q kept", path, h, v)
			}
		}
		if r.header.Get("Cache-Control") != "private" || !strings.Contains(strings.Join(r.header.Values("Vary"), ","), "Authorization") {
			t.Errorf("%s: cache headers %v", path, r.header)
		}
	}
}

func TestMaskedEveryStatusAndType(t *testing.T) {
	setup(t)
	cases := map[string]int{"/problem": 422, "/error500": 500, "/ndjson": 200, "/jsonl": 200, "/seq": 200, "/flush": 200, "/big": 200}
	for path, status := range cases {
		r := get(t, "GET", path)
		if r.err != nil || r.status != status {
			t.Errorf("%s: %d %v", path, r.status, r.err)
			continue
		}
		noSecrets(t, path, r.body)
		if !strings.Contains(r.body, "[REDACTED]") {
			t.Errorf("%s: nothing masked: %.200s", path, r.body)
		}
	}
	if r := get(t, "GET", "/ndjson"); r.body != `{"email":"[REDACTED]"}`+"\n"+`{"name":"[REDACTED]"}`+"\n" {
		t.Errorf("ndjson: %q", r.body)
	}
	if r := get(t, "GET", "/flush"); strings.Count(r.body, "\n") != 3 {
		t.Errorf("flushed ndjson: %q", r.body)
	}
}

func TestRefused(t *testing.T) {
	setup(t)
	for _, path := range []string{"/text", "/sniffplain", "/csv", "/br", "/stacked", "/invalid", "/partial", "/small/invalid"} {
		r := get(t, "GET", path)
		if r.status != 502 {
			t.Errorf("%s: status %d, want 502 (%q)", path, r.status, r.body)
		}
		noSecrets(t, path, r.body)
		if ct := r.header.Get("Content-Type"); ct != "" {
			t.Errorf("%s: upstream Content-Type %q kept on the 502", path, ct)
		}
	}
	// Past max_buffer, invalid JSON aborts the response: the client sees an
	// error, and no masked value.
	r := get(t, "GET", "/small/invalidbig")
	if r.err == nil && r.status == 200 {
		t.Errorf("invalid JSON past max_buffer completed normally")
	}
	noSecrets(t, "invalidbig", r.body)
	// A truncated upstream never shows the partial value.
	r = get(t, "GET", "/truncated")
	noSecrets(t, "truncated", r.body)
	if r.err == nil && r.status == 200 {
		t.Errorf("truncated upstream answered 200 completely: %q", r.body)
	}
	// A protocol upgrade is refused before reaching the upstream.
	r = get(t, "GET", "/json", "Connection", "Upgrade", "Upgrade", "websocket")
	if r.status != 502 {
		t.Errorf("upgrade: %d", r.status)
	}
}

func TestPassTypesAndEmptyBodies(t *testing.T) {
	setup(t)
	if r := get(t, "GET", "/pass/csv"); r.status != 200 || !strings.Contains(r.body, "Ada") {
		t.Errorf("pass_types text/csv: %d %q", r.status, r.body)
	}
	if r := get(t, "GET", "/pass/text"); r.status != 200 {
		t.Errorf("pass_types text/*: %d", r.status)
	}
	if r := get(t, "GET", "/pass/json"); !strings.Contains(r.body, "[REDACTED]") {
		t.Errorf("JSON under pass_types not masked: %q", r.body)
	}
	if r := get(t, "GET", "/empty"); r.status != 200 || r.body != "" {
		t.Errorf("empty text body: %d %q", r.status, r.body)
	}
	for path, status := range map[string]int{"/nocontent": 204, "/notmod": 304} {
		if r := get(t, "GET", path); r.status != status {
			t.Errorf("%s: %d", path, r.status)
		}
	}
	r := get(t, "HEAD", "/json")
	if r.status != 200 || r.header.Get("Content-Length") != "" {
		t.Errorf("HEAD: %d, Content-Length %q", r.status, r.header.Get("Content-Length"))
	}
}

func TestRequestHygiene(t *testing.T) {
	setup(t)
	r := get(t, "GET", "/json", "Range", "bytes=0-20", "If-Range", `"abc"`, "Accept-Encoding", "gzip, br")
	if r.status != 200 {
		t.Fatalf("status %d", r.status)
	}
	h := up.lastHeader()
	if h.Get("Range") != "" || h.Get("If-Range") != "" || h.Get("Accept-Encoding") != "identity" {
		t.Errorf("upstream saw %v", h)
	}
}

func TestEncodeInFront(t *testing.T) {
	setup(t)
	r := get(t, "GET", "/gzipped/big", "Accept-Encoding", "gzip")
	if r.status != 200 || r.header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("status %d, encoding %q", r.status, r.header.Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(strings.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	noSecrets(t, "gzipped", string(plain))
	if !strings.Contains(string(plain), `"name":"[REDACTED]"`) {
		t.Errorf("not masked: %.100s", plain)
	}
}

func TestExposeIf(t *testing.T) {
	setup(t)
	if r := get(t, "GET", "/expose/json", "X-Expose", "true"); !strings.Contains(r.body, "ada@acme.test") || r.header.Get("Cache-Control") != "private" {
		t.Errorf("exposed: %q %v", r.body, r.header)
	}
	// (HTTP trims the spaces of " true": the exact comparison is unit-tested.)
	for _, v := range []string{"True", "TRUE", "1", "yes", "true,true", ""} {
		r := get(t, "GET", "/expose/json", "X-Expose", v)
		noSecrets(t, "expose_if "+v, r.body)
	}
}

func TestCustomPolicy(t *testing.T) {
	setup(t)
	r := get(t, "GET", "/custom/json")
	for _, want := range []string{`"first_name":"A***"`, `"last_name":"Lovelace"`, `"email":"a***@acme.test"`, `"department":"E***"`, `a***@home.example`} {
		if !strings.Contains(r.body, want) {
			t.Errorf("custom policy lacks %s: %s", want, r.body)
		}
	}
}

// TestEncodeInsideRedact: with encode placed after redact in a route, redact
// sees encode's gzip output, decodes it and masks it.
func TestEncodeInsideRedact(t *testing.T) {
	setup(t)
	r := get(t, "GET", "/inner-encode/big", "Accept-Encoding", "gzip")
	if r.status != 200 {
		t.Fatalf("status %d", r.status)
	}
	noSecrets(t, "inner encode", r.body)
	if !strings.Contains(r.body, `"name":"[REDACTED]"`) {
		t.Errorf("not masked: %.100s", r.body)
	}
}

// TestHandleErrorsMasked: redact inside handle_errors masks error pages.
func TestHandleErrorsMasked(t *testing.T) {
	setup(t)
	r := get(t, "GET", "/errors/x")
	if r.status != 500 {
		t.Fatalf("status %d: %q", r.status, r.body)
	}
	noSecrets(t, "error page", r.body)
	if !strings.Contains(r.body, `"email":"[REDACTED]"`) {
		t.Errorf("error page: %q", r.body)
	}
}

// TestHugeBodyBoundedMemory streams about 256 MiB of JSON through redact
// and checks that the process's heap never holds more than a small part
// of it (client, Caddy and upstream share this process).
func TestHugeBodyBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 256 MiB")
	}
	setup(t)
	runtime.GC()
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
		}
	}()
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://localhost:%d/huge", httpPort), nil)
	resp, err := (&http.Client{Timeout: 120 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	var leaked bool
	buf := make([]byte, 64<<10)
	for {
		k, err := resp.Body.Read(buf)
		n += int64(k)
		if bytes.Contains(buf[:k], []byte("ada@acme.test")) {
			leaked = true
		}
		if err != nil {
			break
		}
	}
	resp.Body.Close()
	close(stop)
	wg.Wait()
	if leaked {
		t.Error("an email reached the client")
	}
	if n < 200<<20 {
		t.Fatalf("only %d bytes arrived", n)
	}
	t.Logf("streamed %d MiB, peak heap in use %d MiB", n>>20, peak.Load()>>20)
	if peak.Load() > 96<<20 {
		t.Errorf("peak heap %d MiB while streaming: the body is being held", peak.Load()>>20)
	}
}

// TestEncodedPastBuffer: a gzip body larger than max_buffer is decoded and
// masked while streaming; a corrupt one is refused or aborted, never leaked.
func TestEncodedPastBuffer(t *testing.T) {
	setup(t)
	r := get(t, "GET", "/small/gzipbig")
	if r.status != 200 || r.err != nil || strings.Contains(r.body, "Ada") || !strings.HasSuffix(r.body, `{"name":"[REDACTED]"}]}`) {
		t.Errorf("gzip past max_buffer: %d %v, %d bytes", r.status, r.err, len(r.body))
	}
	r = get(t, "GET", "/small/gzipbad")
	if r.err == nil && r.status == 200 {
		t.Errorf("corrupt gzip answered 200 completely")
	}
	noSecrets(t, "corrupt gzip", r.body)
}

// TestHostileShapes: 100 000 levels of nesting is refused cleanly; a 32 MiB
// string streams through; odd numbers are copied byte for byte; 1xx early
// hints pass.
func TestHostileShapes(t *testing.T) {
	setup(t)
	if r := get(t, "GET", "/deep"); r.status != 502 {
		t.Errorf("deep nesting: %d", r.status)
	}
	r := get(t, "GET", "/longstring")
	if r.status != 200 || len(r.body) < 32<<20 || !strings.HasSuffix(r.body, `","email":"[REDACTED]","n":1e400,"z":-0}`) {
		t.Errorf("long string: %d, %d bytes, ends %q", r.status, len(r.body), r.body[max(0, len(r.body)-60):])
	}
	r = get(t, "GET", "/hints")
	if r.status != 200 {
		t.Errorf("early hints: %d", r.status)
	}
	noSecrets(t, "early hints", r.body)
	// The next request still works.
	if r := get(t, "GET", "/json"); r.status != 200 {
		t.Errorf("after the hostile requests: %d", r.status)
	}
}
