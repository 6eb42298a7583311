package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/scopegate/scopegate/bench/internal/childproc"
)

// faultState is what the faults did, for judging requests: the reload
// windows, when the extra rule appeared, the Redis outage. Guarded by mu.
type faultState struct {
	mu        sync.RWMutex
	reloads   []window // [reload started, returned + reloadSettle]
	reloadErr []string
	ruleStart time.Time // generation 2's reload started
	ruleReady time.Time // … returned, + reloadSettle
	killAt    time.Time
	readyAt   time.Time // Redis answered PING again
	outageErr string
	events    []string

	// redisOps serialises the Redis outage with CLI changes to the Redis
	// store: no change is in flight when Redis is killed, and none is made
	// until recoverGrace after it is back (Caddy's subscription may still
	// be reconnecting then: an announcement sent before it is back would be
	// lost, which the product bounds by cache_ttl, not by the settle window
	// this test uses).
	redisOps sync.Mutex
}

type window struct{ from, to time.Time }

// overlaps reports whether [start, end] meets the window (an open window,
// to == zero, lasts for ever).
func (w window) overlaps(start, end time.Time) bool {
	return !end.Before(w.from) && (w.to.IsZero() || !start.After(w.to))
}

func (e *env) event(format string, a ...any) { e.eventAt(time.Now(), format, a...) }

// eventAt records (and prints) what a fault did at t.
func (e *env) eventAt(t time.Time, format string, a ...any) {
	msg := fmt.Sprintf("t=%5.1fs %s", t.Sub(e.start).Seconds(), fmt.Sprintf(format, a...))
	e.faults.mu.Lock()
	e.faults.events = append(e.faults.events, msg)
	e.faults.mu.Unlock()
	logf("%s", msg)
}

// outageWindow is [kill, ready + recoverGrace], open while Redis is down.
func (e *env) outageWindow() (window, bool) {
	e.faults.mu.RLock()
	defer e.faults.mu.RUnlock()
	if e.faults.killAt.IsZero() {
		return window{}, false
	}
	w := window{from: e.faults.killAt}
	if !e.faults.readyAt.IsZero() {
		w.to = e.faults.readyAt.Add(e.cfg.recoverGrace)
	}
	return w, true
}

func (e *env) inOutage(start, end time.Time) bool {
	w, ok := e.outageWindow()
	return ok && w.overlaps(start, end)
}

func (e *env) faultKillAt() time.Time {
	e.faults.mu.RLock()
	defer e.faults.mu.RUnlock()
	return e.faults.killAt
}

// faultAt names the fault a request overlapped ("reload", "outage" or "").
func (e *env) faultAt(start, end time.Time) string {
	e.faults.mu.RLock()
	for _, w := range e.faults.reloads {
		if w.overlaps(start, end) {
			e.faults.mu.RUnlock()
			return "reload"
		}
	}
	e.faults.mu.RUnlock()
	if e.inOutage(start, end) {
		return "outage"
	}
	return ""
}

// ruleExpected: GET /v1/extra* has no rule before generation 2 (403
// no_matching_rule), one after its reload settled (allow).
func (e *env) ruleExpected(start, end time.Time) expKind {
	e.faults.mu.RLock()
	defer e.faults.mu.RUnlock()
	switch {
	case e.faults.ruleStart.IsZero() || end.Before(e.faults.ruleStart):
		return expDeny
	case !e.faults.ruleReady.IsZero() && start.After(e.faults.ruleReady):
		return expAllow
	default:
		return expEither
	}
}

