package keyring

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
)

// Counter is what the store counts cache outcomes with (a Prometheus
// counter, resolved once).
type Counter interface{ Inc() }

// CacheCounters count each Lookup and LookupPrincipal of a RedisStore by
// outcome: answered from the cache with a key (Hit) or with "none"
// (NegativeHit), answered by Redis (Miss), or not answered (Error: the
// handler says 503). Nil counters are not counted.
type CacheCounters struct {
	Hit, Miss, NegativeHit, Error Counter
}

type nopCounter struct{}

func (nopCounter) Inc() {}

// RedisOptions configure a RedisStore.
type RedisOptions struct {
	// URL is redis://[user:password@]host:port/db or rediss://… (TLS).
	URL string
	// CacheTTL is how long a lookup is cached (default 30s).
	CacheTTL time.Duration
	// LookupTimeout bounds one Redis lookup (default 250ms).
	LookupTimeout time.Duration
	// CacheMaxCost bounds the cache, in estimated bytes (default 32 MiB).
	CacheMaxCost int64
	Counters     CacheCounters
	Logger       *zap.Logger

	hooks storeHooks // tests only
}

// storeHooks let tests stop a fill between its Redis read and its cache
// insert, and see announcements applied.
type storeHooks struct {
	fetched   func(id string)
	announced func(a Announcement)
}

// Defaults of RedisOptions.
const (
	DefaultCacheTTL      = 30 * time.Second
	DefaultLookupTimeout = 250 * time.Millisecond
)

// Reconnection backoff of the subscription, and how long it may stay
// silent before it is pinged (and, if the ping is not answered within the
// same time, dropped and made again).
var (
	minBackoff     = 50 * time.Millisecond
	maxBackoff     = 2 * time.Second
	healthInterval = 3 * time.Second
	// closeCacheDelay: the cache is closed this long after the store, so
	// that a request that loaded the store just before Close never meets a
	// closed ristretto cache mid-call.
	closeCacheDelay = 5 * time.Second
)

// RedisStore is the fleet key store (SPEC section 5): records in Redis, a
// ristretto cache in front, and a subscription to the announcements that
// evicts changed records on every instance within milliseconds.
//
// A lookup reads the cache (no lock, no allocation); on a miss, one Redis
// round trip per id at a time (singleflight), bounded by LookupTimeout,
// fills it. While Redis is unreachable, cached entries keep answering until
// they expire and every other lookup returns an error wrapping
// ErrUnavailable (never "no such key", which could be cached or allowed).
type RedisStore struct {
	client  *redis.Client
	cache   *keyCache
	timeout time.Duration
	name    string // the URL without its password
	group   singleflight.Group
	c       CacheCounters
	logger  atomic.Pointer[zap.Logger]

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed atomic.Bool
	once   sync.Once

	// The client-certificate denylist: loaded whole (HGETALL) by
	// denylistLoop at start, on every (re)subscription, on every
	// {"denylist":…} announcement and every cache TTL; while Redis cannot
	// be read, the last loaded one stays in force.
	denied      atomic.Pointer[Denylist]
	denyKick    chan struct{}
	denyEvery   time.Duration
	denyLoads   atomic.Int64 // successful denylist loads
	lastDenyLog atomic.Int64 // unix nanos of the last logged load failure
	denyFailing atomic.Bool

	subscribed    atomic.Bool
	subscriptions atomic.Int64 // successful (re)subscriptions
	fetches       atomic.Int64 // Redis round trips for lookups
	announcements atomic.Int64 // announcements applied
	lastErrLog    atomic.Int64 // unix nanos of the last logged lookup error

	hooks storeHooks
}

