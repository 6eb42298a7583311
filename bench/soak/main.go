// Command soak is scopegate's bounded soak and fault test: a real Caddy
// (bench/out/caddy, built from ./cmd/caddy) with two HTTPS sites behind
// scoped_auth and redact, mixed load over mutual TLS for -duration, and
// faults injected while the load runs. Loopback only; it stops by itself.
//
//	bench/soak.sh                   # builds, then DURATION=60s
//	SHORT=1 bench/soak.sh           # 15 s with every fault compressed (CI)
//
// What it sets up, all under -out (bench/out/soak, wiped at start):
//
//   - a CA, a server certificate (localhost, 127.0.0.1) and three client
//     certificates (alpha, beta, gamma) from internal/testpki;
//   - redis-server on a free port, with an append-only file fsynced on every
//     write (--appendonly yes --appendfsync always), so a SIGKILL loses no
//     acknowledged write and the restarted Redis has every record;
//   - the same base keys in a keys file and in Redis, made with the real
//     CLI (`caddy scoped-key new|revoke --keys FILE | --redis URL`);
//   - an upstream on 127.0.0.1 in this process returning JSON with names,
//     emails and phone numbers: small bodies (Content-Length, chunked), and
//     large ones (-big-mib, default 3 MiB) with Content-Length, chunked, and
//     gzip-encoded although the gateway asked for identity;
//   - a Caddyfile with two sites on 127.0.0.1: https://localhost:PORT_BASE
//     (keys_file) and https://localhost:PORT_BASE+1 (redis, cache_ttl 3s),
//     both `client_auth verify_if_given`, the same scoped_auth rules, redact,
//     and reverse_proxy to the upstream; `caddy run` with the admin API on
//     127.0.0.1:ADMIN_PORT.
//
// The load: -workers goroutines (16), each with one keep-alive client per
// client certificate (none, alpha, beta, gamma; even workers HTTP/1.1, odd
// ones HTTP/2), pick a site and a case from a weighted table (cases.go) and
// judge every answer against what the table expects: allowed and masked (no
// PII string left, valid JSON, every record still there), allowed and
// unmasked (byte-for-byte the upstream's body), or denied with an exact
// status and error code. The upstream records which requests reached it, so
// a denial that still reached it counts as a wrong allow.
//
// The faults, while the load runs (schedule in faults.go):
//
//   - `caddy reload --force` every duration/6, alternating equivalent
//     configs; the second reload adds a rule (GET /v1/extra*), which turns
//     403 no_matching_rule into an allow;
//   - key churn every duration/20 (1–3 s) on both stores through the CLI
//     binary: new keys, revocations, rotations. A key is expected to work
//     from settle (keys file 3 s: it is polled every second; Redis 2 s)
//     after `new` returned, and to be refused from settle after `revoke`
//     returned; in between either answer is accepted and counted as "in
//     transition";
//   - Redis SIGKILLed at 40 % of the run, restarted after duration/10
//     (3–6 s). From the kill until recover-grace (3 s) after Redis answers
//     PING again, a request on the Redis site that needs the store may also
//     get 503 store_unavailable; a 2xx for an unknown, revoked or forbidden
//     key is a wrong allow, as always.
//
// Memory: every sample interval (DURATION/12, at most 5 s) it forces two
// GCs in Caddy through the admin API's pprof endpoint
// (/debug/pprof/heap?gc=1), then reads go_memstats_heap_alloc_bytes,
// go_memstats_heap_inuse_bytes and go_goroutines from /metrics and VmRSS
// from /proc/PID/status. At 25 %, 50 % and 75 % of the run and after it,
// the load pauses (a quiet point: nothing in flight, every client and
// upstream connection closed) for a comparable sample. Judged: live heap
// and goroutines over the second half of the run (idle-50% to
// idle-after), growth above 20 % and above a small absolute slack fails
// runs of 30 s or more; everything else is reported (see memory.go).
//
// The clients do what the operators' guidance (bench/README.md, "Reloads
// under load") asks of HTTP clients: every POST carries an Idempotency-Key
// (so Go's transport may replay it like a GET on a kept-alive connection),
// and a request that failed at the connection level before any response
// byte is sent once more on a new connection (RFC 9110 section 9.2.2).
// Retries are counted apart; the retry's answer is judged in full, both
// attempts carry the same X-Soak-Id (the upstream's record covers both),
// and after the load any arrival at the upstream that no answer took is a
// wrong allow if the request had to be denied. With -private-netns
// (soak.sh runs everything under `unshare -n` as root) the program sets
// net.ipv4.tcp_migrate_req=1 in that namespace, so a reload resets no
// queued connection.
//
// Invariants (exit 1 if any fails): zero wrong decisions (status, error
// code or masking different from expected), zero wrong allows, zero PII
// leaks, zero identity problems at the upstream, zero 5xx from the gateway
// outside the Redis outage, zero 503 store_unavailable while Redis was up,
// zero failed requests (no HTTP answer after the retry), during reloads
// too, and no retry needed outside a reload, every reload and CLI change
// succeeded, Caddy stayed up, memory stable. TOLERATE=slow-store (the
// default with SHORT=1) turns 503s with Redis up into a note when
// caddy.log shows as many lookups that hit their deadline; without the
// private namespace, TOLERATE=reload-conn does the same for new
// connections reset during a reload (k3). FAULTS limits the faults
// (reload, churn, redis).
// Exit 2: setup failed; 3: hard deadline (duration + 100 s) hit;
// 130: interrupted. Children (Caddy, Redis, CLI runs) are killed on every
// exit path, and with Pdeathsig if this process dies.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/scopegate/scopegate/bench/internal/childproc"
)

