package caddyauth

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/scopegate/scopegate/caddyauth/internal/keyring"
	"github.com/scopegate/scopegate/internal/testpki"
	"github.com/scopegate/scopegate/internal/testredis"
)

func TestCaddyfileRedis(t *testing.T) {
	got, err := adaptedAuth(t, ":8080 {\n\tscoped_auth {\n\t\tredis rediss://scopegate:s3cret@redis.internal:6380/2\n\t\tcache_ttl 5s\n\t\trule * / authenticated\n\t}\n}\n")
	if err != nil {
		t.Fatal(err)
	}
	if got.Redis != "rediss://scopegate:s3cret@redis.internal:6380/2" || time.Duration(got.CacheTTL) != 5*time.Second || got.KeysFile != "" {
		t.Errorf("adapted: %+v", got)
	}
	// A placeholder is kept for provisioning.
	got, err = adaptedAuth(t, ":8080 {\n\tscoped_auth {\n\t\tredis {env.REDIS_URL}\n\t\trule * / authenticated\n\t}\n}\n")
	if err != nil || got.Redis != "{env.REDIS_URL}" || got.CacheTTL != 0 {
		t.Errorf("placeholder: %+v %v", got, err)
	}
}

// TestCaddyfileRedisErrors: each mistake names the file and line, and no
// message repeats a password.
func TestCaddyfileRedisErrors(t *testing.T) {
	cases := []struct {
		lines []string
		want  string
		line  int
	}{
		{[]string{"keys_file k.json", "redis redis://127.0.0.1:6379/0"}, "set only one", 4},
		{[]string{"redis redis://127.0.0.1:6379/0", "keys_file k.json"}, "set only one", 4},
		{[]string{"redis http://127.0.0.1:6379/0"}, "redis:// or rediss://", 3},
		{[]string{"redis redis://:s3cret@host:port/0"}, "invalid port", 3},
		{[]string{"redis"}, "wrong argument count", 3},
		{[]string{"redis redis://127.0.0.1:6379/0", "cache_ttl soon"}, "at least 100ms", 4},
		{[]string{"redis redis://127.0.0.1:6379/0", "cache_ttl 10ms"}, "at least 100ms", 4},
		{[]string{"keys_file k.json", "cache_ttl 5s"}, "applies to the redis store only", 6},
		{[]string{"header X-Api-Key", "log_redaction_configured"}, "needs a key store", 6},
	}
	for _, tc := range cases {
		body := ":8080 {\n\tscoped_auth {\n\t\t" + strings.Join(tc.lines, "\n\t\t") + "\n\t\trule * /ok public\n\t}\n}\n"
		_, err := adapt(t, body)
		if err == nil {
			t.Errorf("%q: adapted", tc.lines)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "Caddyfile:"+strconv.Itoa(tc.line)) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%q: error %q, want %q at Caddyfile:%d and no password", tc.lines, err, tc.want, tc.line)
		}
	}
}

