package caddyauth_test

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/scopegate/scopegate/internal/testpki"
)

// The attack catalogue: every row of the research note's section 4
// (shared/research/peers-auth.md, "Attack catalogue → test cases", A–F),
// sent through the fixture's real Caddy over HTTP/1.1, HTTP/2 and HTTP/3.
// SECURITY.md lists the same rows with their outcome; keep the two in step.
//
// Each case says what must happen on each protocol:
//   - denied by scoped_auth: the status and error code of SPEC section 3,
//     and the recording upstream never saw the request;
//   - refused by the HTTP stack (Go's HTTP/1.1 and HTTP/2 servers, quic-go,
//     Caddy's strict SNI check, the TLS handshake) before any handler ran:
//     the upstream never saw it either;
//   - allowed: the upstream saw exactly one request, with the method and
//     request URI sent, the identity headers scoped_auth established and no
//     key, certificate-forwarding or aliased identity header;
//   - n/a: the request cannot be written in that protocol, and why.

// want is the outcome of one request on one protocol.
type want struct {
	status int // 0: no HTTP answer at all (failed handshake, reset stream or connection)
	code   string
	// stack names what refused the request before scoped_auth saw it; its
	// answer has no scoped_auth body.
	stack string
	// orReset: the stack may also reset the stream instead of answering
	// (quic-go writes its 431 and resets the request stream at once; the
	// client sees either first).
	orReset bool
	// allowed: the key (fixture name) the upstream must see in X-Key-Id,
	// "" on a public route.
	key     string
	allowed bool
}

func denied(status int, code string) want { return want{status: status, code: code} }
func refused(status int, by string) want  { return want{status: status, stack: by} }
func allowedAs(key string) want           { return want{status: 200, key: key, allowed: true} }

// Outcome kinds, for the summary.
const (
	kindDenied  = "denied-before-upstream"
	kindAllowed = "allowed"
	kindNA      = "n/a"
	kindChecked = "checked (not a request)"
)

// attackCase is one request of a row, or a check of its own (do).
type attackCase struct {
	name string
	req  wireReq
	want want
	per  map[string]want   // the outcome on one protocol, when it differs
	na   map[string]string // protocol → why the request cannot be written there
	// account the upstream must see in X-Account (allowed requests);
	// by default the X-Account-ID header sent, if any.
	account *string
	// upTarget: the request URI the upstream must see, if not req.target.
	upTarget string
	check    func(t *testing.T, up *http.Request)
	// do replaces sending req: it runs its own requests and assertions on
	// one protocol and returns the outcome kind.
	do func(t *testing.T, f *fixture, proto string) string
	// around runs once, before the case's protocols, and returns what to
	// run after them.
	around func(t *testing.T, f *fixture) func()
}

// attackRow is one row of the catalogue.
type attackRow struct {
	id, what string
	cases    []attackCase
	// elsewhere: the row is covered by another test, named here, and not
	// sent again.
	elsewhere string
}

// hdr builds a header list from name, value pairs.
func hdr(kv ...string) [][2]string {
	var h [][2]string
	for i := 0; i+1 < len(kv); i += 2 {
		h = append(h, [2]string{kv[i], kv[i+1]})
	}
	return h
}

func rq(method, target string, kv ...string) wireReq {
	return wireReq{method: method, target: target, headers: hdr(kv...)}
}

func (r wireReq) withCert(c *testpki.Leaf) wireReq { r.cert = c; return r }
func (r wireReq) onPort(p int) wireReq             { r.port = p; return r }

// TestAttackCatalogue runs every row of the catalogue on every protocol,
// then logs how many requests were denied before the upstream, allowed, or
// not expressible, per category and protocol.
func TestAttackCatalogue(t *testing.T) {
	f := setup(t)
	rows := attackCatalogue(f)
	checkCatalogueIDs(t, rows)
	counts := map[string]map[string]map[string]int{} // category → protocol → kind → n
	var elsewhere []string
	for _, row := range rows {
		cat := row.id[:1]
		if counts[cat] == nil {
			counts[cat] = map[string]map[string]int{}
			for _, p := range protocols {
				counts[cat][p] = map[string]int{}
			}
		}
		if row.elsewhere != "" {
			elsewhere = append(elsewhere, row.id+": "+row.elsewhere)
			continue
		}
		t.Run(row.id, func(t *testing.T) {
			for _, c := range row.cases {
				var after func()
				if c.around != nil && len(c.na) < len(protocols) {
					after = c.around(t, f)
				}
				for _, proto := range protocols {
					kind := f.runAttack(t, row.id+" "+c.name+" ["+proto+"]", c, proto)
					counts[cat][proto][kind]++
				}
				if after != nil {
					after()
				}
			}
		})
	}
	var sum strings.Builder
	sum.WriteString("attack catalogue: requests per category, protocol and outcome\n")
	for _, cat := range slices.Sorted(maps.Keys(counts)) {
		for _, p := range protocols {
			fmt.Fprintf(&sum, "  %s %s:", cat, p)
			for _, k := range []string{kindDenied, kindAllowed, kindNA, kindChecked} {
				fmt.Fprintf(&sum, " %s=%d", k, counts[cat][p][k])
			}
			sum.WriteString("\n")
		}
	}
	sum.WriteString("rows covered by other tests:\n")
	for _, e := range elsewhere {
		sum.WriteString("  " + e + "\n")
	}
	t.Log(sum.String())
}

