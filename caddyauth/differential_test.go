package caddyauth_test

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scopegate/scopegate/caddyauth"
	"github.com/scopegate/scopegate/internal/testport"
)

// The differential site: its own keys, rules and recording upstream
// (caddyauth.DiffWorld), on its own port.
var (
	diffPort = testport.Port(9640)
	// diffLockPort is held by the one fuzz worker process that runs the
	// fixture's Caddy (see diffThroughCaddy).
	diffLockPort = testport.Port(9641)
	diffSite     struct {
		world    *caddyauth.DiffWorld
		upstream *recorder
	}
)

func init() {
	fixtureSites["differential"] = func(f *fixture) string {
		w, err := caddyauth.NewDiffWorld(f.dir)
		if err != nil {
			panic(err)
		}
		rec := &recorder{}
		rec.srv = httptest.NewServer(rec)
		diffSite.world, diffSite.upstream = w, rec
		return fmt.Sprintf(`
https://localhost:%d {
	tls %s %s
	scoped_auth {
		keys_file %s
		account header X-Account-ID
		strip_headers X-Key-Id X-Account
%s	}
	reverse_proxy %s {
		header_up X-Key-Id {http.auth.key.id}
		header_up X-Account {http.auth.key.account}
	}
}
`, diffPort, f.srvCert, f.srvKey, w.KeysFile, w.CaddyfileRules(), strings.TrimPrefix(rec.srv.URL, "http://"))
	}
}

var (
	diffLockOnce sync.Once
	diffLock     net.Listener
)

// diffThroughCaddy reports whether this process may send requests to the
// fixture's Caddy, starting it if needed. Fuzz worker processes all run
// the target at once, and the fixture's Caddy listens on fixed ports with
// one admin endpoint, so only the worker that holds diffLockPort runs it;
// the others judge the same inputs with the handler-level check.
func diffThroughCaddy(t *testing.T) bool {
	if fl := flag.Lookup("test.fuzzworker"); fl != nil && fl.Value.String() == "true" {
		diffLockOnce.Do(func() {
			diffLock, _ = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", diffLockPort))
		})
		if diffLock == nil {
			return false
		}
	}
	setup(t)
	return true
}

// diffClient keeps one HTTP/1.1 TLS connection (raw requests) and one
// HTTP/2 client to the differential site across fuzz iterations.
type diffClient struct {
	f    *fixture
	conn *tls.Conn
	br   *bufio.Reader
	h2   *http.Client
}

var theDiffClient *diffClient

func (d *diffClient) host() string { return fmt.Sprintf("localhost:%d", diffPort) }

