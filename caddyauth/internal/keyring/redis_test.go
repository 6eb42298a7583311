package keyring

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/scopegate/scopegate/internal/testpki"
	"github.com/scopegate/scopegate/internal/testredis"
)

func init() {
	// Closed stores release their cache at once in tests, so goroutine
	// counts settle quickly.
	closeCacheDelay = 10 * time.Millisecond
	// go-redis reports dial failures on stderr; tests stop Redis on purpose.
	redis.SetLogger(quietRedisLog{})
}

type quietRedisLog struct{}

func (quietRedisLog) Printf(context.Context, string, ...any) {}

// testCounter counts cache outcomes.
type testCounter struct{ n atomic.Int64 }

func (c *testCounter) Inc() { c.n.Add(1) }

type outcomes struct{ hit, miss, neg, err testCounter }

func (o *outcomes) counters() CacheCounters {
	return CacheCounters{Hit: &o.hit, Miss: &o.miss, NegativeHit: &o.neg, Error: &o.err}
}

func (o *outcomes) String() string {
	return fmt.Sprintf("hit=%d miss=%d negative_hit=%d error=%d", o.hit.n.Load(), o.miss.n.Load(), o.neg.n.Load(), o.err.n.Load())
}

type redisEnv struct {
	srv    *testredis.Server
	ed     *RedisEditor
	raw    *redis.Client // for what the CLI never does: silent writes, forged messages
	store  *RedisStore
	stores []*RedisStore
	count  *outcomes
}

func newRedisEnv(t testing.TB, ttl time.Duration, hooks storeHooks) *redisEnv {
	t.Helper()
	srv := testredis.Start(t)
	env := &redisEnv{srv: srv, count: &outcomes{}}
	var err error
	if env.ed, err = OpenRedisEditor(srv.URL()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.ed.Close() })
	env.raw = redis.NewClient(&redis.Options{Addr: srv.Addr(), DisableIdentity: true})
	t.Cleanup(func() { env.raw.Close() })
	env.store = env.openStore(t, ttl, hooks)
	return env
}

func (env *redisEnv) openStore(t testing.TB, ttl time.Duration, hooks storeHooks) *RedisStore {
	t.Helper()
	s, err := OpenRedisStore(RedisOptions{URL: env.srv.URL(), CacheTTL: ttl, Counters: env.count.counters(), hooks: hooks})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	waitFor(t, 5*time.Second, "the store subscribed", s.Subscribed)
	env.stores = append(env.stores, s)
	return s
}

