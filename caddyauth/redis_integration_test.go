package caddyauth_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/scopegate/scopegate/caddyauth/internal/keyring"
	"github.com/scopegate/scopegate/internal/testport"
	"github.com/scopegate/scopegate/internal/testredis"
)

// The fleet: two Caddy instances share one Redis.
//
//   - A is the in-process Caddy of the fixture (caddytest, admin 2991),
//     whose config has one more site on redisSitePort;
//   - B is the caddy binary built from ./cmd/caddy, started with its own
//     Caddyfile (admin fleetAdminPort, HTTPS fleetPort).
//
// Both use cache_ttl fleetCacheTTL and the same upstream recorder, which
// learns from X-Instance which one forwarded a request.
var (
	redisSitePort  = testport.Port(9446)
	fleetAdminPort = testport.Port(2996)
	fleetPort      = testport.Port(9447)
	fleetHTTPPort  = testport.Port(9448)
)

const fleetCacheTTL = 3 * time.Second

// redisSiteConfig is the site block of one fleet instance.
func redisSiteConfig(f *fixture, port int, bind, instance string) string {
	return fmt.Sprintf(`
https://localhost:%d {
	bind %s
	tls %s %s {
		client_auth {
			mode verify_if_given
			trust_pool file %s
		}
	}
	scoped_auth {
		redis redis://127.0.0.1:%d/0
		cache_ttl %s
		account header X-Account-ID
		strip_headers X-Key-Id X-Instance
		rule GET,HEAD /v1/gifts* gifts:read
		rule *        /v1/me     authenticated
		rule *        /healthz   public
	}
	reverse_proxy %s {
		header_up X-Key-Id {http.auth.key.id}
		header_up X-Instance %s
	}
}
`, port, bind, f.srvCert, f.srvKey, f.clientTrustBundle, f.redisPort, fleetCacheTTL,
		strings.TrimPrefix(f.upstream.srv.URL, "http://"), instance)
}

// fleet is the running world of TestRedisFleet.
type fleet struct {
	f     *fixture
	srv   *testredis.Server
	url   string
	raw   *redis.Client
	c     *http.Client
	ports map[string]int // instance → port
}