// OpenRedisStore checks the URL, creates the cache and starts the
// subscription. It does not wait for Redis: a store whose Redis is down
// starts, answers errors (503) for what it has not cached, and recovers by
// itself when Redis is back.
func OpenRedisStore(o RedisOptions) (*RedisStore, error) {
	opts, err := ParseRedisURL(o.URL)
	if err != nil {
		return nil, err
	}
	if o.CacheTTL <= 0 {
		o.CacheTTL = DefaultCacheTTL
	}
	if o.LookupTimeout <= 0 {
		o.LookupTimeout = DefaultLookupTimeout
	}
	cache, err := newKeyCache(o.CacheTTL, o.CacheMaxCost)
	if err != nil {
		return nil, err
	}
	for _, c := range []*Counter{&o.Counters.Hit, &o.Counters.Miss, &o.Counters.NegativeHit, &o.Counters.Error} {
		if *c == nil {
			*c = nopCounter{}
		}
	}
	s := &RedisStore{
		client:  newRedisClient(opts, o.LookupTimeout),
		cache:   cache,
		timeout: o.LookupTimeout,
		name:    RedactURL(o.URL),
		c:       o.Counters,
		hooks:   o.hooks,

		denyKick:  make(chan struct{}, 1),
		denyEvery: o.CacheTTL,
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	s.logger.Store(o.Logger)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Add(2)
	go s.subscribeLoop()
	go s.denylistLoop()
	return s, nil
}

// SetLogger replaces the logger (the latest configuration's).
func (s *RedisStore) SetLogger(l *zap.Logger) {
	if l != nil {
		s.logger.Store(l)
	}
}

// String names the store (password redacted).
func (s *RedisStore) String() string { return s.name }

// Subscribed reports whether the announcements subscription is up.
func (s *RedisStore) Subscribed() bool { return s.subscribed.Load() }

// Close stops the subscription and closes the connections; lookups then
// return errors. It is idempotent.
func (s *RedisStore) Close() error {
	s.once.Do(func() {
		s.closed.Store(true)
		s.cache.clear() // nothing cached is served any more
		s.cancel()
		s.wg.Wait()
		_ = s.client.Close()
		time.AfterFunc(closeCacheDelay, s.cache.close)
	})
	return nil
}

// Denylist implements DenylistSource: the last denylist loaded from Redis
// (nil until the first load succeeds).
func (s *RedisStore) Denylist() *Denylist { return s.denied.Load() }

// ClearCache forgets every cached lookup, as a resubscription does.
func (s *RedisStore) ClearCache() { s.cache.clear() }

var errClosed = fmt.Errorf("%w: the store is closed", ErrUnavailable)

// Lookup implements Store.
func (s *RedisStore) Lookup(ctx context.Context, id string) (*Key, error) {
	if e, ok := s.cache.getKey(id); ok {
		if e.key != nil {
			s.c.Hit.Inc()
		} else {
			s.c.NegativeHit.Inc()
		}
		return e.key, nil
	}
	k, err := s.fill(ctx, id)
	if err != nil {
		s.c.Error.Inc()
		return nil, err
	}
	s.c.Miss.Inc()
	return k, nil
}

// LookupPrincipal implements Store: for each pin of the leaf, strongest
// first, the id filed under it (scopegate:cert:<pin-type>:<value>) and then
// that record, which must be a principal whose whole binding (issuer pin
// included) matches the chain. One principal per pin.
func (s *RedisStore) LookupPrincipal(ctx context.Context, chain []*x509.Certificate) (*Key, error) {
	if len(chain) == 0 {
		return nil, nil
	}
	// Several round trips may be needed (a pin, then its record, for each
	// pin): together they wait at most one lookup timeout.
	var cancel context.CancelFunc
	defer func() {
		if cancel != nil {
			cancel()
		}
	}()
	bounded := func() context.Context {
		if cancel == nil {
			ctx, cancel = context.WithTimeout(ctx, s.timeout)
		}
		return ctx
	}
	fetched := false
	for _, pin := range PrincipalPins(chain[0]) {
		pk := PinKey(pin)
		var id string
		if e, ok := s.cache.getPin(pk); ok {
			id = e.target
		} else {
			var err error
			if id, err = s.fillPin(bounded(), pk); err != nil {
				s.c.Error.Inc()
				return nil, err
			}
			fetched = true
		}
		if id == "" {
			continue
		}
		k, hit, err := s.lookupQuiet(bounded, id)
		if err != nil {
			s.c.Error.Inc()
			return nil, err
		}
		fetched = fetched || !hit
		if k != nil && k.IsPrincipal() && k.binding.Matches(chain) {
			if fetched {
				s.c.Miss.Inc()
			} else {
				s.c.Hit.Inc()
			}
			return k, nil
		}
	}
	if fetched {
		s.c.Miss.Inc()
	} else {
		s.c.NegativeHit.Inc()
	}
	return nil, nil
}

// lookupQuiet is Lookup without counting; hit reports a cache hit. The
// context is made only if Redis must be asked.
func (s *RedisStore) lookupQuiet(ctx func() context.Context, id string) (k *Key, hit bool, err error) {
	if e, ok := s.cache.getKey(id); ok {
		return e.key, true, nil
	}
	k, err = s.fill(ctx(), id)
	return k, false, err
}

// fetched is what one Redis round trip found, and the ticket taken before
// it was sent.
type fetched struct {
	key    *Key   // fill: the record, nil if none
	target string // fillPin: the id filed under the pin, "" if none
	t      fillTicket
}

// maxJoins bounds how often a lookup joins a round trip that turns out to
// be older than its own view of the cache (see fill).
const maxJoins = 3

// fill reads one id from Redis, at most one round trip per id at a time:
// concurrent lookups of the same id share it. A caller waits at most until
// its own context ends.
//
// A round trip that started before an announcement (or a clear) that this
// caller had already seen is not good enough for it: its result may be the
// version that was just revoked. The caller then waits for a round trip
// that started after its own view.
func (s *RedisStore) fill(ctx context.Context, id string) (*Key, error) {
	mine := s.cache.ticket(id)
	for range maxJoins {
		if s.closed.Load() {
			return nil, errClosed
		}
		ch := s.group.DoChan(id, func() (any, error) { return s.fetch(id) })
		select {
		case r := <-ch:
			if r.Err != nil {
				return nil, r.Err
			}
			f := r.Val.(*fetched)
			if f.t.gen >= mine.gen && f.t.epoch >= mine.epoch {
				return f.key, nil
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())
		}
	}
	return nil, fmt.Errorf("%w: %s changed during every lookup", ErrUnavailable, id)
}

// fetch is one Redis round trip for a record, then the cache insert.
func (s *RedisStore) fetch(id string) (*fetched, error) {
	ticket := s.cache.ticket(id) // before the read: an announcement or a clear during it voids the result
	ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
	defer cancel()
	s.fetches.Add(1)
	data, err := s.client.HGet(ctx, RedisRecordKey(id), redisField).Bytes()
	var k *Key
	var version int64
	switch {
	case errors.Is(err, redis.Nil):
		// No such id: cached as a negative entry (version 0).
	case err != nil:
		s.logLookupError(id, err)
		return nil, fmt.Errorf("%w: redis %s: %v", ErrUnavailable, s.name, err)
	default:
		var rec *Record
		if rec, k, err = decodeStored(id, data); err != nil {
			// A record this instance cannot use: refuse (503) and say
			// why, rather than treat the key as unknown.
			s.logLookupError(id, err)
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		version = rec.Version
	}
	if s.hooks.fetched != nil {
		s.hooks.fetched(id)
	}
	s.cache.putKey(id, k, version, ticket, int64(len(data)))
	return &fetched{key: k, t: ticket}, nil
}

// fillPin reads the id filed under a pin (singleflight per pin, with the
// same freshness rule as fill, on the pin epoch).
func (s *RedisStore) fillPin(ctx context.Context, pk string) (string, error) {
	mine := s.cache.pinEpoch.Load()
	for range maxJoins {
		if s.closed.Load() {
			return "", errClosed
		}
		ch := s.group.DoChan(pk, func() (any, error) { return s.fetchPin(pk) })
		select {
		case r := <-ch:
			if r.Err != nil {
				return "", r.Err
			}
			f := r.Val.(*fetched)
			if f.t.epoch >= mine {
				return f.target, nil
			}
		case <-ctx.Done():
			return "", fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())
		}
	}
	return "", fmt.Errorf("%w: %s changed during every lookup", ErrUnavailable, pk)
}

// fetchPin is one Redis round trip for a pin, then the cache insert.
func (s *RedisStore) fetchPin(pk string) (*fetched, error) {
	epoch := s.cache.pinEpoch.Load()
	ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
	defer cancel()
	s.fetches.Add(1)
	id, err := s.client.Get(ctx, RedisCertPrefix+pk).Result()
	switch {
	case errors.Is(err, redis.Nil):
		id = ""
	case err != nil:
		s.logLookupError(pk, err)
		return nil, fmt.Errorf("%w: redis %s: %v", ErrUnavailable, s.name, err)
	case !ValidID(id):
		s.logLookupError(pk, fmt.Errorf("%s%s holds %q, not a key id", RedisCertPrefix, pk, id))
		id = "" // an index entry that names no valid id matches nothing
	}
	s.cache.putPin(pk, id, epoch)
	return &fetched{target: id, t: fillTicket{epoch: epoch}}, nil
}

// logLookupError logs a failed lookup at ERROR, at most once a second.
func (s *RedisStore) logLookupError(what string, err error) {
	now := time.Now().UnixNano()
	last := s.lastErrLog.Load()
	if now-last < int64(time.Second) || !s.lastErrLog.CompareAndSwap(last, now) {
		return
	}
	s.logger.Load().Error("key store lookup failed; uncached keys get 503 store_unavailable (logged at most once a second)",
		zap.String("redis", s.name), zap.String("lookup", what), zap.Error(err))
}

// subscribeLoop keeps the subscription to the announcements up, with
// exponential backoff (and jitter) between attempts, until Close.
func (s *RedisStore) subscribeLoop() {
	defer s.wg.Done()
	backoff := minBackoff
	everUp := false
	for attempt := 1; s.ctx.Err() == nil; attempt++ {
		up, err := s.subscribeOnce()
		s.subscribed.Store(false)
		if s.ctx.Err() != nil {
			return
		}
		log := s.logger.Load()
		switch {
		case up:
			everUp = true
			backoff = minBackoff
			log.Error("lost the key announcements subscription; reconnecting. Cached keys keep working until they expire; the cache is cleared on reconnect",
				zap.String("redis", s.name), zap.Error(err))
		case attempt == 1 && !everUp:
			log.Error("cannot subscribe to the key announcements; retrying with backoff. Keys are looked up in Redis as usual; uncached ones get 503 while it is unreachable",
				zap.String("redis", s.name), zap.Error(err))
		default:
			log.Debug("cannot subscribe to the key announcements; retrying",
				zap.String("redis", s.name), zap.Duration("backoff", backoff), zap.Error(err))
		}
		d := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(d):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// subscribeOnce subscribes, clears the cache on every subscription
// confirmation, and applies announcements until the connection fails. up
// reports whether it had subscribed.
func (s *RedisStore) subscribeOnce() (up bool, err error) {
	ps := s.client.Subscribe(s.ctx)
	// A blocked receive does not watch the context: closing the
	// connection ends it.
	stop := context.AfterFunc(s.ctx, func() { _ = ps.Close() })
	defer func() {
		stop()
		_ = ps.Close()
	}()
	ctx, cancel := context.WithTimeout(s.ctx, healthInterval)
	err = ps.Subscribe(ctx, RedisChannel)
	cancel()
	if err != nil {
		return false, err
	}
	silent := 0
	for {
		msg, err := ps.ReceiveTimeout(s.ctx, healthInterval)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && up && silent == 0 && s.ctx.Err() == nil {
				// Quiet for a while: make sure the connection is alive.
				silent++
				pctx, pcancel := context.WithTimeout(s.ctx, healthInterval)
				err = ps.Ping(pctx)
				pcancel()
				if err == nil {
					continue
				}
			}
			return up, err
		}
		silent = 0
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" && m.Channel == RedisChannel {
				// Announcements may have been missed while not
				// subscribed: forget everything cached.
				s.cache.clear()
				s.kickDenylist()
				s.subscriptions.Add(1)
				s.subscribed.Store(true)
				if !up {
					s.logger.Load().Info("subscribed to key announcements", zap.String("redis", s.name), zap.String("channel", RedisChannel))
				}
				up = true
			}
		case *redis.Message:
			s.announced(m.Payload)
		}
	}
}