// config is the run's settings: flags, with defaults from the environment
// (bench/soak.sh passes DURATION, SHORT, WORKERS, PORT_BASE, ADMIN_PORT).
type config struct {
	duration  time.Duration
	short     bool
	workers   int
	portBase  int
	adminPort int
	caddyBin  string
	out       string
	bigMiB    int
	seed      uint64

	settleFile  time.Duration // keys file: new/revoke visible after this
	settleRedis time.Duration // Redis: announcements take milliseconds
	cacheTTL    time.Duration // cache_ttl of the Redis site
	// writeIdle is Caddy's servers { timeouts { write_idle } } in the soak's
	// config (0: Caddy's default of 1 minute). Each HTTP/2 stream whose
	// write failed keeps its connection's buffers for this long (a timer
	// Caddy's IdleTimeoutWriter re-arms on a closed x/net stream; see
	// bench/README.md), so memory is sampled only after it has passed.
	writeIdle    time.Duration
	reloadSettle time.Duration // after `caddy reload` returned
	recoverGrace time.Duration // after Redis answers again

	reloadEvery time.Duration
	churnEvery  time.Duration
	sampleEvery time.Duration
	outageAt    time.Duration
	outageFor   time.Duration

	tolerate map[string]bool // failure kinds reported but not failing the run
	notes    []string        // decisions about the settings, for the report

	// privateNet: running in a private network namespace (soak.sh runs the
	// program under `unshare -n` when it can), where this program sets
	// net.ipv4.tcp_migrate_req=1; the host's is never touched.
	privateNet bool
	faults     map[string]bool // which faults run (default all)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

func parseConfig() (*config, error) {
	c := &config{}
	short := envOr("SHORT", "0") == "1"
	defDur := "60s"
	if short {
		defDur = "15s"
	}
	dur := flag.String("duration", envOr("DURATION", defDur), "how long the load runs (15s to 10m)")
	flag.BoolVar(&c.short, "short", short, "compressed schedule for CI (default duration 15s)")
	flag.IntVar(&c.workers, "workers", envInt("WORKERS", 16), "concurrent workers")
	flag.IntVar(&c.portBase, "port-base", envInt("PORT_BASE", 9700), "site ports: PORT_BASE (keys file) and PORT_BASE+1 (Redis), on 127.0.0.1")
	flag.IntVar(&c.adminPort, "admin-port", envInt("ADMIN_PORT", 3700), "Caddy admin API port on 127.0.0.1")
	flag.StringVar(&c.caddyBin, "caddy", envOr("CADDY", "bench/out/caddy"), "the scopegate caddy binary")
	flag.StringVar(&c.out, "out", envOr("SOAK_OUT", "bench/out/soak"), "work directory (wiped at start)")
	flag.IntVar(&c.bigMiB, "big-mib", envInt("BIG_MIB", 3), "size of the large response bodies, MiB")
	faults := flag.String("faults", envOr("FAULTS", "reload,churn,redis"), "faults to inject: any of reload, churn, redis (comma-separated), or none")
	defTolerate := ""
	if short {
		// CI machines are the overloaded ones: a Redis lookup may exceed
		// its bound there. Still tolerated only with the log's evidence.
		defTolerate = tolerateSlowStore
	}
	tolerate := flag.String("tolerate", envOr("TOLERATE", defTolerate), "comma-separated failure kinds to report without failing: "+tolerateReloadConn+" (only without -private-netns), "+tolerateSlowStore+" (only with the log's evidence); default "+tolerateSlowStore+" with SHORT=1, none otherwise")
	flag.BoolVar(&c.privateNet, "private-netns", false, "running in a private network namespace (set by soak.sh): set net.ipv4.tcp_migrate_req=1 there")
	seed := flag.Uint64("seed", uint64(time.Now().UnixNano()), "random seed of the load mix")
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "duration" })
	if c.short && !explicit && os.Getenv("DURATION") == "" {
		*dur = "15s"
	}
	d, err := time.ParseDuration(*dur)
	if err != nil {
		return nil, fmt.Errorf("duration: %v", err)
	}
	if d < 15*time.Second || d > 10*time.Minute {
		return nil, fmt.Errorf("duration %v: must be between 15s and 10m (shorter runs cannot play out the key churn)", d)
	}
	if c.workers < 1 || c.workers > 256 {
		return nil, fmt.Errorf("workers %d: must be 1..256", c.workers)
	}
	if c.bigMiB < 1 || c.bigMiB > 64 {
		return nil, fmt.Errorf("big-mib %d: must be 1..64", c.bigMiB)
	}
	c.duration, c.seed = d, *seed
	c.settleFile, c.settleRedis = 3*time.Second, 2*time.Second
	if c.cacheTTL, err = time.ParseDuration(envOr("CACHE_TTL", "3s")); err != nil || c.cacheTTL < 100*time.Millisecond {
		return nil, fmt.Errorf("CACHE_TTL %q: a duration of at least 100ms", os.Getenv("CACHE_TTL"))
	}
	if c.writeIdle, err = time.ParseDuration(envOr("WRITE_IDLE", "5s")); err != nil || c.writeIdle < 0 {
		return nil, fmt.Errorf("WRITE_IDLE %q: a duration (0 for Caddy's default of 1m)", os.Getenv("WRITE_IDLE"))
	}
	c.reloadSettle = 2 * time.Second
	c.recoverGrace = 3 * time.Second
	c.reloadEvery = d / 6
	c.churnEvery = clamp(d/20, time.Second, 3*time.Second)
	c.sampleEvery = clamp(d/12, time.Second, 5*time.Second)
	c.outageAt = d * 4 / 10
	c.outageFor = clamp(d/10, 3*time.Second, 6*time.Second)
	c.faults = map[string]bool{}
	for f := range strings.SplitSeq(*faults, ",") {
		switch f = strings.TrimSpace(f); f {
		case "", "none":
		case "reload", "churn", "redis":
			c.faults[f] = true
		default:
			return nil, fmt.Errorf("FAULTS: unknown %q (known: reload, churn, redis, none)", f)
		}
	}
	c.tolerate = map[string]bool{}
	for t := range strings.SplitSeq(*tolerate, ",") {
		switch t = strings.TrimSpace(t); t {
		case "":
		case tolerateReloadConn:
			if c.privateNet {
				// With the clients' retry and tcp_migrate_req=1 a reload
				// costs no request (bench/reload.sh: 0 over 26 reloads,
				// bare Caddy and scopegate): nothing left to tolerate.
				c.notes = append(c.notes, "TOLERATE=reload-conn ignored: private network namespace with tcp_migrate_req=1, zero failed requests during reloads is judged")
				continue
			}
			c.tolerate[t] = true
		case tolerateSlowStore:
			c.tolerate[t] = true
		default:
			return nil, fmt.Errorf("TOLERATE: unknown %q (known: %s, %s)", t, tolerateReloadConn, tolerateSlowStore)
		}
	}
	return c, nil
}