// h1 sends raw bytes over the kept connection (a new one when the server
// closed it) and reads the answer.
func (d *diffClient) h1(t *testing.T, method, raw string) (int, string) {
	t.Helper()
	for attempt := 0; ; attempt++ {
		fresh := d.conn == nil
		if fresh {
			conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", diffPort), d.f.clientTLS(nil))
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			d.conn, d.br = conn, bufio.NewReader(conn)
		}
		_ = d.conn.SetDeadline(time.Now().Add(10 * time.Second))
		_, err := io.WriteString(d.conn, raw)
		var resp *http.Response
		if err == nil {
			resp, err = http.ReadResponse(d.br, &http.Request{Method: method})
		}
		if err != nil {
			d.conn.Close()
			d.conn = nil
			if fresh || attempt > 0 {
				t.Fatalf("request %q: %v", raw, err)
			}
			continue // the server had closed the kept connection
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.Close {
			d.conn.Close()
			d.conn = nil
		}
		return resp.StatusCode, string(body)
	}
}

// viaH2 sends the case with Go's HTTP/2 client, the target as URL.Opaque
// so it is not normalised; false if the client refuses to send it.
func (d *diffClient) viaH2(t *testing.T, c caddyauth.DiffCase) (int, string, bool) {
	t.Helper()
	req, err := http.NewRequest(c.Req.Method, "https://"+d.host()+"/", nil)
	if err != nil {
		return 0, "", false
	}
	path, query, hasQuery := strings.Cut(c.Req.Target, "?")
	req.URL.Opaque, req.URL.RawQuery, req.URL.ForceQuery = path, query, hasQuery && query == ""
	for _, h := range c.Req.Header {
		req.Header.Add(h[0], h[1])
	}
	resp, err := d.h2.Do(req)
	if err != nil {
		switch {
		case strings.Contains(err.Error(), "invalid"):
			return 0, "", false // the client's own validation: nothing was sent
		case strings.Contains(err.Error(), "stream error"):
			return 0, "", true // the server's HTTP/2 layer reset the stream
		}
		t.Fatalf("h2 %s %q: %v", c.Req.Method, c.Req.Target, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("h2 client spoke %s", resp.Proto)
	}
	return resp.StatusCode, string(body), true
}

// FuzzDifferential sends random requests (caddyauth.DiffInput: methods,
// raw paths with encodings, keys, account headers, more headers) through
// the real Caddy of the fixture — raw HTTP/1.1 over a kept TLS connection,
// or HTTP/2 — and checks them against the reference model
// (model_test.go): what reaches the upstream must be allowed by the model,
// with the method and path the model judged and the identity it found;
// differences in the other direction are judged as in
// differential_handler_test.go.
func FuzzDifferential(f *testing.F) {
	for _, s := range caddyauth.DiffSeeds() {
		f.Add(s.Method, s.Target, s.Key, s.Account, s.Headers, s.Gen)
	}
	// the same seeds over HTTP/2
	for _, s := range caddyauth.DiffSeeds()[:40] {
		gen := append([]byte(nil), s.Gen...)
		if len(gen) == 0 {
			gen = []byte{0}
		}
		gen[0] |= 1
		f.Add(s.Method, s.Target, s.Key, s.Account, s.Headers, gen)
	}
	f.Fuzz(func(t *testing.T, method, target string, key uint8, account, headers string, gen []byte) {
		in := caddyauth.DiffInput{Method: method, Target: target, Key: key, Account: account, Headers: headers, Gen: gen}
		if !diffThroughCaddy(t) {
			caddyauth.DiffCheckHandler(t, in)
			return
		}
		fx := theFixture
		if theDiffClient == nil {
			d := &diffClient{f: fx}
			d.h2 = fx.client(nil, "h2")
			theDiffClient = d
		}
		d := theDiffClient
		c, ok := diffSite.world.Generate(in)
		if !ok {
			return
		}
		raw := c.Raw(d.host())
		if strings.HasPrefix(c.Req.Target, "https://") {
			c.Req.Target = "https://" + d.host() + strings.TrimPrefix(c.Req.Target, "https://"+caddyauth.AbsoluteHost)
		}
		before := diffSite.upstream.count()
		var status int
		var body string
		if c.H2 && c.H2Sendable() {
			var sent bool
			if status, body, sent = d.viaH2(t, c); !sent {
				return
			}
		} else {
			c.Req.H2 = false
			status, body = d.h1(t, c.Req.Method, raw)
		}
		c.Req.CaddyServer = true
		v := diffSite.world.Model().Judge(c.Req)
		var errBody struct{ Error string }
		code := ""
		if json.Unmarshal([]byte(body), &errBody) == nil && diffSite.upstream.count() == before {
			code = errBody.Error
		}
		j := caddyauth.DiffJudgement{Request: raw, Method: c.Req.Method, Verdict: v, Status: status, Code: code}
		if n := diffSite.upstream.count(); n > before {
			if n > before+1 {
				t.Fatalf("one request reached the upstream %d times: %q", n-before, raw)
			}
			up := diffSite.upstream.last()
			j.Reached = true
			j.UpstreamMethod, j.UpstreamPath, j.UpstreamHeader = up.Method, up.URL.Path, up.Header
			j.KeyIDSeen, j.AccountSeen = up.Header.Get("X-Key-Id"), up.Header.Get("X-Account")
			if len(up.Header.Values("X-Key-Id")) > 1 || len(up.Header.Values("X-Account")) > 1 {
				t.Fatalf("upstream got more than one identity header: %v\nrequest:\n%s", up.Header, raw)
			}
		} else if status >= 200 && status < 300 {
			// Not a bypass: nothing reached the upstream. Caddy answers an
			// empty 200 when no site matches the Host (e.g. Go's reading
			// of an absolute-form CONNECT target).
			t.Logf("gateway answered %d without the upstream; model %d %s: %q", status, v.Status, v.Code, raw)
		}
		if c.Req.H2 {
			j.Request = "(HTTP/2) " + j.Request
		}
		j.Check(t)
	})
}