// announced applies one announcement. It can only evict: the record is
// always read from Redis, never from a message. A message that is not a
// valid announcement clears the whole cache.
func (s *RedisStore) announced(payload string) {
	var a Announcement
	err := json.Unmarshal([]byte(payload), &a)
	if err == nil && a.ID == "" && a.Denylist > 0 {
		// The denylist changed: read it again (never from the message).
		// Instances that predate the denylist take this message as
		// malformed and clear their key cache: safe, and only during an
		// upgrade.
		s.kickDenylist()
		return
	}
	if err != nil || !ValidID(a.ID) {
		s.cache.clear()
		s.logger.Load().Warn("invalid message on the key announcements channel; cleared the whole key cache",
			zap.String("channel", RedisChannel), zap.Int("bytes", len(payload)))
		return
	}
	s.cache.evict(a.ID, a.Version)
	s.announcements.Add(1)
	if s.hooks.announced != nil {
		s.hooks.announced(a)
	}
}

// denylistTimeout bounds one load of the denylist (one HGETALL).
var denylistTimeout = 2 * time.Second

// kickDenylist asks denylistLoop to load the denylist again. Kicks that
// arrive during a load are coalesced into one more load after it, so a
// change announced while a load was in flight is never missed.
func (s *RedisStore) kickDenylist() {
	select {
	case s.denyKick <- struct{}{}:
	default:
	}
}