func TestRedisFleet(t *testing.T) {
	testredis.Binary(t) // skips, saying why, without redis-server
	f := setup(t)
	fl := &fleet{f: f, c: f.client(nil, "h1"), ports: map[string]int{"A": redisSitePort, "B": fleetPort}}
	fl.srv = testredis.StartOnPort(t, f.redisPort)
	fl.url = fl.srv.URL()
	fl.raw = redis.NewClient(&redis.Options{Addr: fl.srv.Addr(), DisableIdentity: true, MaxRetries: -1})
	t.Cleanup(func() { fl.raw.Close() })
	startInstanceB(t, f)
	fl.waitSubscribers(t)

	var revokedKey string

	t.Run("a key created by the CLI works on both", func(t *testing.T) {
		key := scopedKey(t, "new", "--redis", fl.url, "--scope", "read_only", "--name", "fleet")
		id, _ := keyring.ParseKey(key)
		for _, inst := range []string{"A", "B"} {
			if got := fl.get(t, inst, key); got.status != 200 {
				t.Fatalf("%s: %d %s", inst, got.status, got.body)
			}
			if got := fl.forwarded(id, inst); got != 1 {
				t.Errorf("upstream saw %d requests for %s from %s", got, id, inst)
			}
		}
		// An unknown (well-formed) key: asked once, then a negative entry.
		unknown := must(keyring.NewKey(must(keyring.NewID())))
		for _, inst := range []string{"A", "B"} {
			for range 3 {
				if got := fl.get(t, inst, unknown); got.status != 401 {
					t.Fatalf("%s: unknown key %d", inst, got.status)
				}
			}
		}
		if n := fl.forwarded(idOf(unknown), ""); n != 0 {
			t.Errorf("an unknown key reached the upstream %d times", n)
		}
	})

	t.Run("after revoke both deny within a second", func(t *testing.T) {
		key := scopedKey(t, "new", "--redis", fl.url, "--scope", "read_only")
		fl.warm(t, key)
		delays := fl.revokeAndWatch(t, key, func() { scopedKey(t, "revoke", "--redis", fl.url, idOf(key)) }, time.Second)
		t.Logf("revocation through the CLI: A denies after %v, B after %v", delays["A"], delays["B"])
		fl.neverAgain(t, key)
		revokedKey = key
	})

	t.Run("redis down: cached keys work, uncached get 503", func(t *testing.T) {
		cached := scopedKey(t, "new", "--redis", fl.url, "--scope", "read_only")
		uncached := scopedKey(t, "new", "--redis", fl.url, "--scope", "read_only")
		unknown := must(keyring.NewKey(must(keyring.NewID())))
		fl.warm(t, cached)
		// The revoked key's tombstone must be cached too (cache_ttl is
		// short here, and the subtests before may have taken longer).
		for _, inst := range []string{"A", "B"} {
			if got := fl.get(t, inst, revokedKey); got.status != 401 {
				t.Fatalf("%s: revoked key before the outage: %d", inst, got.status)
			}
		}
		fl.srv.Save(t)
		fl.srv.Stop()
		for _, inst := range []string{"A", "B"} {
			for key, want := range map[string]int{cached: 200, uncached: 503, unknown: 503, revokedKey: 401} {
				got := fl.get(t, inst, key)
				if got.status != want {
					t.Errorf("%s with Redis down: %d %s, want %d", inst, got.status, got.body, want)
				}
				if want == 503 && got.body != `{"error":"store_unavailable"}` {
					t.Errorf("%s: 503 body %q", inst, got.body)
				}
			}
		}
		for _, key := range []string{uncached, unknown, revokedKey} {
			if n := fl.forwarded(idOf(key), ""); key != revokedKey && n != 0 {
				t.Errorf("a key never allowed reached the upstream %d times", n)
			}
		}

		t.Log("redis restarted: everything recovers without restarting Caddy")
		fl.srv.Start(t)
		start := time.Now()
		for _, inst := range []string{"A", "B"} {
			fl.waitStatus(t, inst, uncached, 200, 10*time.Second)
		}
		t.Logf("an uncached key works on both %v after Redis came back", time.Since(start))
		fl.waitSubscribers(t)
		for _, inst := range []string{"A", "B"} {
			for key, want := range map[string]int{cached: 200, unknown: 401, revokedKey: 401} {
				if got := fl.get(t, inst, key); got.status != want {
					t.Errorf("%s after the restart: %d, want %d", inst, got.status, want)
				}
			}
		}
		// Announcements flow again.
		delays := fl.revokeAndWatch(t, cached, func() { scopedKey(t, "revoke", "--redis", fl.url, idOf(cached)) }, time.Second)
		t.Logf("revocation after the restart: A %v, B %v", delays["A"], delays["B"])
		fl.neverAgain(t, cached)
	})

	t.Run("redis paused (a partition): uncached keys get 503 within the lookup timeout", func(t *testing.T) {
		cached := scopedKey(t, "new", "--redis", fl.url, "--scope", "read_only")
		uncached := scopedKey(t, "new", "--redis", fl.url, "--scope", "read_only")
		fl.warm(t, cached)
		fl.srv.Pause(t)
		paused := true
		defer func() {
			if paused {
				fl.srv.Resume(t)
			}
		}()
		for _, inst := range []string{"A", "B"} {
			if got := fl.get(t, inst, cached); got.status != 200 {
				t.Errorf("%s: cached key while Redis is paused: %d", inst, got.status)
			}
			start := time.Now()
			got := fl.get(t, inst, uncached)
			if d := time.Since(start); got.status != 503 || d > time.Second {
				t.Errorf("%s: uncached key while Redis is paused: %d after %v", inst, got.status, d)
			} else {
				t.Logf("%s: uncached key while Redis is paused: 503 after %v", inst, d)
			}
		}
		if n := fl.forwarded(idOf(uncached), ""); n != 0 {
			t.Errorf("uncached key reached the upstream %d times while Redis was paused", n)
		}
		fl.srv.Resume(t)
		paused = false
		for _, inst := range []string{"A", "B"} {
			fl.waitStatus(t, inst, uncached, 200, 10*time.Second)
		}
		fl.waitSubscribers(t)
	})

	t.Run("a lost announcement: denied within cache_ttl", func(t *testing.T) {
		key := scopedKey(t, "new", "--redis", fl.url, "--scope", "read_only")
		fl.warm(t, key)
		delays := fl.revokeAndWatch(t, key, func() { fl.revokeSilently(t, idOf(key)) }, fleetCacheTTL+500*time.Millisecond)
		t.Logf("revocation without announcement (cache_ttl %v): A denies after %v, B after %v", fleetCacheTTL, delays["A"], delays["B"])
		fl.neverAgain(t, key)
	})

	t.Run("revoked while the subscriptions are down: the reconnect clears the caches", func(t *testing.T) {
		key := scopedKey(t, "new", "--redis", fl.url, "--scope", "read_only")
		fl.warm(t, key)
		delays := fl.revokeAndWatch(t, key, func() {
			if err := fl.raw.Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
				t.Fatal(err)
			}
			fl.revokeSilently(t, idOf(key)) // nobody is subscribed: the announcement would be lost anyway
		}, fleetCacheTTL)
		t.Logf("revocation while disconnected: A denies after %v, B after %v (reconnect, not expiry: cache_ttl %v)", delays["A"], delays["B"], fleetCacheTTL)
		for inst, d := range delays {
			if d > fleetCacheTTL/2 {
				t.Errorf("%s took %v: the reconnect should have cleared its cache", inst, d)
			}
		}
		fl.neverAgain(t, key)
		fl.waitSubscribers(t)

		// The same with the CLI's revoke racing the reconnect.
		key = scopedKey(t, "new", "--redis", fl.url, "--scope", "read_only")
		fl.warm(t, key)
		delays = fl.revokeAndWatch(t, key, func() {
			if err := fl.raw.Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
				t.Fatal(err)
			}
			scopedKey(t, "revoke", "--redis", fl.url, idOf(key))
		}, fleetCacheTTL)
		t.Logf("CLI revocation racing the reconnect: A %v, B %v", delays["A"], delays["B"])
		fl.neverAgain(t, key)
		fl.waitSubscribers(t)
	})

	t.Run("a certificate principal from Redis", func(t *testing.T) {
		certFile, _, err := f.c2.Write(t.TempDir(), "c2")
		if err != nil {
			t.Fatal(err)
		}
		id := scopedKey(t, "new", "--redis", fl.url, "--scope", "gifts:read", "--no-secret", "--cert", certFile)
		c := f.client(f.c2, "h1")
		for _, inst := range []string{"A", "B"} {
			got := f.do(t, c, "GET", url(fl.ports[inst], "/v1/gifts"))
			if got.status != 200 {
				t.Fatalf("%s: principal %d %s", inst, got.status, got.body)
			}
		}
		scopedKey(t, "revoke", "--redis", fl.url, id)
		start := time.Now()
		for _, inst := range []string{"A", "B"} {
			for f.do(t, c, "GET", url(fl.ports[inst], "/v1/gifts")).status != 401 {
				if time.Since(start) > time.Second {
					t.Fatalf("%s: revoked principal still allowed after 1s", inst)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		t.Logf("principal revoked on both after %v", time.Since(start))
	})

	t.Run("a denied client certificate", func(t *testing.T) { fleetDenylist(t, fl) }) // denylist_test.go

	t.Run("cache metrics", func(t *testing.T) {
		for inst, admin := range map[string]int{"A": adminPort, "B": fleetAdminPort} {
			body := fetchMetrics(t, admin)
			for _, outcome := range []string{"hit", "miss", "negative_hit", "error"} {
				series := `scopegate_auth_cache_total{outcome="` + outcome + `"}`
				if v := metricValue(t, body, series); v <= 0 {
					t.Errorf("%s: %s = %v", inst, series, v)
				}
			}
		}
	})
}

func idOf(key string) string {
	id, ok := keyring.ParseKey(key)
	if !ok {
		panic("not a key: " + key)
	}
	return id
}

func fetchMetrics(t *testing.T, admin int) string {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", admin))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

func (fl *fleet) get(t *testing.T, inst, key string) response {
	t.Helper()
	return fl.f.do(t, fl.c, "GET", url(fl.ports[inst], "/v1/me"), "Authorization", "Bearer "+key)
}

// forwarded counts the requests for a key id that reached the upstream
// (from one instance, or from any with inst "").
func (fl *fleet) forwarded(id, inst string) int {
	n := 0
	for _, r := range fl.f.upstream.all() {
		if r.Header.Get("X-Key-Id") == id && (inst == "" || r.Header.Get("X-Instance") == inst) {
			n++
		}
	}
	return n
}

// warm makes both instances cache the key.
func (fl *fleet) warm(t *testing.T, key string) {
	t.Helper()
	for _, inst := range []string{"A", "B"} {
		for range 2 {
			if got := fl.get(t, inst, key); got.status != 200 {
				t.Fatalf("%s: %d %s", inst, got.status, got.body)
			}
		}
	}
}

func (fl *fleet) waitStatus(t *testing.T, inst, key string, status int, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		got := fl.get(t, inst, key)
		if got.status == status {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: status stayed %d (%s), want %d", inst, got.status, got.body, status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// revokeAndWatch polls both instances with the key while revoke runs, and
// returns how long after the start of revoke each one first denied it
// (401). It fails if either still allows it after limit, or allows it
// again after having denied it.
func (fl *fleet) revokeAndWatch(t *testing.T, key string, revoke func(), limit time.Duration) map[string]time.Duration {
	t.Helper()
	var mu sync.Mutex
	delays := map[string]time.Duration{}
	var problems []string
	ready := make(chan struct{})
	start := make(chan time.Time, 2)
	var wg sync.WaitGroup
	for _, inst := range []string{"A", "B"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := fl.f.client(nil, "h1")
			do := func() (int, error) {
				req, _ := http.NewRequest("GET", url(fl.ports[inst], "/v1/me"), nil)
				req.Header.Set("Authorization", "Bearer "+key)
				resp, err := c.Do(req)
				if err != nil {
					return 0, err
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				return resp.StatusCode, nil
			}
			if code, err := do(); err != nil || code != 200 { // also opens the connection
				mu.Lock()
				problems = append(problems, fmt.Sprintf("%s: %d %v before the revocation", inst, code, err))
				mu.Unlock()
			}
			ready <- struct{}{}
			t0 := <-start
			start <- t0
			var denied time.Duration
			for {
				code, err := do()
				elapsed := time.Since(t0)
				if err != nil || (code != 200 && code != 401) {
					mu.Lock()
					problems = append(problems, fmt.Sprintf("%s: %d %v", inst, code, err))
					mu.Unlock()
					return
				}
				switch {
				case code == 401 && denied == 0:
					denied = elapsed
				case code == 200 && denied != 0:
					mu.Lock()
					problems = append(problems, fmt.Sprintf("%s allowed the key again %v after denying it", inst, elapsed))
					mu.Unlock()
					return
				}
				if denied != 0 && elapsed > denied+100*time.Millisecond {
					mu.Lock()
					delays[inst] = denied
					mu.Unlock()
					return
				}
				if elapsed > limit+time.Second {
					mu.Lock()
					problems = append(problems, fmt.Sprintf("%s still allows the key %v after the revocation", inst, elapsed))
					mu.Unlock()
					return
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	<-ready
	<-ready
	t0 := time.Now()
	start <- t0
	revoke()
	wg.Wait()
	for _, p := range problems {
		t.Error(p)
	}
	for inst, d := range delays {
		if d > limit {
			t.Errorf("%s denied the revoked key only after %v (limit %v)", inst, d, limit)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return delays
}

// neverAgain: a revoked key is refused by both, and the upstream sees no
// request for it from now on.
func (fl *fleet) neverAgain(t *testing.T, key string) {
	t.Helper()
	id := idOf(key)
	before := fl.forwarded(id, "")
	for range 10 {
		for _, inst := range []string{"A", "B"} {
			if got := fl.get(t, inst, key); got.status != 401 {
				t.Errorf("%s: revoked key got %d", inst, got.status)
			}
		}
	}
	if after := fl.forwarded(id, ""); after != before {
		t.Errorf("a revoked key reached the upstream %d times", after-before)
	}
}

// revokeSilently disables a record the way the CLI does (version + 1)
// but without announcing it: the message is lost.
func (fl *fleet) revokeSilently(t *testing.T, id string) {
	t.Helper()
	ctx := context.Background()
	data, err := fl.raw.HGet(ctx, keyring.RedisRecordKey(id), "record").Bytes()
	if err != nil {
		t.Fatal(err)
	}
	rec, err := keyring.DecodeRecord(data)
	if err != nil {
		t.Fatal(err)
	}
	rec.Disabled = true
	rec.Version++
	out, _ := json.Marshal(rec)
	if err := fl.raw.HSet(ctx, keyring.RedisRecordKey(id), "record", out).Err(); err != nil {
		t.Fatal(err)
	}
}

// waitSubscribers waits until both instances are subscribed to the
// announcements.
func (fl *fleet) waitSubscribers(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		n, err := fl.raw.PubSubNumSub(context.Background(), keyring.RedisChannel).Result()
		if err == nil && n[keyring.RedisChannel] >= 2 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("subscribers: %v %v", n, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// buildCaddy builds ./cmd/caddy into the test's temporary directory.
func buildCaddy(t *testing.T) string {
	t.Helper()
	// go test puts its own go command first on PATH.
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("building the caddy binary for instance B: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "caddy")
	cmd := exec.Command(goBin, "build", "-o", bin, "./cmd/caddy")
	cmd.Dir = ".." // the module root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/caddy: %v\n%s", err, out)
	}
	return bin
}

// startInstanceB runs the caddy binary with the fleet site on fleetPort,
// and stops it when the test ends.
func startInstanceB(t *testing.T, f *fixture) {
	t.Helper()
	bin := buildCaddy(t)
	dir := t.TempDir()
	logFile := filepath.Join(dir, "caddy-b.log")
	config := fmt.Sprintf(`{
	admin 127.0.0.1:%d
	http_port %d
	https_port %d
	default_bind 127.0.0.1
	grace_period 1ns
	skip_install_trust
	auto_https disable_redirects
	storage file_system %s
	log {
		output file %s
		level DEBUG
	}
}
`, fleetAdminPort, fleetHTTPPort, fleetPort, filepath.Join(dir, "storage"), logFile) + redisSiteConfig(f, fleetPort, "127.0.0.1", "B")
	cfgFile := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cfgFile, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", cfgFile, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+dir, "XDG_DATA_HOME="+dir, "HOME="+dir)
	out, err := os.Create(filepath.Join(dir, "caddy-b.out"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		out.Close()
		if t.Failed() {
			for _, name := range []string{out.Name(), logFile} {
				data, _ := os.ReadFile(name)
				lines := strings.Split(strings.TrimSpace(string(data)), "\n")
				t.Logf("instance B, last lines of %s:\n%s", filepath.Base(name), strings.Join(lines[max(0, len(lines)-30):], "\n"))
			}
		}
	})
	c := f.client(nil, "h1")
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-exited:
			data, _ := os.ReadFile(out.Name())
			t.Fatalf("instance B exited: %v\n%s", err, data)
		default:
		}
		resp, err := c.Get(url(fleetPort, "/healthz"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			data, _ := os.ReadFile(out.Name())
			t.Fatalf("instance B not ready after 30s: %v\n%s", err, data)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