// reloader runs `caddy reload --force` every reloadEvery: generation k's
// config differs from k-1's by a comment, except that generation 2 adds
// the /v1/extra* rule (kept from then on).
func (e *env) reloader(ctx context.Context, until time.Time) {
	for gen := 1; ; gen++ {
		at := e.start.Add(time.Duration(gen) * e.cfg.reloadEvery)
		if at.After(until.Add(-time.Second)) {
			return
		}
		if !sleepUntil(ctx, at) {
			return
		}
		cf, err := e.writeConfig(gen)
		if err == nil {
			from := time.Now()
			e.faults.mu.Lock()
			if gen == 2 {
				e.faults.ruleStart = from
			}
			e.faults.reloads = append(e.faults.reloads, window{from: from}) // open until it returns
			e.faults.mu.Unlock()
			_, err = childproc.Run(ctx, 60*time.Second, e.dir, e.caddyBin, "reload", "--config", cf, "--adapter", "caddyfile",
				"--address", fmt.Sprintf("127.0.0.1:%d", e.cfg.adminPort), "--force")
			done := time.Now()
			e.faults.mu.Lock()
			e.faults.reloads[len(e.faults.reloads)-1].to = done.Add(e.cfg.reloadSettle)
			if gen == 2 {
				e.faults.ruleReady = done.Add(e.cfg.reloadSettle)
			}
			e.faults.mu.Unlock()
			what := "equivalent config (comment changed)"
			if gen == 2 {
				what = "config adding rule GET /v1/extra*"
			}
			if err == nil {
				e.eventAt(from, "caddy reload generation %d: %s, took %.0f ms", gen, what, done.Sub(from).Seconds()*1000)
			}
		}
		if err != nil && ctx.Err() == nil {
			e.faults.mu.Lock()
			e.faults.reloadErr = append(e.faults.reloadErr, fmt.Sprintf("generation %d: %v", gen, err))
			e.faults.mu.Unlock()
			e.event("caddy reload generation %d FAILED: %v", gen, err)
		}
	}
}

// outageFault SIGKILLs Redis at outageAt and restarts it outageFor later.
// It always restarts Redis, even when the load ended meanwhile (only an
// interrupt, ctx, stops it).
func (e *env) outageFault(ctx, loadCtx context.Context) {
	if !sleepUntil(loadCtx, e.start.Add(e.cfg.outageAt)) {
		return
	}
	e.faults.redisOps.Lock()
	defer e.faults.redisOps.Unlock()
	e.faults.mu.Lock()
	e.faults.killAt = time.Now()
	e.faults.mu.Unlock()
	e.redis.kill()
	e.event("redis-server SIGKILLed (uncached keys on the Redis site now get 503)")
	if !sleepUntil(ctx, time.Now().Add(e.cfg.outageFor)) {
		return
	}
	if err := e.redis.restart(); err != nil {
		e.faults.mu.Lock()
		e.faults.outageErr = err.Error()
		e.faults.mu.Unlock()
		e.event("redis-server restart FAILED: %v", err)
		return
	}
	e.faults.mu.Lock()
	e.faults.readyAt = time.Now()
	e.faults.mu.Unlock()
	e.event("redis-server restarted from its append-only file, answers PING (503 tolerated for %v more)", e.cfg.recoverGrace)
	sleepUntil(ctx, time.Now().Add(e.cfg.recoverGrace))
}

func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-tm.C:
		return true
	}
}

// churnKey is a key made during the run. Its times are guarded by the
// pool's mutex.
type churnKey struct {
	key, id     string
	pii         bool
	created     time.Time // `new` (or `rotate`) returned
	revokeStart time.Time // `revoke` (or `rotate`, for the old secret) started
	revokeDone  time.Time // … returned
	broken      bool      // a CLI change failed: its state is unknown, never used
}

// churnPool holds a site's churned keys: live ones and, bounded, dead ones.
type churnPool struct {
	mu                            sync.Mutex
	live, dead                    []*churnKey
	made, revoked, rotated, fails int
	errs                          []string
}

type pickMode int

const (
	pickActive     pickMode = iota // settled after `new`, no revocation started
	pickRevoked                    // settled after `revoke`
	pickTransition                 // inside a settle window
)

func (cp *churnPool) pick(rng *rand.Rand, mode pickMode, now time.Time, settle time.Duration) *churnKey {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	var cands []*churnKey
	for _, list := range [][]*churnKey{cp.live, cp.dead} {
		for _, k := range list {
			if k.broken {
				continue
			}
			settledIn := now.After(k.created.Add(settle))
			var ok bool
			switch mode {
			case pickActive:
				ok = settledIn && k.revokeStart.IsZero()
			case pickRevoked:
				ok = !k.revokeDone.IsZero() && now.After(k.revokeDone.Add(settle))
			case pickTransition:
				ok = !settledIn || (!k.revokeStart.IsZero() && (k.revokeDone.IsZero() || !now.After(k.revokeDone.Add(settle))))
			}
			if ok {
				cands = append(cands, k)
			}
		}
	}
	if len(cands) == 0 {
		return nil
	}
	return cands[rng.IntN(len(cands))]
}