// TestProvisionStoreChoice: the JSON config takes exactly one store.
func TestProvisionStoreChoice(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	keys := filepath.Join(t.TempDir(), "keys.json")
	if err := os.WriteFile(keys, []byte(`{"keys": []}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		h    ScopedAuth
		want string
	}{
		"none":               {ScopedAuth{}, "set keys_file or redis"},
		"both":               {ScopedAuth{KeysFile: keys, Redis: "redis://127.0.0.1:1/0"}, "set only one"},
		"ttl with file":      {ScopedAuth{KeysFile: keys, CacheTTL: caddy.Duration(time.Second)}, "redis store only"},
		"short ttl":          {ScopedAuth{Redis: "redis://127.0.0.1:1/0", CacheTTL: caddy.Duration(time.Millisecond)}, "at least 100ms"},
		"bad url":            {ScopedAuth{Redis: "redis://:s3cret@h:x/0"}, "invalid port"},
		"placeholder, unset": {ScopedAuth{Redis: "{env.SCOPEGATE_TEST_UNSET_URL}"}, "redis:// or rediss://"},
	} {
		h := tc.h
		h.logger = zap.NewNop()
		err := h.provisionStore(ctx)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
		_ = h.Cleanup()
	}
}

// redisUnitEnv is newUnitEnv with its keys copied to a real Redis and the
// handler reading them from a RedisStore.
type redisUnitEnv struct {
	*unitEnv
	srv   *testredis.Server
	ed    *keyring.RedisEditor
	redis *keyring.RedisStore
}

func newRedisUnitEnv(tb testing.TB, ttl time.Duration) *redisUnitEnv {
	tb.Helper()
	env := &redisUnitEnv{unitEnv: newUnitEnv(tb), srv: testredis.Start(tb)}
	var err error
	if env.ed, err = keyring.OpenRedisEditor(env.srv.URL()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { env.ed.Close() })
	for _, key := range env.keys {
		id, _ := keyring.ParseKey(key)
		k, _ := env.store.Set.Lookup(context.Background(), id)
		rec := k.Record
		if err := env.ed.Create(context.Background(), &rec); err != nil {
			tb.Fatal(err)
		}
	}
	initMetrics()
	env.redis, err = keyring.OpenRedisStore(keyring.RedisOptions{URL: env.srv.URL(), CacheTTL: ttl, Counters: cacheCounters})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { env.redis.Close() })
	deadline := time.Now().Add(5 * time.Second)
	for !env.redis.Subscribed() {
		if time.Now().After(deadline) {
			tb.Fatal("the store did not subscribe")
		}
		time.Sleep(5 * time.Millisecond)
	}
	env.h.store = env.redis
	return env
}

func (env *redisUnitEnv) serve(t *testing.T, key string) (int, string) {
	t.Helper()
	w, r := env.request("GET", "/v1/gifts", nil, "Authorization", "Bearer "+key, "X-Account-ID", "acme-us")
	if err := env.h.ServeHTTP(w, r, okHandler); err != nil {
		t.Fatal(err)
	}
	return w.Code, w.Body.String()
}

// TestRedisStoreThroughHandler: the handler with the Redis store; Redis
// down → cached keys work, uncached and unknown keys get 503 (never 200,
// never a cached "unknown"); Redis back → everything works again. The
// cache outcomes are counted.
func TestRedisStoreThroughHandler(t *testing.T) {
	env := newRedisUnitEnv(t, time.Minute)
	read := func(outcome string) float64 { return testutil.ToFloat64(authCacheTotal.WithLabelValues(outcome)) }
	hit, miss, neg, errs := read("hit"), read("miss"), read("negative_hit"), read("error")

	if code, _ := env.serve(t, env.keys["R"]); code != 200 {
		t.Fatalf("key from Redis: %d", code)
	}
	if code, _ := env.serve(t, env.keys["R"]); code != 200 {
		t.Fatalf("cached key: %d", code)
	}
	unknown := testpki.Must(keyring.NewKey(testpki.Must(keyring.NewID())))
	for range 2 {
		if code, _ := env.serve(t, unknown); code != 401 {
			t.Fatalf("unknown key: %d", code)
		}
	}
	if read("hit")-hit != 1 || read("miss")-miss != 2 || read("negative_hit")-neg != 1 || read("error") != errs {
		t.Errorf("cache outcomes: hit +%v miss +%v negative_hit +%v error +%v", read("hit")-hit, read("miss")-miss, read("negative_hit")-neg, read("error")-errs)
	}

	// B is in Redis but was never looked up.
	env.srv.Save(t)
	env.srv.Stop()
	if code, _ := env.serve(t, env.keys["R"]); code != 200 {
		t.Errorf("cached key with Redis down: %d", code)
	}
	if code, _ := env.serve(t, unknown); code != 401 {
		t.Errorf("cached unknown key with Redis down: %d", code)
	}
	other := testpki.Must(keyring.NewKey(testpki.Must(keyring.NewID())))
	for _, k := range []string{env.keys["B"], other} {
		code, body := env.serve(t, k)
		if code != 503 || body != `{"error":"store_unavailable"}` {
			t.Errorf("uncached key with Redis down: %d %s", code, body)
		}
	}
	if read("error")-errs != 2 {
		t.Errorf("errors counted: %v", read("error")-errs)
	}
	env.srv.Start(t)
	deadline := time.Now().Add(5 * time.Second)
	for {
		w, r := env.request("POST", "/v1/budgets/b1/spend", env.chain, "Authorization", "Bearer "+env.keys["B"])
		if err := env.h.ServeHTTP(w, r, okHandler); err != nil {
			t.Fatal(err)
		}
		if w.Code == 200 {
			break
		}
		if w.Code != 503 || time.Now().After(deadline) {
			t.Fatalf("after Redis came back: %d", w.Code)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRedisStoresShared: handlers naming the same Redis and TTL share one
// store (one subscription, one cache), across config reloads too; the last
// Cleanup closes it.
func TestRedisStoresShared(t *testing.T) {
	srv := testredis.Start(t)
	initMetrics()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	h1 := &ScopedAuth{Redis: srv.URL(), logger: zap.NewNop()}
	h2 := &ScopedAuth{Redis: srv.URL(), logger: zap.NewNop()}
	h3 := &ScopedAuth{Redis: srv.URL(), CacheTTL: caddy.Duration(time.Second), logger: zap.NewNop()}
	for _, h := range []*ScopedAuth{h1, h2, h3} {
		if err := h.provisionStore(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if h1.store != h2.store || h1.store == h3.store {
		t.Fatal("stores are not shared by URL and TTL")
	}
	s := h1.store.(*keyring.RedisStore)
	key := h1.redisKey
	if n, _ := redisStores.References(key); n != 2 {
		t.Errorf("%d references", n)
	}
	_ = h1.Cleanup()
	_ = h1.Cleanup() // twice is harmless
	if _, err := s.Lookup(context.Background(), testpki.Must(keyring.NewID())); err != nil {
		t.Errorf("store closed while still in use: %v", err)
	}
	_ = h2.Cleanup()
	_ = h3.Cleanup()
	if _, err := s.Lookup(context.Background(), testpki.Must(keyring.NewID())); err == nil {
		t.Error("store still open after the last Cleanup")
	}
	if n, ok := redisStores.References(key); ok || n != 0 {
		t.Errorf("pool still holds the store: %d", n)
	}
}

// TestScopedKeyRedis: every subcommand with --redis and the same flags as
// with --keys; each change is announced; list works on thousands of
// records; the URL may be a placeholder and carry a password, which no
// message repeats.
func TestScopedKeyRedis(t *testing.T) {
	srv := testredis.Start(t)
	raw := redis.NewClient(&redis.Options{Addr: srv.Addr(), Password: "s3cret pass", DisableIdentity: true})
	defer raw.Close()
	srv.Do(t, "CONFIG", "SET", "requirepass", "s3cret pass")
	url := "redis://:s3cret%20pass@" + srv.Addr() + "/0"
	t.Setenv("SCOPEGATE_TEST_REDIS_URL", url)
	ctx := context.Background()
	sub := raw.Subscribe(ctx, keyring.RedisChannel)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	announced := func(id string, version int64) {
		t.Helper()
		msg, err := sub.ReceiveTimeout(ctx, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		want := `{"id":"` + id + `","version":` + strconv.Itoa(int(version)) + `}`
		if m, ok := msg.(*redis.Message); !ok || m.Payload != want {
			t.Fatalf("announcement %v, want %s", msg, want)
		}
	}
	record := func(id string) *keyring.Record {
		t.Helper()
		data, err := raw.HGet(ctx, keyring.RedisRecordKey(id), "record").Bytes()
		if err != nil {
			t.Fatal(err)
		}
		rec, err := keyring.DecodeRecord(data)
		if err != nil {
			t.Fatal(err)
		}
		return rec
	}
	p := skNewPKI(t)
	var events []scopedKeyChange
	cli := &scopedKeyCLI{now: time.Now, audit: func(e scopedKeyChange) { events = append(events, e) }}

	key := skNewKey(t, cli, "--redis", "{env.SCOPEGATE_TEST_REDIS_URL}", "--scope", "read_only", "--name", "HRIS", "--account", "acme-us,acme-eu", "--expires", "90d", "--cert", p.leafFile)
	id, _ := keyring.ParseKey(key)
	announced(id, 1)
	rec := record(id)
	if rec.Hash != keyring.FormatHash(keyring.HashKey(key)) || rec.Name != "HRIS" || len(rec.Accounts) != 2 || rec.ExpiresAt == nil ||
		rec.ClientCert == nil || len(rec.ClientCert.SHA256) != 1 || rec.Scopes[0] != "*:read" || rec.Version != 1 {
		t.Errorf("stored: %+v", rec)
	}
	if len(events) != 1 || events[0].Store != "redis redis://:xxxxx@"+srv.Addr()+"/0" {
		t.Errorf("audit events: %+v", events)
	}

	principal := strings.TrimSpace(skOK(t, nil, "new", "--redis", url, "--scope", "gifts:read", "--no-secret", "--spiffe", "spiffe://acme.test/hris", "--issuer", p.caFile))
	announced(principal, 1)
	if got, _ := raw.Get(ctx, "scopegate:cert:uri:spiffe://acme.test/hris").Result(); got != principal {
		t.Errorf("principal index: %q", got)
	}
	skFail(t, nil, "already used by the active principal "+principal, "new", "--redis", url, "--scope", "gifts:read", "--no-secret", "--spiffe", "spiffe://acme.test/hris", "--issuer", p.caFile)

	rotated := strings.TrimSpace(skOK(t, nil, "rotate", "--redis", url, id, "--grace", "1h"))
	announced(id, 2)
	if rec := record(id); rec.Hash != keyring.FormatHash(keyring.HashKey(rotated)) || rec.PreviousHash != keyring.FormatHash(keyring.HashKey(key)) || rec.PreviousExpiresAt == nil {
		t.Errorf("after rotate: %+v", rec)
	}
	if out := skOK(t, nil, "revoke", "--redis", url, id); out != "" {
		t.Errorf("revoke printed %q", out)
	}
	announced(id, 3)
	if rec := record(id); !rec.Disabled || rec.Version != 3 {
		t.Errorf("after revoke: %+v", rec)
	}
	if r := skRun(t, nil, "revoke", "--redis", url, id); r.err != nil || !strings.Contains(r.stderr, "already revoked") || record(id).Version != 3 {
		t.Errorf("second revoke: %+v", r)
	}
	skFail(t, nil, "is revoked", "rotate", "--redis", url, id)
	skFail(t, nil, "unknown key id bbbbbbbbbbbbbbbb", "revoke", "--redis", url, "bbbbbbbbbbbbbbbb")
	skFail(t, nil, "WRONGPASS", "list", "--redis", "redis://:wrong-s3cret@"+srv.Addr()+"/0")
	r := skRun(t, nil, "list", "--redis", "redis://:wrong-s3cret@"+srv.Addr()+"/0")
	if strings.Contains(r.stderr, "wrong-s3cret") {
		t.Errorf("an error repeats the password: %s", r.stderr)
	}
	// After the principal is revoked, a new one may take its pin.
	skOK(t, nil, "revoke", "--redis", url, principal)
	skOK(t, nil, "new", "--redis", url, "--scope", "gifts:read", "--no-secret", "--spiffe", "spiffe://acme.test/hris", "--issuer", p.caFile)

	// list: thousands of records, one line each, no hashes.
	pipe := raw.Pipeline()
	for range 2500 {
		r := keyring.Record{ID: testpki.Must(keyring.NewID()), Hash: rec.Hash, Scopes: []string{"a:b"}, Version: 1}
		data, _ := json.Marshal(&r)
		pipe.HSet(ctx, keyring.RedisRecordKey(r.ID), "record", data)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	out := skOK(t, nil, "list", "--redis", url)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2503 || strings.Contains(out, "sha256:") || !strings.Contains(out, `"id":"`+id+`"`) {
		t.Errorf("list: %d lines", len(lines))
	}
	for i := 1; i < len(lines); i++ {
		if lines[i-1] >= lines[i] {
			t.Fatalf("list not sorted by id at line %d", i)
		}
	}
}
