package keyring

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
)

// keyCache is the cache in front of the Redis store (SPEC section 5).
//
// Storage is a ristretto cache: cost-bounded (estimated bytes), TinyLFU
// admission so that a flood of random ids cannot push out the keys in use,
// entries kept for the cache TTL. It holds two kinds of entries, whose
// cache keys cannot collide:
//
//   - by key id (16 base32 characters): the compiled key, or a negative
//     entry saying that the id does not exist;
//   - by principal pin (PinKey, "<pin-type>:<value>"): the id filed under
//     the pin, or a negative entry.
//
// In front of ristretto, for key ids only, a small direct-mapped table of
// the entries last returned: a warm lookup is a hash, an atomic load and a
// few comparisons, with no lock, no clock read and no allocation
// (ristretto's Get reads the clock and, every 64 reads, allocates a batch
// for its frequency sketch). Entries are immutable; whether one may still
// be used is decided on every read, wherever it was found:
//
//   - epoch: clear (on every (re)subscription, when announcements may have
//     been lost) bumps it, and every older entry is a miss;
//   - stripe generation: an announcement {id, version} bumps the
//     generation of the id's stripe (1/256 of the ids), so an entry read
//     from Redis before the announcement is a miss wherever it is (table,
//     ristretto, or a fill in flight); pin entries use pinEpoch, which
//     every announcement bumps (a pin can move to a new principal);
//   - expiry, against a clock updated every clockTick, so entries live at
//     most the TTL.
//
// An announcement also remembers the highest version announced per id for
// one TTL: a fill that read an older version is not inserted (SPEC:
// a racing fill never re-inserts an older version), checked under the
// stripe's lock, which the eviction takes too.
type keyCache struct {
	c        *ristretto.Cache[string, *cacheEntry]
	ttl      time.Duration
	seed     maphash.Seed
	epoch    atomic.Uint64 // id entries of another epoch are misses
	pinEpoch atomic.Uint64 // pin entries of another pin epoch are misses
	clock    atomic.Int64  // unix nanoseconds, at most clockTick behind
	front    [frontSlots]atomic.Pointer[cacheEntry]
	stripes  [cacheStripes]cacheStripe
	now      func() time.Time // for marks; tests move it
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once
}

// cacheEntry is immutable once made.
type cacheEntry struct {
	name    string // the cache key, compared on every hit
	key     *Key   // id entries: nil means "no such id"
	target  string // pin entries: the id filed under the pin; "" means none
	version int64
	epoch   uint64 // epoch (id entries) or pinEpoch (pin entries)
	gen     uint64 // the stripe's generation (id entries)
	expires int64  // unix nanoseconds
}

const (
	cacheStripes = 256
	frontSlots   = 1024
	// maxEvictMarks bounds the versions remembered per stripe (so 256 ×
	// 256 ids in all). When a stripe is full of live marks, it refuses
	// every fill for one TTL instead: a flood of announcements (forged,
	// say) can cost round trips, never a stale entry or unbounded memory.
	maxEvictMarks = 256
	// Ristretto sizing: MaxCost is in estimated bytes.
	cacheMaxCost     = 32 << 20
	cacheNumCounters = 1 << 20
	entryOverhead    = 160
	clockTick        = 10 * time.Millisecond
)

type cacheStripe struct {
	gen         atomic.Uint64
	mu          sync.Mutex
	evicted     map[string]evictMark
	closedUntil time.Time
}

type evictMark struct {
	version int64
	until   time.Time
}

// fillTicket is what a fill notes before it reads Redis.
type fillTicket struct {
	epoch, gen uint64
}

func newKeyCache(ttl time.Duration, maxCost int64) (*keyCache, error) {
	if maxCost <= 0 {
		maxCost = cacheMaxCost
	}
	c, err := ristretto.NewCache(&ristretto.Config[string, *cacheEntry]{
		NumCounters: cacheNumCounters,
		MaxCost:     maxCost,
		BufferItems: 64,
		// The cost given to Set is the whole estimate.
		IgnoreInternalCost: true,
	})
	if err != nil {
		return nil, err
	}
	kc := &keyCache{c: c, ttl: ttl, seed: maphash.MakeSeed(), now: time.Now, stop: make(chan struct{}), done: make(chan struct{})}
	for i := range kc.stripes {
		kc.stripes[i].evicted = map[string]evictMark{}
	}
	kc.clock.Store(time.Now().UnixNano())
	go kc.tick()
	return kc, nil
}

func (kc *keyCache) tick() {
	defer close(kc.done)
	t := time.NewTicker(clockTick)
	defer t.Stop()
	for {
		select {
		case <-kc.stop:
			return
		case <-t.C:
			kc.clock.Store(time.Now().UnixNano())
		}
	}
}

func (kc *keyCache) slots(id string) (*cacheStripe, *atomic.Pointer[cacheEntry]) {
	h := maphash.String(kc.seed, id)
	return &kc.stripes[h%cacheStripes], &kc.front[(h>>8)%frontSlots]
}