func waitFor(t testing.TB, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("waited %v for %s", limit, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Since(start)
}

// newRecord creates a key in Redis through the editor and returns its
// plaintext and record.
func (env *redisEnv) newRecord(t testing.TB, mod func(*Record)) (string, *Record) {
	t.Helper()
	rec, err := newEditRecord()
	if err != nil {
		t.Fatal(err)
	}
	key, err := NewKey(rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	rec.Hash = FormatHash(HashKey(key))
	if mod != nil {
		mod(rec)
	}
	env.create(t, rec)
	return key, rec
}

// create stores a record and waits until every store has applied its
// announcement (which invalidates what they cached about the id).
func (env *redisEnv) create(t testing.TB, rec *Record) {
	t.Helper()
	seen := make([]int64, len(env.stores))
	for i, s := range env.stores {
		seen[i] = s.announcements.Load()
	}
	if err := env.ed.Create(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	for i, s := range env.stores {
		waitFor(t, 5*time.Second, "the announcement", func() bool { return s.announcements.Load() > seen[i] })
	}
}

func (env *redisEnv) revoke(t testing.TB, id string) {
	t.Helper()
	err := env.ed.Update(context.Background(), id, func(r *Record) error {
		r.Disabled = true
		r.Version++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// writeSilently stores a record without announcing it: a lost message.
func (env *redisEnv) writeSilently(t testing.TB, rec *Record) {
	t.Helper()
	data, err := marshalRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := env.raw.HSet(context.Background(), RedisRecordKey(rec.ID), "record", data).Err(); err != nil {
		t.Fatal(err)
	}
}

// warm looks id up until it is served from the cache (a fill that raced
// an announcement returns its result without caching it).
func (env *redisEnv) warm(t testing.TB, s *RedisStore, id string) *Key {
	t.Helper()
	for range 100 {
		env.lookup(t, s, id)
		before := s.fetches.Load()
		k := env.lookup(t, s, id)
		if s.fetches.Load() == before {
			return k
		}
	}
	t.Fatalf("%s is never served from the cache", id)
	return nil
}

func (env *redisEnv) lookup(t testing.TB, s *RedisStore, id string) *Key {
	t.Helper()
	k, err := s.Lookup(context.Background(), id)
	if err != nil {
		t.Fatalf("lookup %s: %v", id, err)
	}
	return k
}

// TestRedisLayout: records, the certificate index and the announcements
// are exactly what SPEC section 5 says.
func TestRedisLayout(t *testing.T) {
	env := newRedisEnv(t, time.Minute, storeHooks{})
	ctx := context.Background()
	sub := env.raw.Subscribe(ctx, RedisChannel)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	ca := testpki.Must(testpki.NewCA("layout CA"))
	leaf := testpki.Must(ca.Client("svc", testpki.URIs("spiffe://acme.test/svc")))
	rec := &Record{ID: testpki.Must(NewID()), Scopes: []string{"gifts:read"}, Accounts: []string{"*"}, Version: 1,
		ClientCert: &CertBinding{SHA256: []string{leaf.SHA256Hex()}, URI: []string{"spiffe://acme.test/svc"}, IssuerSPKISHA256: []string{ca.SPKISHA256Hex()}}}
	if err := env.ed.Create(ctx, rec); err != nil {
		t.Fatal(err)
	}
	stored, err := env.raw.HGet(ctx, "scopegate:key:"+rec.ID, "record").Result()
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeRecord([]byte(stored))
	if err != nil || back.ID != rec.ID || back.Version != 1 || back.ClientCert.URI[0] != "spiffe://acme.test/svc" {
		t.Fatalf("stored record %s: %v", stored, err)
	}
	for _, k := range []string{"scopegate:cert:sha256:" + leaf.SHA256Hex(), "scopegate:cert:uri:spiffe://acme.test/svc"} {
		if id, err := env.raw.Get(ctx, k).Result(); err != nil || id != rec.ID {
			t.Errorf("%s = %q, %v", k, id, err)
		}
	}
	msg, err := sub.ReceiveMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"id":"` + rec.ID + `","version":1}`; msg.Payload != want {
		t.Errorf("announcement %s, want %s", msg.Payload, want)
	}
	env.revoke(t, rec.ID)
	if msg, err = sub.ReceiveMessage(ctx); err != nil || msg.Payload != `{"id":"`+rec.ID+`","version":2}` {
		t.Errorf("revocation announcement %v %v", msg, err)
	}
}

// TestRedisStoreHitsMissesNegatives: the first lookup is one round trip,
// the next ones are cache hits; an unknown id is cached as a negative
// entry, so repeating it costs no round trip.
func TestRedisStoreHitsMissesNegatives(t *testing.T) {
	env := newRedisEnv(t, time.Minute, storeHooks{})
	s := env.store
	_, rec := env.newRecord(t, nil)
	if k := env.lookup(t, s, rec.ID); k == nil || k.ID != rec.ID || k.Version != 1 {
		t.Fatalf("lookup: %+v", k)
	}
	before := s.fetches.Load()
	for range 10 {
		if k := env.lookup(t, s, rec.ID); k == nil || k.ID != rec.ID {
			t.Fatal("cached lookup lost the key")
		}
	}
	if s.fetches.Load() != before {
		t.Errorf("cached lookups went to Redis %d times", s.fetches.Load()-before)
	}
	unknown := testpki.Must(NewID())
	for range 10 {
		if k := env.lookup(t, s, unknown); k != nil {
			t.Fatal("unknown id found")
		}
	}
	if n := s.fetches.Load() - before; n != 1 {
		t.Errorf("10 lookups of one unknown id took %d round trips, want 1", n)
	}
	if env.count.hit.n.Load() != 10 || env.count.miss.n.Load() != 2 || env.count.neg.n.Load() != 9 || env.count.err.n.Load() != 0 {
		t.Errorf("counters: %s", env.count)
	}
	// A flood of random well-formed ids: one round trip per id, then
	// negative hits.
	ids := make([]string, 2000)
	for i := range ids {
		ids[i] = testpki.Must(NewID())
	}
	before = s.fetches.Load()
	for round := 0; round < 2; round++ {
		for _, id := range ids {
			env.lookup(t, s, id)
		}
	}
	if n := s.fetches.Load() - before; n != int64(len(ids)) {
		t.Errorf("2 rounds over %d unknown ids took %d round trips", len(ids), n)
	}
	// A key created after its id was cached as unknown works at once: the
	// creation's announcement evicts the negative entry.
	fresh := editTestRecord(t)
	if k := env.lookup(t, s, fresh.ID); k != nil {
		t.Fatal("not created yet")
	}
	if err := env.ed.Create(context.Background(), fresh); err != nil {
		t.Fatal(err)
	}
	d := waitFor(t, time.Second, "the new key", func() bool { return env.lookup(t, s, fresh.ID) != nil })
	t.Logf("a key cached as unknown was found %v after its creation", d)
}

// TestRedisCacheIsCostBounded: a flood of unknown ids against a small
// cache keeps the cache within its cost bound.
func TestRedisCacheIsCostBounded(t *testing.T) {
	srv := testredis.Start(t)
	s, err := OpenRedisStore(RedisOptions{URL: srv.URL(), CacheTTL: time.Minute, CacheMaxCost: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for range 5000 {
		if _, err := s.Lookup(context.Background(), testpki.Must(NewID())); err != nil {
			t.Fatal(err)
		}
	}
	if used := s.cache.c.MaxCost() - s.cache.c.RemainingCost(); used > 64<<10 {
		t.Errorf("cache holds %d cost units, bound %d", used, 64<<10)
	}
}

// TestRedisStoreEvictsOnAnnouncement: a revocation reaches a warm cache
// through the announcement, well under a second.
func TestRedisStoreEvictsOnAnnouncement(t *testing.T) {
	env := newRedisEnv(t, time.Hour, storeHooks{})
	other := env.openStore(t, time.Hour, storeHooks{}) // a second instance
	_, rec := env.newRecord(t, nil)
	for _, s := range []*RedisStore{env.store, other} {
		for range 2 { // the second lookup puts the entry in the front table
			if k := env.lookup(t, s, rec.ID); k == nil || k.Disabled {
				t.Fatal("key not usable")
			}
		}
	}
	env.revoke(t, rec.ID)
	start := time.Now()
	for i, s := range []*RedisStore{env.store, other} {
		waitFor(t, time.Second, "the revocation", func() bool { return env.lookup(t, s, rec.ID).Disabled })
		t.Logf("instance %d sees the revocation after %v (cache TTL 1h)", i+1, time.Since(start))
	}
}

// TestRedisStoreVersionRace: a fill that read version 1 before version 2
// was announced must not cache version 1 afterwards, nor hand it to a
// lookup that started after the announcement. The fill is held between its
// Redis read and its cache insert while the revocation is written and
// announced, then released.
func TestRedisStoreVersionRace(t *testing.T) {
	var target atomic.Value // the id whose fill is held
	target.Store("")
	reached, release := make(chan struct{}), make(chan struct{})
	announced := make(chan Announcement, 16)
	hooks := storeHooks{
		fetched: func(id string) {
			if id == target.Load().(string) {
				target.Store("")
				close(reached)
				<-release
			}
		},
		announced: func(a Announcement) { announced <- a },
	}
	env := newRedisEnv(t, time.Hour, hooks)
	s := env.store
	_, rec := env.newRecord(t, nil)
	<-announced // the creation
	target.Store(rec.ID)

	type result struct {
		k   *Key
		err error
	}
	done := make(chan result, 1)
	go func() {
		k, err := s.Lookup(context.Background(), rec.ID)
		done <- result{k, err}
	}()
	<-reached // the fill has read version 1
	env.revoke(t, rec.ID)
	if a := <-announced; a.ID != rec.ID || a.Version != 2 {
		t.Fatalf("announcement %+v", a)
	}
	// A lookup that starts now, after the announcement, joins the round
	// trip in flight (singleflight) but must not take its version 1.
	late := make(chan result, 1)
	go func() {
		k, err := s.Lookup(context.Background(), rec.ID)
		late <- result{k, err}
	}()
	time.Sleep(50 * time.Millisecond) // let it join
	close(release)                    // the fill now tries to cache version 1
	r := <-done
	if r.err != nil || r.k == nil || r.k.Version != 1 {
		t.Fatalf("the racing lookup: %+v %v", r.k, r.err)
	}
	if r := <-late; r.err != nil || r.k == nil || r.k.Version != 2 || !r.k.Disabled {
		t.Fatalf("a lookup that started after the announcement got %+v %v", r.k, r.err)
	}
	// The held fill (version 1) and the late lookup's own round trip
	// (version 2) both tried to cache: only version 2 may be there.
	if n := s.fetches.Load(); n != 2 {
		t.Errorf("%d round trips, want 2 (the held one, the late lookup's own)", n)
	}
	k := env.lookup(t, s, rec.ID)
	if k.Version != 2 || !k.Disabled {
		t.Fatalf("after the race the store answers version %d (disabled %v): the stale fill was cached", k.Version, k.Disabled)
	}
	if n := s.fetches.Load(); n != 2 {
		t.Error("version 2 was not cached")
	}
}

// TestRedisStoreForgedMessages: a message on the channel can only evict.
// An announcement with a huge version makes the id uncacheable for one
// TTL (every lookup asks Redis, which still has the real record); garbage
// clears the whole cache.
func TestRedisStoreForgedMessages(t *testing.T) {
	announced := make(chan Announcement, 16)
	env := newRedisEnv(t, time.Hour, storeHooks{announced: func(a Announcement) { announced <- a }})
	s := env.store
	ctx := context.Background()
	_, rec := env.newRecord(t, nil)
	<-announced
	env.lookup(t, s, rec.ID)
	if err := env.raw.Publish(ctx, RedisChannel, `{"id":"`+rec.ID+`","version":999999,"disabled":false,"scopes":["*:*"]}`).Err(); err != nil {
		t.Fatal(err)
	}
	<-announced
	before := s.fetches.Load()
	for range 3 {
		k := env.lookup(t, s, rec.ID)
		if k == nil || k.Version != 1 || k.Disabled || !slices.Equal(k.Scopes, []string{"gifts:read"}) {
			t.Fatalf("after a forged announcement: %+v", k)
		}
	}
	if s.fetches.Load() != before+3 {
		t.Errorf("lookups of an id announced with a higher version than stored should not be cached: %d round trips for 3", s.fetches.Load()-before)
	}
	// Garbage clears everything.
	_, rec2 := env.newRecord(t, nil)
	<-announced
	env.warm(t, s, rec2.ID)
	before = s.fetches.Load()
	if err := env.raw.Publish(ctx, RedisChannel, `not json`).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "the cache to be cleared", func() bool {
		env.lookup(t, s, rec2.ID)
		return s.fetches.Load() > before
	})
}

// TestRedisCacheEvictMarksBounded: remembered versions are bounded; past
// the bound a stripe refuses fills for one TTL (never caches stale data).
func TestRedisCacheEvictMarksBounded(t *testing.T) {
	kc, err := newKeyCache(time.Hour, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer kc.close()
	var ids []string
	for range cacheStripes*maxEvictMarks + 5000 {
		id := testpki.Must(NewID())
		ids = append(ids, id)
		kc.evict(id, 7)
	}
	if n := kc.marks(); n > cacheStripes*maxEvictMarks {
		t.Fatalf("%d marks remembered, bound %d", n, cacheStripes*maxEvictMarks)
	}
	// Every id announced with version 7 still refuses version 6.
	refused := 0
	for _, id := range ids[:2000] {
		if !kc.putKey(id, nil, 6, kc.ticket(id), 0) {
			refused++
		}
	}
	if refused != 2000 {
		t.Errorf("%d of 2000 stale fills refused", refused)
	}
	// An expired mark no longer refuses.
	kc2, _ := newKeyCache(time.Minute, 0)
	defer kc2.close()
	now := time.Now()
	kc2.now = func() time.Time { return now }
	kc2.evict(ids[0], 3)
	if kc2.putKey(ids[0], nil, 2, kc2.ticket(ids[0]), 0) {
		t.Error("stale fill accepted")
	}
	now = now.Add(2 * time.Minute)
	if !kc2.putKey(ids[0], nil, 2, kc2.ticket(ids[0]), 0) {
		t.Error("fill refused after the mark expired")
	}
	// A fill that read Redis before an announcement of its id is refused,
	// whatever version it read.
	ticket0 := kc2.ticket(ids[2])
	kc2.evict(ids[2], 1)
	if kc2.putKey(ids[2], nil, 5, ticket0, 0) {
		t.Error("fill from before an announcement accepted")
	}
	if !kc2.putKey(ids[2], nil, 5, kc2.ticket(ids[2]), 0) {
		t.Error("fill after the announcement refused")
	}
	// A fill read before a clear is refused.
	ticket := kc2.ticket(ids[1])
	kc2.clear()
	if kc2.putKey(ids[1], nil, 0, ticket, 0) {
		t.Error("fill from before a clear accepted")
	}
}

// TestRedisStoreRedisDown: with Redis gone, cached keys keep working and
// uncached ones fail fast with ErrUnavailable (never "no such key"); a
// paused Redis (a partition) costs a lookup at most its timeout, and
// concurrent lookups of one id share one attempt. After a restart the
// store recovers by itself.
func TestRedisStoreRedisDown(t *testing.T) {
	env := newRedisEnv(t, time.Hour, storeHooks{})
	s := env.store
	_, cached := env.newRecord(t, nil)
	_, uncached := env.newRecord(t, nil)
	unknown := testpki.Must(NewID())
	env.warm(t, s, cached.ID)
	negative := testpki.Must(NewID())
	env.warm(t, s, negative)

	env.srv.Save(t) // so that the restart below brings the records back
	env.srv.Stop()
	if k := env.lookup(t, s, cached.ID); k == nil || k.ID != cached.ID {
		t.Fatal("cached key lost while Redis is down")
	}
	if k := env.lookup(t, s, negative); k != nil {
		t.Fatal("cached negative entry lost")
	}
	for _, id := range []string{uncached.ID, unknown} {
		start := time.Now()
		k, err := s.Lookup(context.Background(), id)
		if k != nil || !errors.Is(err, ErrUnavailable) {
			t.Fatalf("uncached lookup with Redis down: %v %v", k, err)
		}
		if d := time.Since(start); d > 600*time.Millisecond {
			t.Errorf("failed lookup took %v", d)
		}
	}
	errorsBefore := env.count.err.n.Load()

	// Restart with the same data: the store recovers without help.
	env.srv.Start(t)
	waitFor(t, 5*time.Second, "recovery", func() bool {
		k, err := s.Lookup(context.Background(), uncached.ID)
		return err == nil && k != nil
	})
	if env.count.err.n.Load() < errorsBefore {
		t.Error("error counter went back")
	}
	if err := env.ed.Update(context.Background(), cached.ID, func(r *Record) error { r.Version++; r.Name = "after restart"; return nil }); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "announcements after the restart", func() bool { return env.lookup(t, s, cached.ID).Name == "after restart" })
	env.warm(t, s, cached.ID)

	// A paused Redis: connections hang. Lookups fail at the timeout.
	env.srv.Pause(t)
	paused := true
	defer func() {
		if paused {
			env.srv.Resume(t)
		}
	}()
	fetches := s.fetches.Load()
	var wg sync.WaitGroup
	var failures atomic.Int64
	start := time.Now()
	id := testpki.Must(NewID())
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Lookup(context.Background(), id); errors.Is(err, ErrUnavailable) {
				failures.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if failures.Load() != 50 {
		t.Errorf("%d of 50 lookups failed with ErrUnavailable", failures.Load())
	}
	if elapsed > time.Second {
		t.Errorf("50 concurrent lookups against a paused Redis took %v", elapsed)
	}
	if n := s.fetches.Load() - fetches; n != 1 {
		t.Errorf("50 concurrent lookups of one id made %d round trips", n)
	}
	t.Logf("50 concurrent lookups against a paused Redis: all failed after %v, %d round trip", elapsed, s.fetches.Load()-fetches)
	if k := env.lookup(t, s, cached.ID); k == nil {
		t.Error("cached key lost while Redis is paused")
	}
	env.srv.Resume(t)
	paused = false
	waitFor(t, 10*time.Second, "recovery after the pause", func() bool {
		k, err := s.Lookup(context.Background(), uncached.ID)
		return err == nil && k != nil
	})
}

// TestRedisStoreReconnectClearsCache: an announcement lost while the
// subscription was down is made up for on reconnect, when the whole
// cache is cleared.
func TestRedisStoreReconnectClearsCache(t *testing.T) {
	env := newRedisEnv(t, time.Hour, storeHooks{})
	s := env.store
	_, rec := env.newRecord(t, nil)
	env.warm(t, s, rec.ID)
	subs := s.subscriptions.Load()
	// Drop the subscription; the revocation below is not announced.
	if err := env.raw.Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	revoked := *rec
	revoked.Disabled, revoked.Version = true, 2
	env.writeSilently(t, &revoked)
	d := waitFor(t, 5*time.Second, "the resubscription", func() bool { return s.subscriptions.Load() > subs })
	if k := env.lookup(t, s, rec.ID); !k.Disabled {
		t.Fatal("a stale entry survived the resubscription")
	}
	t.Logf("resubscribed and cleared the cache %v after the subscription was killed", d)
}

// TestRedisStoreLostMessageExpires: a change whose announcement is lost
// (while the subscription stays up) is seen within one cache TTL.
func TestRedisStoreLostMessageExpires(t *testing.T) {
	const ttl = 400 * time.Millisecond
	env := newRedisEnv(t, ttl, storeHooks{})
	s := env.store
	_, rec := env.newRecord(t, nil)
	env.warm(t, s, rec.ID)
	revoked := *rec
	revoked.Disabled, revoked.Version = true, 2
	start := time.Now()
	env.writeSilently(t, &revoked)
	d := waitFor(t, ttl+time.Second, "expiry", func() bool { return env.lookup(t, s, rec.ID).Disabled })
	if d > ttl+200*time.Millisecond {
		t.Errorf("lost revocation seen after %v, cache TTL %v", d, ttl)
	}
	t.Logf("lost revocation seen after %v (cache TTL %v)", time.Since(start), ttl)
}

// TestRedisStoreSingleflight: concurrent lookups of one uncached id make
// one round trip.
func TestRedisStoreSingleflight(t *testing.T) {
	hold := make(chan struct{})
	var held atomic.Bool
	env := newRedisEnv(t, time.Hour, storeHooks{fetched: func(string) {
		if held.CompareAndSwap(false, true) {
			<-hold
		}
	}})
	s := env.store
	_, rec := env.newRecord(t, nil)
	var wg sync.WaitGroup
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if k, err := s.Lookup(context.Background(), rec.ID); err != nil || k == nil {
				t.Errorf("lookup: %v", err)
			}
		}()
	}
	waitFor(t, 5*time.Second, "the first fill", held.Load)
	time.Sleep(50 * time.Millisecond) // let the others queue up
	close(hold)
	wg.Wait()
	if n := s.fetches.Load(); n != 1 {
		t.Errorf("100 concurrent lookups made %d round trips", n)
	}
}

// TestRedisStoreBadRecord: a record this instance cannot use is an error
// (503), not an unknown key.
func TestRedisStoreBadRecord(t *testing.T) {
	env := newRedisEnv(t, time.Hour, storeHooks{})
	_, rec := env.newRecord(t, nil)
	_, other := env.newRecord(t, nil)
	env.writeSilently(t, &Record{ID: other.ID, Hash: other.Hash, Scopes: other.Scopes, Version: 5}) // fine
	data, _ := marshalRecord(other)
	ctx := context.Background()
	env.raw.HSet(ctx, RedisRecordKey(rec.ID), "record", data) // another id's record
	if _, err := env.store.Lookup(ctx, rec.ID); !errors.Is(err, ErrUnavailable) {
		t.Errorf("record under the wrong id: %v", err)
	}
	env.raw.HSet(ctx, RedisRecordKey(rec.ID), "record", `{"id":"`+rec.ID+`","acounts":[]}`)
	if _, err := env.store.Lookup(ctx, rec.ID); !errors.Is(err, ErrUnavailable) {
		t.Errorf("misspelt field: %v", err)
	}
}

// TestRedisStorePrincipals: certificate principals through the index; a
// revoked principal's pins can be taken over; an active one's cannot.
func TestRedisStorePrincipals(t *testing.T) {
	announced := make(chan Announcement, 16)
	env := newRedisEnv(t, time.Hour, storeHooks{announced: func(a Announcement) { announced <- a }})
	s := env.store
	ctx := context.Background()
	ca := testpki.Must(testpki.NewCA("principal CA"))
	ca2 := testpki.Must(testpki.NewCA("other CA"))
	leaf := testpki.Must(ca.Client("svc", testpki.URIs("spiffe://acme.test/svc")))
	impostor := testpki.Must(ca2.Client("svc", testpki.URIs("spiffe://acme.test/svc")))
	chain := []*x509.Certificate{leaf.Cert, ca.Cert}
	principal := func() *Record {
		return &Record{ID: testpki.Must(NewID()), Scopes: []string{"gifts:read"}, Version: 1,
			ClientCert: &CertBinding{URI: []string{"spiffe://acme.test/svc"}, IssuerSPKISHA256: []string{ca.SPKISHA256Hex()}}}
	}
	p1 := principal()
	if err := env.ed.Create(ctx, p1); err != nil {
		t.Fatal(err)
	}
	<-announced // every announcement invalidates the cached pins
	k, err := s.LookupPrincipal(ctx, chain)
	if err != nil || k == nil || k.ID != p1.ID {
		t.Fatalf("principal lookup: %v %v", k, err)
	}
	if k, err := s.LookupPrincipal(ctx, []*x509.Certificate{impostor.Cert, ca2.Cert}); err != nil || k != nil {
		t.Fatalf("another CA's certificate matched: %v %v", k, err)
	}
	before := s.fetches.Load()
	if k, _ := s.LookupPrincipal(ctx, chain); k == nil || s.fetches.Load() != before {
		t.Error("second principal lookup was not served from the cache")
	}
	p2 := principal()
	if err := env.ed.Create(ctx, p2); err == nil || !strings.Contains(err.Error(), p1.ID) {
		t.Fatalf("a second active principal took the pin: %v", err)
	}
	env.revoke(t, p1.ID)
	waitFor(t, time.Second, "the revocation", func() bool {
		k, err := s.LookupPrincipal(ctx, chain)
		return err == nil && k != nil && k.Disabled
	})
	if err := env.ed.Create(ctx, p2); err != nil {
		t.Fatalf("the pin of a revoked principal: %v", err)
	}
	waitFor(t, time.Second, "the new principal", func() bool {
		k, err := s.LookupPrincipal(ctx, chain)
		return err == nil && k != nil && k.ID == p2.ID
	})
	env.srv.Stop()
	if k, err := s.LookupPrincipal(ctx, chain); err != nil || k == nil || k.ID != p2.ID {
		t.Errorf("cached principal with Redis down: %v %v", k, err)
	}
	other := testpki.Must(ca.Client("uncached"))
	if k, err := s.LookupPrincipal(ctx, []*x509.Certificate{other.Cert, ca.Cert}); k != nil || !errors.Is(err, ErrUnavailable) {
		t.Errorf("uncached principal lookup with Redis down: %v %v", k, err)
	}
}

// TestRedisEditor: create, duplicate ids, unknown ids, no lost update
// under concurrency, versions that only increase, list over thousands of
// records with SCAN (never KEYS).
func TestRedisEditor(t *testing.T) {
	env := newRedisEnv(t, time.Hour, storeHooks{})
	ctx := context.Background()
	_, rec := env.newRecord(t, nil)
	if err := env.ed.Create(ctx, rec); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate create: %v", err)
	}
	unknown := testpki.Must(NewID())
	if err := env.ed.Update(ctx, unknown, func(*Record) error { return nil }); err == nil || !strings.Contains(err.Error(), unknown) {
		t.Errorf("unknown id: %v", err)
	}
	if err := env.ed.Update(ctx, rec.ID, func(*Record) error { return nil }); err == nil || !strings.Contains(err.Error(), "increase the version") {
		t.Errorf("update without a new version: %v", err)
	}
	if err := env.ed.Update(ctx, rec.ID, func(*Record) error { return ErrUnchanged }); err != nil {
		t.Errorf("unchanged: %v", err)
	}
	// An older base version is refused by the script itself.
	stale := *rec
	stale.Version = 2
	if err := env.ed.write(ctx, 0, nil, nil, &stale); !errors.Is(err, errConflict) {
		t.Errorf("write based on a version that is not stored: %v", err)
	}
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := env.ed.Update(ctx, rec.ID, func(r *Record) error { r.Version++; return nil }); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if got, _ := env.ed.Get(ctx, rec.ID); got.Version != 21 {
		t.Errorf("20 concurrent updates: version %d, want 21", got.Version)
	}

	const n = 3000
	pipe := env.raw.Pipeline()
	want := []string{rec.ID}
	for range n - 1 {
		r := editTestRecord(t)
		data, _ := marshalRecord(r)
		pipe.HSet(ctx, RedisRecordKey(r.ID), "record", data)
		want = append(want, r.ID)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	env.raw.Do(ctx, "CONFIG", "RESETSTAT")
	recs, err := env.ed.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range recs {
		got = append(got, r.ID)
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("list returned %d records, want %d, sorted", len(got), len(want))
	}
	stats, _ := env.raw.Info(ctx, "commandstats").Result()
	if strings.Contains(stats, "cmdstat_keys:") || !strings.Contains(stats, "cmdstat_scan:") {
		t.Errorf("list should use SCAN, not KEYS: %s", stats)
	}
}

// TestRedisStoreCloseStopsGoroutines: Close stops the subscription, the
// connections and the cache.
func TestRedisStoreCloseStopsGoroutines(t *testing.T) {
	srv := testredis.Start(t)
	time.Sleep(50 * time.Millisecond)
	baseline := runtime.NumGoroutine()
	s, err := OpenRedisStore(RedisOptions{URL: srv.URL(), CacheTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "subscription", s.Subscribed)
	for range 20 {
		if _, err := s.Lookup(context.Background(), testpki.Must(NewID())); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s.Close()
	if _, err := s.Lookup(context.Background(), testpki.Must(NewID())); !errors.Is(err, ErrUnavailable) {
		t.Errorf("lookup after close: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > baseline {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines after Close, %d before Open:\n%s", runtime.NumGoroutine(), baseline, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestParseRedisURL: schemes and errors that never echo a password.
func TestParseRedisURL(t *testing.T) {
	for _, ok := range []string{"redis://127.0.0.1:6379/0", "rediss://user:secret@redis.example:6380/2", "redis://:secret@localhost"} {
		if _, err := ParseRedisURL(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for raw, want := range map[string]string{
		"http://127.0.0.1:6379":            "scheme",
		"redis://:secret@host:port/0":      "invalid port",
		"redis://:secret@host:6379/zero":   "database",
		"unix:///tmp/redis.sock":           "scheme",
		"redis:///0":                       "no host",
		"rediss://u:secret@h:1/0?pool=x&=": "",
	} {
		_, err := ParseRedisURL(raw)
		if want == "" {
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: %v (want %q, no password)", raw, err, want)
		}
	}
	if got := RedactURL("rediss://user:secret@h:6380/0"); strings.Contains(got, "secret") {
		t.Errorf("redacted: %s", got)
	}
}

// measurePropagation revokes n warm keys and returns, for each, the time
// from the start of the revoke until both instances answer "disabled".
func measurePropagation(tb testing.TB, env *redisEnv, other *RedisStore, n int) []time.Duration {
	delays := make([]time.Duration, 0, n)
	for range n {
		_, rec := env.newRecord(tb, nil)
		for _, s := range []*RedisStore{env.store, other} {
			waitFor(tb, time.Second, "the new key", func() bool { k, _ := s.Lookup(context.Background(), rec.ID); return k != nil })
		}
		start := time.Now()
		env.revoke(tb, rec.ID)
		for _, s := range []*RedisStore{env.store, other} {
			for {
				if k, _ := s.Lookup(context.Background(), rec.ID); k != nil && k.Disabled {
					break
				}
				if time.Since(start) > 5*time.Second {
					tb.Fatal("revocation not seen within 5s")
				}
				time.Sleep(50 * time.Microsecond)
			}
		}
		delays = append(delays, time.Since(start))
	}
	slices.Sort(delays)
	return delays
}

// TestRevocationPropagation: revocations reach two warm instances well
// under a second.
func TestRevocationPropagation(t *testing.T) {
	env := newRedisEnv(t, time.Hour, storeHooks{})
	other := env.openStore(t, time.Hour, storeHooks{})
	d := measurePropagation(t, env, other, 20)
	t.Logf("revocation reached both instances: median %v, max %v over %d revocations", d[len(d)/2], d[len(d)-1], len(d))
	if d[len(d)-1] > time.Second {
		t.Errorf("slowest revocation took %v", d[len(d)-1])
	}
}

// BenchmarkRevocationPropagation: median and max over 100 revocations,
// from the start of the revoke (its own round trip included) until both
// instances deny. Run with -benchtime=1x.
func BenchmarkRevocationPropagation(b *testing.B) {
	env := newRedisEnv(b, time.Hour, storeHooks{})
	other := env.openStore(b, time.Hour, storeHooks{})
	var all []time.Duration
	for b.Loop() {
		all = append(all, measurePropagation(b, env, other, 100)...)
	}
	slices.Sort(all)
	b.ReportMetric(float64(all[len(all)/2].Microseconds()), "median-µs")
	b.ReportMetric(float64(all[len(all)-1].Microseconds()), "max-µs")
}

// BenchmarkRedisLookupWarm: a lookup served by the cache.
func BenchmarkRedisLookupWarm(b *testing.B) {
	env := newRedisEnv(b, time.Hour, storeHooks{})
	_, rec := env.newRecord(b, nil)
	env.lookup(b, env.store, rec.ID)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if k, err := env.store.Lookup(ctx, rec.ID); k == nil || err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSetLookup: the same lookup in the keys-file store's Set.
func BenchmarkSetLookup(b *testing.B) {
	rec, err := newEditRecord()
	if err != nil {
		b.Fatal(err)
	}
	set, err := NewSet([]*Record{rec})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if k, err := set.Lookup(ctx, rec.ID); k == nil || err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRedisLookupCold: every lookup misses the cache (the epoch is
// bumped first) and makes one Redis round trip.
func BenchmarkRedisLookupCold(b *testing.B) {
	env := newRedisEnv(b, time.Hour, storeHooks{})
	_, rec := env.newRecord(b, nil)
	ctx := context.Background()
	before := env.store.fetches.Load()
	n := int64(0)
	b.ReportAllocs()
	for b.Loop() {
		n++
		env.store.cache.clear()
		if k, err := env.store.Lookup(ctx, rec.ID); k == nil || err != nil {
			b.Fatal(err)
		}
	}
	if got := env.store.fetches.Load() - before; got != n {
		b.Fatalf("%d round trips for %d lookups", got, n)
	}
}