// denylistLoop loads the denylist at once, then on every kick and every
// cache TTL (which bounds how long a change whose announcement was lost
// stays unseen, as for keys), until Close.
func (s *RedisStore) denylistLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.denyEvery)
	defer t.Stop()
	for {
		s.loadDenylist()
		select {
		case <-s.ctx.Done():
			return
		case <-s.denyKick:
		case <-t.C:
		}
	}
}

// loadDenylist reads the whole denylist and swaps it in. On failure the
// last loaded denylist stays in force and the failure is logged at ERROR
// (at most once every 10 seconds while it lasts).
func (s *RedisStore) loadDenylist() {
	ctx, cancel := context.WithTimeout(s.ctx, denylistTimeout)
	defer cancel()
	d, problems, err := loadDenylist(ctx, s.client)
	log := s.logger.Load()
	if err != nil {
		if s.ctx.Err() != nil {
			return
		}
		s.denyFailing.Store(true)
		now := time.Now().UnixNano()
		if last := s.lastDenyLog.Load(); now-last >= int64(10*time.Second) && s.lastDenyLog.CompareAndSwap(last, now) {
			kept := -1
			if cur := s.denied.Load(); cur != nil {
				kept = cur.Len()
			}
			log.Error("cannot load the client certificate denylist; keeping the last one loaded (-1: none yet). Logged at most every 10s",
				zap.String("redis", s.name), zap.Int("kept_entries", kept), zap.Error(err))
		}
		return
	}
	// A version below the one in force means Redis went back in time (a
	// failover to a lagging replica, a restore): the older list may lack
	// entries added since. Keep the newer one — over-denying fails closed —
	// and say how to resolve it.
	if cur := s.denied.Load(); cur != nil && d.Version < cur.Version {
		s.denyFailing.Store(true)
		now := time.Now().UnixNano()
		if last := s.lastDenyLog.Load(); now-last >= int64(10*time.Second) && s.lastDenyLog.CompareAndSwap(last, now) {
			log.Error("the client certificate denylist in Redis is older than the one in force; keeping the newer one (re-apply the missing deny-cert changes, or restart Caddy to accept the stored list)",
				zap.String("redis", s.name), zap.Int64("stored_version", d.Version), zap.Int64("version_in_force", cur.Version),
				zap.Int("stored_entries", d.Len()), zap.Int("entries_in_force", cur.Len()))
		}
		return
	}
	prev := s.denied.Swap(d)
	s.denyLoads.Add(1)
	if s.denyFailing.Swap(false) || prev == nil || prev.Version != d.Version {
		// Logged when something changed, not on every periodic load.
		for _, p := range problems {
			log.Error("invalid client certificate denylist entry", zap.String("redis", s.name), zap.Error(p))
		}
		log.Info("client certificate denylist loaded", zap.String("redis", s.name),
			zap.Int("entries", d.Len()), zap.Int64("version", d.Version))
	}
}