// checkCatalogueIDs: the table has every research row once, in order.
func checkCatalogueIDs(t *testing.T, rows []attackRow) {
	t.Helper()
	var wantIDs []string
	for cat, n := range map[string]int{"A": 19, "B": 7, "C": 13, "D": 8, "E": 14, "F": 5} {
		for i := 1; i <= n; i++ {
			wantIDs = append(wantIDs, fmt.Sprintf("%s%d", cat, i))
		}
	}
	var got []string
	for _, r := range rows {
		got = append(got, r.id)
		if r.elsewhere == "" && len(r.cases) == 0 {
			t.Errorf("row %s has no cases", r.id)
		}
	}
	slices.Sort(wantIDs)
	sorted := slices.Clone(got)
	slices.Sort(sorted)
	if !slices.Equal(sorted, wantIDs) {
		t.Errorf("catalogue rows %v, want %v", got, wantIDs)
	}
}

// runAttack runs one case on one protocol and returns its outcome kind.
func (f *fixture) runAttack(t *testing.T, name string, c attackCase, proto string) string {
	t.Helper()
	if why, ok := c.na[proto]; ok {
		if why == "" {
			t.Errorf("%s: n/a without a reason", name)
		}
		return kindNA
	}
	if c.do != nil {
		return c.do(t, f, proto)
	}
	w := c.want
	if pw, ok := c.per[proto]; ok {
		w = pw
	}
	before := f.upstream.count()
	got := f.send(c.req, proto)
	reached := f.upstream.count() - before
	if !w.allowed {
		if reached != 0 {
			t.Errorf("%s: a denied request reached the upstream", name)
		}
		switch {
		case w.status == 0:
			if got.err == nil {
				t.Errorf("%s: got %d %q, want the %s to refuse it without an answer", name, got.status, got.body, w.stack)
			}
		case got.err != nil && w.orReset:
		case got.err != nil:
			t.Errorf("%s: %v, want %d", name, got.err, w.status)
		case got.status != w.status:
			t.Errorf("%s: status %d (body %q), want %d", name, got.status, got.body, w.status)
		case w.stack != "":
			if strings.HasPrefix(got.body, `{"error":`) {
				t.Errorf("%s: body %q: want the %s's answer, not scoped_auth's", name, got.body, w.stack)
			}
		case c.req.method != "HEAD":
			if wantBody := `{"error":"` + w.code + `"}`; got.body != wantBody {
				t.Errorf("%s: body %q, want %q", name, got.body, wantBody)
			}
			if ct := got.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("%s: Content-Type %q", name, ct)
			}
			if w.status == 401 && !strings.HasPrefix(got.header.Get("Www-Authenticate"), `Bearer realm="scoped_auth"`) {
				t.Errorf("%s: 401 without the challenge: %v", name, got.header)
			}
		}
		return kindDenied
	}
	if got.err != nil || got.status != 200 {
		t.Errorf("%s: got %d %q (%v), want 200", name, got.status, got.body, got.err)
		return kindAllowed
	}
	if reached != 1 {
		t.Errorf("%s: the upstream saw %d requests, want 1", name, reached)
		return kindAllowed
	}
	up := f.upstream.last()
	f.checkUpstream(t, name, c, w, up)
	if c.check != nil {
		c.check(t, up)
	}
	return kindAllowed
}

// forgedHeaders are the inbound headers that must never reach the
// upstream (SPEC section 3, "What reaches the upstream"), besides the
// key header.
var forgedHeaders = []string{
	"Authorization", "X-Api-Key",
	"X-Forwarded-Client-Cert", "X-Forwarded-Tls-Client-Cert", "X-Forwarded-Tls-Client-Cert-Info",
	"X-Ssl-Client-Cert", "X-Client-Cert", "Ssl-Client-Verify", "X-Amzn-Mtls-Clientcert",
}

// checkUpstream: the upstream saw the request as sent, with the identity
// scoped_auth established and nothing a client could forge.
func (f *fixture) checkUpstream(t *testing.T, name string, c attackCase, w want, up *http.Request) {
	t.Helper()
	if up.Method != c.req.method {
		t.Errorf("%s: upstream method %q, want %q", name, up.Method, c.req.method)
	}
	target := c.req.target
	if c.upTarget != "" {
		target = c.upTarget
	}
	if got := up.URL.RequestURI(); got != target {
		t.Errorf("%s: upstream request URI %q, want %q", name, got, target)
	}
	for _, h := range forgedHeaders {
		if v := up.Header.Values(h); len(v) != 0 {
			t.Errorf("%s: %s reached the upstream: %q", name, h, v)
		}
	}
	for h := range up.Header {
		for i := 0; i < len(h); i++ {
			if ch := h[i]; !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-') {
				t.Errorf("%s: aliased header %q reached the upstream", name, h)
				break
			}
		}
	}
	wantID := ""
	if w.key != "" {
		if r := f.records[w.key]; r != nil {
			wantID = r.ID
		} else {
			wantID = attackSite.ids[w.key]
		}
	}
	if got := up.Header.Get("X-Key-Id"); got != wantID {
		t.Errorf("%s: upstream X-Key-Id %q, want %q (%s)", name, got, wantID, w.key)
	}
	var wantAccount string
	if c.account != nil {
		wantAccount = *c.account
	} else if w.key != "" {
		for _, h := range c.req.headers {
			if strings.EqualFold(h[0], "X-Account-ID") {
				wantAccount = strings.TrimSpace(h[1])
			}
		}
	}
	if got := up.Header.Get("X-Account"); got != wantAccount {
		t.Errorf("%s: upstream X-Account %q, want %q", name, got, wantAccount)
	}
}
