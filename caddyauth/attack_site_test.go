package caddyauth_test

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/scopegate/scopegate/caddyauth/internal/keyring"
	"github.com/scopegate/scopegate/internal/testport"
	"github.com/scopegate/scopegate/internal/testredis"
)

// attackPort is the catalogue's own site: no client authentication (so
// Caddy keeps TLS session tickets on, and HTTP/3 0-RTT works: B7), the key
// in a custom header with the access-log filter the README ships (C9), and
// its own keys file that F5 can break without disturbing other tests.
var attackPort = testport.Port(9620)

// emptyCAPort is a site whose client CA file holds no decodable
// certificate (E8).
var emptyCAPort = testport.Port(9622)

// emptyCAPEM looks like a certificate but its body is not base64, so
// pem.Decode finds no block at all.
const emptyCAPEM = "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n"

// attackSite is what the site's registration wrote.
var attackSite struct {
	keysFile, logFile string
	emptyCAFile       string
	keys              map[string]string // name → plaintext
	ids               map[string]string // name → id
	records           []*keyring.Record
}

func init() {
	fixtureSites["attack"] = func(f *fixture) string {
		attackSite.keysFile = filepath.Join(f.dir, "attack-keys.json")
		attackSite.logFile = filepath.Join(f.dir, "attack-access.log")
		attackSite.keys, attackSite.ids = map[string]string{}, map[string]string{}
		for name, scopes := range map[string][]string{"AK": {"*:*"}, "AKREAD": {"gifts:read"}} {
			id := must(keyring.NewID())
			k := must(keyring.NewKey(id))
			attackSite.keys[name], attackSite.ids[name] = k, id
			attackSite.records = append(attackSite.records, &keyring.Record{ID: id, Name: name, Hash: keyring.FormatHash(keyring.HashKey(k)), Scopes: scopes, Version: 1})
		}
		writeAttackKeys(attackSite.records)
		// E8: a client CA file without a single decodable PEM block. Caddy
		// 2.11.9 starts with it (an empty trust pool); this site shows that
		// it then fails closed.
		attackSite.emptyCAFile = filepath.Join(f.dir, "attack-empty-ca.pem")
		if err := os.WriteFile(attackSite.emptyCAFile, []byte(emptyCAPEM), 0o600); err != nil {
			panic(err)
		}
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
		rule * /v1/me authenticated
	}
	reverse_proxy %s {
		header_up X-Key-Id {http.auth.key.id}
	}
}
`, emptyCAPort, f.srvCert, f.srvKey, attackSite.emptyCAFile, f.keysFile, strings.TrimPrefix(f.upstream.srv.URL, "http://")) + fmt.Sprintf(`
https://localhost:%d {
	tls %s %s
	log {
		output file %s
		format filter {
			request>headers>X-Api-Key delete
		}
	}
	scoped_auth {
		keys_file %s
		header X-Api-Key
		log_redaction_configured
		account header X-Account-ID
		strip_headers X-Key-Id X-Account
		rule GET,HEAD /v1/gifts* gifts:read
		rule POST     /v1/gifts  gifts:send
		rule *        /v1/me     authenticated
		rule *        /healthz   public
	}
	reverse_proxy %s {
		header_up X-Key-Id {http.auth.key.id}
		header_up X-Account {http.auth.key.account}
	}
}
`, attackPort, f.srvCert, f.srvKey, attackSite.logFile, attackSite.keysFile, strings.TrimPrefix(f.upstream.srv.URL, "http://"))
	}
}

func writeAttackKeys(recs []*keyring.Record) {
	data := must(json.MarshalIndent(keyring.File{Keys: recs}, "", "  "))
	if err := writeAtomic(attackSite.keysFile, data); err != nil {
		panic(err)
	}
}

// ticketCache is a TLS session cache that says when a ticket arrived.
type ticketCache struct {
	tls.ClientSessionCache
	once sync.Once
	got  chan struct{}
}

func newTicketCache() *ticketCache {
	return &ticketCache{ClientSessionCache: tls.NewLRUClientSessionCache(4), got: make(chan struct{})}
}

func (c *ticketCache) Put(key string, cs *tls.ClientSessionState) {
	c.ClientSessionCache.Put(key, cs)
	if cs != nil {
		c.once.Do(func() { close(c.got) })
	}
}

// earlyData (B7): over HTTP/3, a request sent as 0-RTT early data on a
// resumed session. POST gets 425 too_early and never reaches the upstream;
// GET goes through, and the upstream learns it was early data (Caddy adds
// Early-Data: 1, RFC 8470).
func earlyData(method string) func(t *testing.T, f *fixture, proto string) string {
	return func(t *testing.T, f *fixture, proto string) string {
		t.Helper()
		cache := newTicketCache()
		first := wireReq{method: "GET", target: "/healthz", port: attackPort, sessions: cache}
		if got := f.sendH3(first, false); got.err != nil || got.status != 200 {
			t.Fatalf("B7: first connection: %d %v", got.status, got.err)
		}
		select {
		case <-cache.got:
		case <-time.After(5 * time.Second):
			t.Fatal("B7: no session ticket from Caddy's HTTP/3 server")
		}
		// The server judges a request by the handshake state when it
		// reads it: a 0-RTT request read after the client's Finished
		// arrived is no longer early data (and cannot be a replay, which
		// never completes the handshake). Caddy then adds no Early-Data
		// header. Try until the server did read it as early data.
		for attempt := 1; ; attempt++ {
			req := wireReq{method: method, target: "/v1/gifts", port: attackPort, sessions: cache, headers: hdr("X-Api-Key", attackSite.keys["AK"])}
			before := f.upstream.count()
			got := f.sendH3(req, true)
			if got.err != nil {
				t.Fatalf("B7 %s: %v", method, got.err)
			}
			if !got.used0RTT {
				t.Fatalf("B7 %s: the request did not go out as accepted 0-RTT data (resumed %v)", method, got.resumed)
			}
			reached := f.upstream.count() - before
			if got.status == 200 && reached == 1 && f.upstream.last().Header.Get("Early-Data") == "" {
				// Read after the handshake completed: judged as a normal
				// request (identity still checked).
				if up := f.upstream.last(); up.Header.Get("X-Key-Id") != attackSite.ids["AK"] || up.Header.Get("X-Api-Key") != "" {
					t.Errorf("B7 %s after the handshake: upstream headers %v", method, up.Header)
				}
				if attempt == 10 {
					t.Fatalf("B7 %s: in 10 attempts the server never read the request as early data", method)
				}
				continue
			}
			if method == "POST" {
				if got.status != 425 || got.body != `{"error":"too_early"}` || reached != 0 {
					t.Errorf("B7 POST as early data: %d %q, reached the upstream %d times; want 425 too_early, never", got.status, got.body, reached)
				}
				return kindDenied
			}
			if got.status != 200 || reached != 1 {
				t.Fatalf("B7 %s as early data: %d %q, upstream saw %d", method, got.status, got.body, reached)
			}
			up := f.upstream.last()
			if up.Header.Get("Early-Data") != "1" || up.Header.Get("X-Key-Id") != attackSite.ids["AK"] || up.Header.Get("X-Api-Key") != "" {
				t.Errorf("B7 %s as early data: upstream headers %v", method, up.Header)
			}
			return kindAllowed
		}
	}
}

// customHeaderKey (C9): a key sent in X-Api-Key works, never reaches the
// upstream, and the site's access log (with the README's filter) has the
// request but not the key.
func customHeaderKey(t *testing.T, f *fixture, proto string) string {
	t.Helper()
	marker := "/v1/gifts?c9=" + proto
	c := attackCase{req: wireReq{method: "GET", target: marker, port: attackPort, headers: hdr("X-Api-Key", attackSite.keys["AK"])}, want: allowedAs("AK")}
	kind := f.runAttack(t, "C9 key in X-Api-Key ["+proto+"]", c, proto)
	deadline := time.Now().Add(5 * time.Second)
	for {
		logs, _ := os.ReadFile(attackSite.logFile)
		if strings.Contains(string(logs), "c9="+proto) {
			if strings.Contains(string(logs), attackSite.keys["AK"]) {
				t.Errorf("C9: the key sent in X-Api-Key is in the access log")
			}
			if !strings.Contains(string(logs), `"user_id":"`+attackSite.ids["AK"]+`"`) {
				t.Errorf("C9: the access log does not name the key id")
			}
			return kind
		}
		if time.Now().After(deadline) {
			t.Fatalf("C9: no access log line for %s", marker)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// noSecretsLogged (C10): after every row, no log line Caddy wrote (its
// DEBUG log and both sites' access logs) holds a key, its SHA-256, or a
// long piece of its secret. TestSecretsNeverLogged also checks metrics'
// and error bodies' neighbours; here the logs of the whole catalogue.
func noSecretsLogged(t *testing.T, f *fixture, proto string) string {
	t.Helper()
	time.Sleep(100 * time.Millisecond) // let the log writers flush
	var logs strings.Builder
	for _, p := range []string{f.logFile, attackSite.logFile} {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		logs.Write(data)
	}
	all := map[string]string{}
	for name, k := range f.keys {
		all[name] = k
	}
	for name, k := range attackSite.keys {
		all[name] = k
	}
	body := metrics(t)
	for name, k := range all {
		sum := keyring.HashKey(k)
		secret := k[len(k)-49 : len(k)-6]
		for what, needle := range map[string]string{"key": k, "hash": hex.EncodeToString(sum[:]), "secret prefix": secret[:12], "secret suffix": secret[len(secret)-12:]} {
			if strings.Contains(logs.String(), needle) {
				t.Errorf("C10: %s of key %s found in a log", what, name)
			}
			if strings.Contains(body, needle) {
				t.Errorf("C10: %s of key %s found in the metrics", what, name)
			}
		}
	}
	return kindChecked
}

// badKeysFile (F5): the catalogue site's keys file is replaced by a broken
// one while Caddy runs; the last good set stays in force (its key still
// works, a revoked key is not resurrected) and the error is counted.
func badKeysFile(t *testing.T, f *fixture) func() {
	t.Helper()
	before := metricValue(t, metrics(t), "scopegate_keys_file_errors_total")
	if err := writeAtomic(attackSite.keysFile, []byte(`{"keys": [ {"id": "broken"`)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for metricValue(t, metrics(t), "scopegate_keys_file_errors_total") <= before {
		if time.Now().After(deadline) {
			t.Fatal("F5: the broken keys file was never read")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return func() { writeAttackKeys(attackSite.records) }
}

// configRefused (E8): Caddy refuses a configuration whose client CA file is
// missing, or holds a certificate block that does not parse (what `caddy
// validate` and a reload run), so mTLS cannot fail open the way
// CVE-2026-27586 did (a nil pool meant the system roots). A file with no
// decodable PEM block at all is accepted (Caddy 2.11.9) as an empty pool:
// emptyTrustPool shows that this fails closed.
func configRefused(t *testing.T, f *fixture, proto string) string {
	t.Helper()
	dir := t.TempDir()
	badDER := filepath.Join(dir, "bad-der.pem")
	if err := os.WriteFile(badDER, []byte("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		file   string
		refuse bool
	}{
		"missing":                {filepath.Join(dir, "missing.pem"), true},
		"not a certificate":      {badDER, true},
		"no decodable PEM block": {attackSite.emptyCAFile, false},
	}
	for what, c := range cases {
		body := fmt.Sprintf(`{
	admin off
}
https://localhost:%d {
	tls %s %s {
		client_auth {
			mode verify_if_given
			trust_pool file %s
		}
	}
	scoped_auth {
		keys_file %s
		rule * /v1/me authenticated
	}
	respond ok
}
`, testport.Port(9621), f.srvCert, f.srvKey, c.file, attackSite.keysFile)
		out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(body), nil)
		if err != nil {
			t.Fatalf("E8 %s: adapt: %v", what, err)
		}
		var cfg caddy.Config
		if err := json.Unmarshal(out, &cfg); err != nil {
			t.Fatal(err)
		}
		err = caddy.Validate(&cfg)
		switch {
		case c.refuse && err == nil:
			t.Errorf("E8: a client CA file (%s) was accepted", what)
		case c.refuse && !strings.Contains(err.Error(), filepath.Base(c.file)) && !strings.Contains(err.Error(), "certificate"):
			t.Errorf("E8 %s: the error does not say why: %v", what, err)
		case !c.refuse && err != nil:
			t.Errorf("E8 %s: Caddy now refuses it (%v): update SECURITY.md and emptyTrustPool", what, err)
		}
	}
	return kindChecked
}

// noResumption (E11): with client authentication configured, Caddy turns
// TLS session tickets off, so no connection ever resumes a session; the
// binding is judged on a full handshake each time, and still holds. The
// catalogue's own site (no client auth) shows that resumption does
// happen where tickets are on.
func noResumption(t *testing.T, f *fixture, proto string) string {
	t.Helper()
	send := func(r wireReq) wireResp { return f.send(r, proto) }
	cache := newTicketCache()
	for i := range 3 {
		for cert, wantStatus := range map[string]int{"c1": 200, "c2": 403} {
			c := f.c1
			if cert == "c2" {
				c = f.c2
			}
			before := f.upstream.count()
			got := send(wireReq{method: "GET", target: "/v1/gifts", cert: c, sessions: cache, headers: hdr("Authorization", "Bearer "+f.keys["B"])})
			if got.err != nil || got.status != wantStatus || got.resumed {
				t.Errorf("E11 connection %d with %s: %d %v resumed=%v, want %d on a full handshake", i, cert, got.status, got.err, got.resumed, wantStatus)
			}
			if reached := f.upstream.count() - before; (wantStatus == 200) != (reached == 1) {
				t.Errorf("E11 connection %d with %s: upstream saw %d", i, cert, reached)
			}
		}
	}
	// Where tickets are on, the same client does resume.
	open := newTicketCache()
	r := wireReq{method: "GET", target: "/healthz", port: attackPort, sessions: open}
	send(r)
	select {
	case <-open.got:
	case <-time.After(5 * time.Second):
		t.Fatal("E11: no ticket from the site without client auth")
	}
	if got := send(r); !got.resumed {
		t.Errorf("E11: the control site did not resume (%d %v): the check above proves nothing", got.status, got.err)
	}
	return kindChecked
}

// keyFlood (C6): a flood of well-formed keys with distinct unknown ids (n
// per protocol, on kept-alive connections): every one is answered 401
// invalid_key, none reaches the upstream, and the denials are counted one
// by one. The keys-file store is an immutable map with no cache, so
// nothing grows per unknown id; the Redis store's negative cache is
// cost-bounded (TestRedisCacheIsCostBounded, TestRedisCacheEvictMarksBounded).
func keyFlood(n int) func(t *testing.T, f *fixture, proto string) string {
	return func(t *testing.T, f *fixture, proto string) string {
		t.Helper()
		var c *http.Client
		switch proto {
		case "h1", "h2":
			c = f.client(nil, proto)
		case "h3":
			tr := &http3.Transport{
				TLSClientConfig: f.clientTLS(nil),
				Dial: func(ctx context.Context, _ string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
					return quic.DialAddrEarly(ctx, fmt.Sprintf("%s:%d", upstreamHost, mainPort), tlsCfg, cfg)
				},
			}
			defer tr.Close()
			c = &http.Client{Transport: tr, Timeout: wireTimeout}
		}
		series := `scopegate_auth_requests_total{result="invalid_key"}`
		before, upBefore := metricValue(t, metrics(t), series), f.upstream.count()
		for i := range n {
			k := must(keyring.NewKey(must(keyring.NewID())))
			req, _ := http.NewRequest("GET", url(mainPort, "/v1/gifts"), nil)
			req.Header.Set("Authorization", "Bearer "+k)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("C6 request %d: %v", i, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 401 || string(body) != `{"error":"invalid_key"}` || (proto == "h3") != (resp.ProtoMajor == 3) {
				t.Fatalf("C6 request %d: %s %d %q", i, resp.Proto, resp.StatusCode, body)
			}
		}
		if after := metricValue(t, metrics(t), series); after-before != float64(n) {
			t.Errorf("C6: invalid_key counted %v times for %d requests", after-before, n)
		}
		if f.upstream.count() != upBefore {
			t.Errorf("C6: unknown keys reached the upstream")
		}
		return kindDenied
	}
}

// rotationGrace (C12): inside the grace period the previous secret works
// and the log says so (naming the key id); after it, 401. The boundary is
// exact: the previous secret is accepted strictly before
// previous_expires_at, never at it.
func rotationGrace(t *testing.T, f *fixture, proto string) string {
	t.Helper()
	c := attackCase{req: rq("GET", "/v1/gifts?c12="+proto, "Authorization", "Bearer "+f.keys["ROT_PREVIOUS"]), want: allowedAs("ROT")}
	kind := f.runAttack(t, "C12 previous secret in grace ["+proto+"]", c, proto)
	old := attackCase{req: rq("GET", "/v1/gifts", "Authorization", "Bearer "+f.keys["ROTOLD_PREVIOUS"]), want: denied(401, "invalid_key")}
	f.runAttack(t, "C12 previous secret after grace ["+proto+"]", old, proto)
	time.Sleep(50 * time.Millisecond)
	logs, _ := os.ReadFile(f.logFile)
	if !strings.Contains(string(logs), `"previous secret used during rotation grace period"`) || !strings.Contains(string(logs), `"key_id":"`+f.records["ROT"].ID+`"`) {
		t.Errorf("C12: no log line about the previous secret naming %s", f.records["ROT"].ID)
	}
	if proto == "h1" {
		until := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
		id := must(keyring.NewID())
		cur, prev := must(keyring.NewKey(id)), must(keyring.NewKey(id))
		set := must(keyring.NewSet([]*keyring.Record{{ID: id, Hash: keyring.FormatHash(keyring.HashKey(cur)), PreviousHash: keyring.FormatHash(keyring.HashKey(prev)),
			PreviousExpiresAt: &until, Scopes: []string{"*:read"}, Version: 2}}))
		k := must(set.Lookup(context.Background(), id))
		sum := keyring.HashKey(prev)
		for at, want := range map[time.Time]bool{until.Add(-time.Nanosecond): true, until: false, until.Add(time.Nanosecond): false} {
			if ok, previous := k.CheckSecret(&sum, at); ok != want || previous != want {
				t.Errorf("C12: previous secret at %v (grace until %v): accepted %v, want %v", at, until, ok, want)
			}
		}
	}
	return kind
}

// metricOrZero reads one series from a metrics body; 0 when the series
// has not been observed yet.
func metricOrZero(body, series string) float64 {
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return 0
}

// fleetRedis (C6, Redis store): starts the fleet site's Redis (the in-process
// instance of TestRedisFleet's site) for the flood, and stops it after.
func fleetRedis(t *testing.T, f *fixture) func() {
	t.Helper()
	srv := testredis.StartOnPort(t, f.redisPort)
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := f.send(rq("GET", "/v1/gifts", "Authorization", "Bearer "+must(keyring.NewKey(must(keyring.NewID())))).onPort(redisSitePort), "h1")
		if got.status == 401 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("C6: the Redis site never answered 401 (last %d %v)", got.status, got.err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return srv.Stop
}

// redisKeyFlood (C6, Redis store): n distinct unknown ids cost exactly one
// Redis lookup each (a miss); sending the same ids again costs at most one
// more each, and usually none (negative_hit). Nothing is ever allowed.
func redisKeyFlood(n int) func(t *testing.T, f *fixture, proto string) string {
	return func(t *testing.T, f *fixture, proto string) string {
		t.Helper()
		var c *http.Client
		if proto == "h3" {
			tr := &http3.Transport{
				TLSClientConfig: f.clientTLS(nil),
				Dial: func(ctx context.Context, _ string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
					return quic.DialAddrEarly(ctx, fmt.Sprintf("%s:%d", upstreamHost, redisSitePort), tlsCfg, cfg)
				},
			}
			defer tr.Close()
			c = &http.Client{Transport: tr, Timeout: wireTimeout}
		} else {
			c = f.client(nil, proto)
		}
		keys := make([]string, n)
		for i := range keys {
			keys[i] = must(keyring.NewKey(must(keyring.NewID())))
		}
		upBefore := f.upstream.count()
		pass := func() (miss, negative, errs float64) {
			body := metrics(t)
			m0, n0, e0 := metricOrZero(body, `scopegate_auth_cache_total{outcome="miss"}`), metricOrZero(body, `scopegate_auth_cache_total{outcome="negative_hit"}`), metricOrZero(body, `scopegate_auth_cache_total{outcome="error"}`)
			for i, k := range keys {
				req, _ := http.NewRequest("GET", url(redisSitePort, "/v1/gifts"), nil)
				req.Header.Set("Authorization", "Bearer "+k)
				resp, err := c.Do(req)
				if err != nil {
					t.Fatalf("C6 Redis request %d: %v", i, err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 401 {
					t.Fatalf("C6 Redis request %d: %d", i, resp.StatusCode)
				}
			}
			body = metrics(t)
			return metricOrZero(body, `scopegate_auth_cache_total{outcome="miss"}`) - m0, metricOrZero(body, `scopegate_auth_cache_total{outcome="negative_hit"}`) - n0, metricOrZero(body, `scopegate_auth_cache_total{outcome="error"}`) - e0
		}
		miss, negative, errs := pass()
		if miss != float64(n) || negative != 0 || errs != 0 {
			t.Errorf("C6 Redis [%s]: %d new ids cost %v Redis lookups, %v negative hits, %v errors; want %d, 0, 0", proto, n, miss, negative, errs, n)
		}
		miss, negative, errs = pass()
		if miss+negative != float64(n) || errs != 0 {
			t.Errorf("C6 Redis [%s]: %d repeated ids: %v lookups + %v negative hits, %v errors; want %d in all", proto, n, miss, negative, errs, n)
		}
		t.Logf("C6 Redis [%s]: %d repeated unknown ids answered from the negative cache %v times, from Redis %v times", proto, n, negative, miss)
		if f.upstream.count() != upBefore {
			t.Errorf("C6 Redis [%s]: unknown keys reached the upstream", proto)
		}
		return kindDenied
	}
}