func (kc *keyCache) usable(e *cacheEntry, id string, st *cacheStripe) bool {
	return e.name == id && e.epoch == kc.epoch.Load() && e.gen == st.gen.Load() && kc.clock.Load() < e.expires
}

// getKey is the hot path: no lock, no clock read, no allocation on a hit
// in the front table.
func (kc *keyCache) getKey(id string) (*cacheEntry, bool) {
	st, slot := kc.slots(id)
	if e := slot.Load(); e != nil && kc.usable(e, id, st) {
		return e, true
	}
	e, ok := kc.c.Get(id)
	if !ok || !kc.usable(e, id, st) {
		return nil, false
	}
	slot.Store(e)
	return e, true
}

// ticket is taken before a fill reads Redis.
func (kc *keyCache) ticket(id string) fillTicket {
	st, _ := kc.slots(id)
	return fillTicket{epoch: kc.epoch.Load(), gen: st.gen.Load()}
}

// putKey caches what a fill read from Redis: k (nil for "no such id") at
// version (0 for none), under the ticket taken before the read. It is
// refused when the id was announced with a newer version since, when the
// id's stripe or the whole cache was invalidated since the ticket, or
// while the stripe is closed. Returns whether the entry was offered to
// ristretto (which may still decline it).
func (kc *keyCache) putKey(id string, k *Key, version int64, t fillTicket, cost int64) bool {
	st, _ := kc.slots(id)
	st.mu.Lock()
	defer st.mu.Unlock()
	now := kc.now()
	if now.Before(st.closedUntil) {
		return false
	}
	if m, ok := st.evicted[id]; ok && now.Before(m.until) && version < m.version {
		return false
	}
	if t.gen != st.gen.Load() || t.epoch != kc.epoch.Load() {
		return false
	}
	e := &cacheEntry{name: id, key: k, version: version, epoch: t.epoch, gen: t.gen, expires: kc.expiry()}
	if !kc.c.SetWithTTL(id, e, entryOverhead+cost, kc.ttl) {
		return false
	}
	// A new entry reaches ristretto's map asynchronously: wait, so that the
	// next lookup finds it (one round trip per id per TTL).
	kc.c.Wait()
	return true
}

// expiry is the expiry of an entry made now: one TTL, less one clock tick
// (the clock lags by up to a tick), so no entry is used longer than the TTL.
func (kc *keyCache) expiry() int64 {
	return time.Now().Add(kc.ttl - clockTick).UnixNano()
}

// getPin returns the cached target of a pin.
func (kc *keyCache) getPin(pin string) (*cacheEntry, bool) {
	e, ok := kc.c.Get(pin)
	if !ok || e.name != pin || e.epoch != kc.pinEpoch.Load() || kc.clock.Load() >= e.expires {
		return nil, false
	}
	return e, true
}

// putPin caches the target of a pin ("" for none), read under pinEpoch.
func (kc *keyCache) putPin(pin, target string, pinEpoch uint64) {
	if pinEpoch != kc.pinEpoch.Load() {
		return
	}
	e := &cacheEntry{name: pin, target: target, epoch: pinEpoch, expires: kc.expiry()}
	if kc.c.SetWithTTL(pin, e, entryOverhead+int64(len(pin)), kc.ttl) {
		kc.c.Wait()
	}
}

// evict handles an announcement: invalidate the id's stripe, remember the
// version, drop the entry, and invalidate every pin entry.
func (kc *keyCache) evict(id string, version int64) {
	st, _ := kc.slots(id)
	st.mu.Lock()
	st.gen.Add(1)
	now := kc.now()
	m, ok := st.evicted[id]
	if !ok || !now.Before(m.until) || version > m.version {
		m.version = version
	}
	m.until = now.Add(kc.ttl)
	if !ok && len(st.evicted) >= maxEvictMarks {
		for k, old := range st.evicted {
			if !now.Before(old.until) {
				delete(st.evicted, k)
			}
		}
		if len(st.evicted) >= maxEvictMarks {
			// Every remembered version would expire within one TTL:
			// refusing all fills for one TTL covers them all.
			st.closedUntil = now.Add(kc.ttl)
			clear(st.evicted)
		}
	}
	st.evicted[id] = m
	kc.c.Del(id)
	st.mu.Unlock()
	kc.pinEpoch.Add(1)
}

// clear invalidates every entry (announcements may have been lost).
func (kc *keyCache) clear() {
	kc.epoch.Add(1)
	kc.pinEpoch.Add(1)
}

// marks is the number of remembered versions (tests).
func (kc *keyCache) marks() int {
	n := 0
	for i := range kc.stripes {
		st := &kc.stripes[i]
		st.mu.Lock()
		n += len(st.evicted)
		st.mu.Unlock()
	}
	return n
}

// close stops the clock and ristretto's goroutines.
func (kc *keyCache) close() {
	kc.once.Do(func() {
		close(kc.stop)
		<-kc.done
		kc.c.Close()
	})
}