// expectAt is what a request with k during [start, end] must get: allowed
// once settled in and until a revocation starts; refused from settle after
// the revocation returned; either in between.
func (cp *churnPool) expectAt(k *churnKey, start, end time.Time, settle time.Duration) expKind {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	switch {
	case start.Before(k.created.Add(settle)):
		return expEither
	case k.revokeStart.IsZero() || end.Before(k.revokeStart):
		return expAllow
	case !k.revokeDone.IsZero() && start.After(k.revokeDone.Add(settle)):
		return expDeny
	default:
		return expEither
	}
}

// churner changes both stores every churnEvery through the CLI binary:
// new keys (half of them with --pii), revocations and rotations (grace 0),
// keeping 2–6 live churned keys per store.
func (e *env) churner(ctx context.Context) {
	t := time.NewTicker(e.cfg.churnEvery)
	defer t.Stop()
	step := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		step++
		for _, s := range e.sites {
			if s.redis {
				if !e.faults.redisOps.TryLock() {
					continue // Redis is down or recovering
				}
				e.churnOnce(ctx, s, step)
				e.faults.redisOps.Unlock()
			} else {
				e.churnOnce(ctx, s, step)
			}
		}
	}
}

func (e *env) churnOnce(ctx context.Context, s *site, step int) {
	cp := &s.churn
	now := time.Now()
	cp.mu.Lock()
	var oldest *churnKey
	settledLive := 0
	for _, k := range cp.live {
		if !k.broken && now.After(k.created.Add(s.settle)) {
			settledLive++
			if oldest == nil {
				oldest = k
			}
		}
	}
	nLive := len(cp.live)
	cp.mu.Unlock()

	action := [...]string{"new", "new", "revoke", "rotate"}[step%4]
	switch {
	case nLive < 2 || oldest == nil:
		action = "new"
	case nLive >= 6:
		action = "revoke"
	}
	fail := func(err error) {
		if ctx.Err() != nil {
			return
		}
		cp.mu.Lock()
		cp.fails++
		if len(cp.errs) < 5 {
			cp.errs = append(cp.errs, err.Error())
		}
		cp.mu.Unlock()
		e.event("%s store: scoped-key %s FAILED: %v", s.name, action, err)
	}
	switch action {
	case "new":
		pii := step%2 == 1
		args := []string{"--name", fmt.Sprintf("soak churn %d", step), "--scope", "read_only", "--account", "acme-us"}
		if pii {
			args = append(args, "--pii")
		}
		key, err := e.scopedKey(ctx, s, "new", args...)
		if err != nil {
			fail(err)
			return
		}
		cp.mu.Lock()
		cp.live = append(cp.live, &churnKey{key: key, id: keyID(key), pii: pii, created: time.Now()})
		cp.made++
		cp.mu.Unlock()
	case "revoke", "rotate":
		cp.mu.Lock()
		oldest.revokeStart = time.Now()
		cp.mu.Unlock()
		out, err := e.scopedKey(ctx, s, action, oldest.id)
		done := time.Now()
		if err != nil {
			cp.mu.Lock()
			oldest.broken = true
			cp.mu.Unlock()
			fail(err)
			return
		}
		cp.mu.Lock()
		defer cp.mu.Unlock()
		oldest.revokeDone = done
		for i, k := range cp.live {
			if k == oldest {
				cp.live = append(cp.live[:i], cp.live[i+1:]...)
				break
			}
		}
		cp.dead = append(cp.dead, oldest)
		if len(cp.dead) > 32 {
			cp.dead = cp.dead[1:]
		}
		if action == "rotate" {
			cp.live = append(cp.live, &churnKey{key: out, id: oldest.id, pii: oldest.pii, created: done})
			cp.rotated++
		} else {
			cp.revoked++
		}
	}
}