func clamp(v, lo, hi time.Duration) time.Duration { return max(lo, min(v, hi)) }

// Failure kinds that TOLERATE can turn into warnings.
const (
	// tolerateReloadConn: new connections reset during `caddy reload`
	// (k3: queued on the old SO_REUSEPORT socket), which only
	// net.ipv4.tcp_migrate_req=1 prevents; honoured only outside a private
	// network namespace, where this program cannot set it. Every other
	// connection failure during a reload still fails the run.
	tolerateReloadConn = "reload-conn"
	// tolerateSlowStore: 503 store_unavailable while Redis was up, when
	// caddy.log shows as many lookups that ended in "context deadline
	// exceeded" (the 250 ms bound, on an overloaded machine).
	tolerateSlowStore = "slow-store"
)

// hardMargin is how long past -duration the process may live in all:
// setup, draining requests in flight, the final samples and the report.
const hardMargin = 100 * time.Second

func main() {
	cfg, err := parseConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	procs := &childproc.Group{}
	watchdog := time.AfterFunc(cfg.duration+hardMargin, func() {
		fmt.Fprintf(os.Stderr, "soak: hard deadline (%v) reached; killing children\n", cfg.duration+hardMargin)
		procs.KillAll()
		os.Exit(3)
	})
	if cfg.privateNet {
		if err := setMigrate(); err != nil {
			fmt.Fprintln(os.Stderr, "soak: tcp_migrate_req:", err)
			os.Exit(2)
		}
	}
	code := run(ctx, cfg, procs)
	procs.StopAll()
	watchdog.Stop()
	if ctx.Err() != nil && code != 0 {
		code = 130
	}
	stop()
	os.Exit(code)
}

// run sets up, runs the load with the faults, and reports. It returns the
// exit code.
func run(ctx context.Context, cfg *config, procs *childproc.Group) int {
	e, err := setup(ctx, cfg, procs)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak: setup:", err)
		if e != nil && e.caddyLog != "" {
			fmt.Fprintln(os.Stderr, "soak: last lines of", e.caddyLog+":")
			fmt.Fprintln(os.Stderr, tailFile(e.caddyLog, 15))
		}
		return 2
	}
	defer e.up.close()
	rep := e.runLoad(ctx)
	if ctx.Err() != nil {
		rep.Pass = false
		rep.Failed = []string{fmt.Sprintf("interrupted after %.1fs: partial figures, no verdict", rep.Elapsed)}
		rep.print(os.Stdout)
		return 130
	}
	rep.print(os.Stdout)
	if err := rep.writeJSON(e.path("summary.json")); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
	}
	if !rep.Pass {
		return 1
	}
	return 0
}
