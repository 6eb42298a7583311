package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strings"
	"time"
)

// report is the run's outcome: printed, and written to summary.json.
type report struct {
	Pass   bool     `json:"pass"`
	Failed []string `json:"failed"`
	Notes  []string `json:"notes"`

	Duration     string  `json:"duration"`
	Short        bool    `json:"short"`
	Workers      int     `json:"workers"`
	Seed         uint64  `json:"seed"`
	PortBase     int     `json:"port_base"`
	AdminPort    int     `json:"admin_port"`
	CacheTTL     string  `json:"cache_ttl"`
	SettleFile   string  `json:"settle_keys_file"`
	SettleRedis  string  `json:"settle_redis"`
	Elapsed      float64 `json:"elapsed_s"`
	LoadBefore   string  `json:"loadavg_before"`
	LoadAfter    string  `json:"loadavg_after"`
	RecoverGrace float64 `json:"recover_grace_s"`

	Stats *stats `json:"stats"`

	Events      []string `json:"events"`
	Reloads     int      `json:"reloads"`
	ReloadErrs  []string `json:"reload_errors"`
	OutageKill  float64  `json:"outage_kill_s"`
	OutageReady float64  `json:"outage_ready_s"`
	OutageErr   string   `json:"outage_error"`
	Churn       []string `json:"churn"`
	ChurnErrs   []string `json:"churn_errors"`
	CaddyExited bool     `json:"caddy_exited"`

	Samples      []sample `json:"memory_samples"`
	SampleErrors []string `json:"memory_sample_errors"`
	Growth       []growth `json:"memory_growth"`
	MemoryJudged bool     `json:"memory_judged"`
	Metrics      []string `json:"scopegate_metrics"`
	// UpstreamConns: connections Caddy held open to the upstream at each
	// quiet point, before the upstream closed them.
	UpstreamConns map[string]int64 `json:"upstream_connections"`

	// Network: where the run happened ("private namespace" or "host") and
	// net.ipv4.tcp_migrate_req there.
	Network    string `json:"network"`
	MigrateReq string `json:"tcp_migrate_req"`
	// StoreLog: caddy.log's denials with store_unavailable while Redis was
	// up (outside the outage window), by the store error they carry.
	StoreLog storeLog `json:"store_log_redis_up"`
}

// storeLog is the evidence for the 503s with Redis up.
type storeLog struct {
	Deadline int      `json:"context_deadline_exceeded"`
	Other    int      `json:"other_errors"`
	Examples []string `json:"other_examples"`
}

// storeEvidence reads caddy.log for the denials with store_unavailable
// outside the Redis outage window: a lookup that ran into its 250 ms
// bound says "context deadline exceeded"; anything else (a refused
// connection, a protocol error) is not explained by load.
func (e *env) storeEvidence() storeLog {
	var sl storeLog
	f, err := os.Open(e.caddyLog)
	if err != nil {
		return sl
	}
	defer f.Close()
	ow, outage := e.outageWindow()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.Contains(line, []byte(`"store_unavailable"`)) {
			continue
		}
		var l struct {
			TS         float64 `json:"ts"`
			Msg        string  `json:"msg"`
			Error      string  `json:"error"`
			StoreError string  `json:"store_error"`
		}
		if json.Unmarshal(line, &l) != nil || l.Error != "store_unavailable" || !strings.HasPrefix(l.Msg, "request denied") {
			continue
		}
		t := time.Unix(0, int64(l.TS*1e9))
		if outage && ow.overlaps(t, t) {
			continue
		}
		if strings.Contains(l.StoreError, "context deadline exceeded") {
			sl.Deadline++
		} else {
			sl.Other++
			if len(sl.Examples) < 5 {
				sl.Examples = append(sl.Examples, l.StoreError)
			}
		}
	}
	return sl
}

// faultReport copies what the faults did into the report.
func (e *env) faultReport(rep *report) {
	f := &e.faults
	f.mu.RLock()
	rep.Events = append(rep.Events, f.events...)
	sort.Strings(rep.Events) // "t=%5.1fs …": in time order
	rep.Reloads = len(f.reloads)
	rep.ReloadErrs = f.reloadErr
	if !f.killAt.IsZero() {
		rep.OutageKill = f.killAt.Sub(e.start).Seconds()
	}
	if !f.readyAt.IsZero() {
		rep.OutageReady = f.readyAt.Sub(e.start).Seconds()
	}
	rep.OutageErr = f.outageErr
	f.mu.RUnlock()
	for _, s := range e.sites {
		cp := &s.churn
		cp.mu.Lock()
		rep.Churn = append(rep.Churn, fmt.Sprintf("%s store: %d new, %d revoked, %d rotated, %d failed CLI runs", s.name, cp.made, cp.revoked, cp.rotated, cp.fails))
		for _, err := range cp.errs {
			rep.ChurnErrs = append(rep.ChurnErrs, s.name+": "+err)
		}
		cp.mu.Unlock()
	}
}

// judge applies the invariants.
func (rep *report) judge(cfg *config, mem *memory) {
	st := rep.Stats
	check := func(bad bool, format string, a ...any) {
		if bad {
			rep.Failed = append(rep.Failed, fmt.Sprintf(format, a...))
		}
	}
	tolerable := func(tolerated, bad bool, format string, a ...any) {
		switch {
		case bad && tolerated:
			rep.Notes = append(rep.Notes, "TOLERATED: "+fmt.Sprintf(format, a...))
		case bad:
			check(true, format, a...)
		}
	}
	check(st.Requests == 0, "no request was judged")
	check(st.WrongDecisions > 0, "%d wrong decisions", st.WrongDecisions)
	check(st.WrongAllows > 0, "%d WRONG ALLOWS", st.WrongAllows)
	check(st.PIILeaks > 0, "%d PII LEAKS", st.PIILeaks)
	check(st.Gateway5xx > 0, "%d 5xx from the gateway (outside the expected 503s of the Redis outage)", st.Gateway5xx)
	// A 503 with Redis up is tolerated (TOLERATE=slow-store) only when
	// caddy.log shows at least as many lookups that hit their deadline, and
	// no store error of another kind outside the outage.
	slowShown := int64(rep.StoreLog.Deadline) >= st.Store503 && rep.StoreLog.Other == 0
	tolerable(cfg.tolerate[tolerateSlowStore] && slowShown, st.Store503 > 0,
		"%d 503 store_unavailable while Redis was up (caddy.log, outside the outage: %d lookups hit the 250 ms deadline, %d other store errors)",
		st.Store503, rep.StoreLog.Deadline, rep.StoreLog.Other)
	check(st.Upstream5xx > 0, "%d 5xx from the upstream (a bug in this program)", st.Upstream5xx)
	check(st.IdentityProblems > 0, "%d identity problems (credential or forged/missing X-Key-Id at the upstream)", st.IdentityProblems)
	// Failed requests during reloads: with the clients' retry and
	// tcp_migrate_req=1 there must be none. Without the private namespace
	// only the kind that tcp_migrate_req alone prevents (k3, a new
	// connection reset) may be tolerated, with TOLERATE=reload-conn.
	tolerable(cfg.tolerate[tolerateReloadConn], st.TransportInReloadK3 > 0,
		"%d requests failed during caddy reload: new connections reset (k3; net.ipv4.tcp_migrate_req is %s here)", st.TransportInReloadK3, rep.MigrateReq)
	check(st.TransportInReload-st.TransportInReloadK3 > 0, "%d requests failed during caddy reload, after the client's retry (%s)",
		st.TransportInReload-st.TransportInReloadK3, kindList(st.TransportKinds))
	check(st.TransportErrors-st.TransportInReload > 0, "%d connection-level failures outside reloads (%d during the outage, %d other)",
		st.TransportErrors-st.TransportInReload, st.TransportInOutage, st.TransportOther)
	// The retry is for the reload handover only: a connection failure
	// anywhere else is not explained by it, retried or not.
	check(st.RetriesInOutage+st.RetriesOther > 0, "%d connection-level failures outside reloads, covered by the client's retry (%d during the outage, %d other)",
		st.RetriesInOutage+st.RetriesOther, st.RetriesInOutage, st.RetriesOther)
	check(st.LateWrongAllows > 0, "%d requests expected to be denied reached the upstream after they were judged", st.LateWrongAllows)
	check(len(rep.ReloadErrs) > 0, "%d reloads failed", len(rep.ReloadErrs))
	check(cfg.faults["reload"] && rep.Reloads == 0, "no reload happened")
	check(cfg.faults["redis"] && rep.OutageKill == 0, "the Redis outage did not happen")
	check(rep.OutageErr != "", "Redis restart failed: %s", rep.OutageErr)
	check(rep.OutageKill > 0 && st.Outage503 == 0, "no 503 store_unavailable seen during the Redis outage (was the outage real?)")
	check(len(rep.ChurnErrs) > 0, "%d key changes through the CLI failed", len(rep.ChurnErrs))
	check(rep.CaddyExited, "caddy exited during the run")
	var needed []string
	if cfg.faults["churn"] {
		needed = append(needed, "churn_active", "churn_revoked")
	}
	if cfg.faults["reload"] {
		needed = append(needed, "extra_rule")
	}
	for _, c := range needed {
		check(st.Classes[c] == nil || st.Classes[c].Requests == 0, "no %s request was sent (the fault schedule did not play out)", c)
	}
	rep.Notes = append(rep.Notes, cfg.notes...)
	if !cfg.privateNet {
		rep.Notes = append(rep.Notes, "not in a private network namespace (NETNS=0, or not root, or no unshare): tcp_migrate_req is "+rep.MigrateReq+
			", so new connections queued on the old socket at a reload may be reset (k3); TOLERATE=reload-conn tolerates those only")
	}
	if len(cfg.faults) < 3 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("faults limited to %v (FAULTS)", sortedKeys(cfg.faults)))
	}
	rep.Growth = memoryGrowth(rep.Samples, cfg.duration)
	rep.MemoryJudged = cfg.duration >= 30*time.Second
	for _, g := range rep.Growth {
		if !g.Judged {
			continue
		}
		msg := fmt.Sprintf("memory: %s grew %.0f%% over the second half of the run (%s: %d -> %d); limit %.0f%% and %d",
			g.Metric, g.Growth*100, g.Compare, g.From, g.To, memoryLimit*100, g.Slack)
		if rep.MemoryJudged {
			check(g.Fail, "%s", msg)
		} else if g.Fail {
			rep.Notes = append(rep.Notes, "not judged (run shorter than 30s): "+msg)
		}
	}
	if rep.MemoryJudged {
		check(!hasPhase(rep.Samples, "idle-50%") || !hasPhase(rep.Samples, "idle-after"),
			"memory: the idle-50%% or idle-after sample is missing (%d errors)", len(rep.SampleErrors))
	} else {
		rep.Notes = append(rep.Notes, "memory growth reported, not judged: the run is shorter than 30s")
	}
	rep.Pass = len(rep.Failed) == 0
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func (rep *report) print(w io.Writer) {
	st := rep.Stats
	p := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	p("")
	p("=== scopegate soak: %s, %d workers, seed %d ===", rep.Duration, rep.Workers, rep.Seed)
	if st == nil {
		p("(no statistics)")
		return
	}
	rps := 0.0
	if rep.Elapsed > 0 {
		rps = float64(st.Requests) / rep.Elapsed
	}
	p("requests %d in %.1fs (%.0f/s), %d allowed, %d denied, %.0f MiB of responses read",
		st.Requests, rep.Elapsed, rps, st.Allowed, st.Denied, float64(st.BytesRead)/(1<<20))
	p("machine load average before %s, after %s (%d CPUs)", rep.LoadBefore, rep.LoadAfter, runtime.NumCPU())
	p("")
	p("%-18s %8s  outcomes (status [error code]: count)", "class", "requests")
	for _, name := range sortedKeys(st.Classes) {
		c := st.Classes[name]
		labels := sortedKeys(c.Outcomes)
		parts := make([]string, 0, len(labels))
		for _, l := range labels {
			parts = append(parts, fmt.Sprintf("%s: %d", l, c.Outcomes[l]))
		}
		p("%-18s %8d  %s", name, c.Requests, strings.Join(parts, ", "))
	}
	p("")
	p("wrong decisions      %d   (wrong allows %d, PII leaks %d)", st.WrongDecisions, st.WrongAllows, st.PIILeaks)
	p("gateway 5xx          %d   (not counting the expected 503s of the Redis outage)", st.Gateway5xx)
	p("503 with Redis up    %d   (store_unavailable outside the outage window; caddy.log: %d lookups hit the 250 ms deadline, %d other store errors)",
		st.Store503, rep.StoreLog.Deadline, rep.StoreLog.Other)
	p("network              %s, net.ipv4.tcp_migrate_req=%s", rep.Network, rep.MigrateReq)
	p("failed requests      %d   (no HTTP answer after the retry: during reloads %d, during the outage %d, other %d; on kept-alive connections %d%s)",
		st.TransportErrors, st.TransportInReload, st.TransportInOutage, st.TransportOther, st.TransportReused, kindSuffix(st.TransportKinds))
	p("retries              %d   (first attempt failed at the connection level before any response byte, or before the end of a GET/HEAD/OPTIONS response, sent again on a new connection: during reloads %d, during the outage %d, other %d; %d answered%s)",
		st.Retries, st.RetriesInReload, st.RetriesInOutage, st.RetriesOther, st.RetriesAnswered, kindSuffix(st.RetryKinds))
	p("transport replays    %d   (Go's transport re-sent a GET or Idempotency-Key POST after a kept-alive connection failed; during reloads %d); reached the upstream twice %d",
		st.Replayed, st.ReplayedInReload, st.DuplicateArrivals)
	p("late arrivals        %d   (reached the upstream after being judged; of requests to be denied: %d)", st.LateArrivals, st.LateWrongAllows)
	p("identity problems    %d   (credential or wrong X-Key-Id at the upstream; denied request that reached it = wrong allow)", st.IdentityProblems)
	p("in transition        %d   (allowed %d, denied %d: key changes and the new rule within their settle windows)", st.Transition, st.TransitionAllowed, st.TransitionDenied)
	p("")
	p("faults:")
	for _, ev := range rep.Events {
		p("  %s", ev)
	}
	p("  reloads: %d, failed: %d", rep.Reloads, len(rep.ReloadErrs))
	for _, c := range rep.Churn {
		p("  %s", c)
	}
	if rep.OutageKill > 0 {
		p("")
		p("Redis outage: killed at t=%.1fs, answering again at t=%.1fs (window for 503: until t=%.1fs)",
			rep.OutageKill, rep.OutageReady, rep.OutageReady+rep.RecoverGrace)
		p("  Redis-site requests that needed the store in the window: %d allowed (cached keys), %d got 503 store_unavailable, %d denied",
			st.OutageAllowed, st.Outage503, st.OutageDenied)
		secs := make([]int, 0, len(st.OutageTimeline))
		for s := range st.OutageTimeline {
			secs = append(secs, s)
		}
		sort.Ints(secs)
		var line []string
		for _, s := range secs {
			b := st.OutageTimeline[s]
			line = append(line, fmt.Sprintf("+%ds %d/%d/%d", s, b[0], b[1], b[2]))
		}
		p("  valid keys, per second since the kill (allowed/503/denied): %s", strings.Join(line, "  "))
	}
	p("")
	p("memory of the Caddy process (heap and goroutines from its /metrics after two forced GCs):")
	p("  %-12s %7s %12s %12s %12s %11s", "phase", "t", "RSS", "heap in use", "heap live", "goroutines")
	for _, s := range rep.Samples {
		p("  %-12s %6.1fs %12s %12s %12s %11d", s.Phase, s.T, mib(s.RSSBytes), mib(s.HeapInuse), mib(s.HeapAlloc), s.Goroutines)
	}
	p("  Caddy's connections to the upstream at the quiet points (then closed): idle-before %d, idle-mid %d, idle-after %d",
		rep.UpstreamConns["idle-before"], rep.UpstreamConns["idle-mid"], rep.UpstreamConns["idle-after"])
	for _, g := range rep.Growth {
		verdict := "ok"
		if g.Fail {
			verdict = "GROWTH"
			if !g.Judged || !rep.MemoryJudged {
				verdict = "growth (reported, not judged)"
			}
		}
		p("  %-11s %-30s %12d -> %12d  %+6.1f%%  %s", g.Metric, g.Compare, g.From, g.To, g.Growth*100, verdict)
	}
	for _, e := range rep.SampleErrors {
		p("  sample error: %s", e)
	}
	if len(rep.Metrics) > 0 {
		p("")
		p("scopegate metrics at the end:")
		for _, m := range rep.Metrics {
			p("  %s", m)
		}
	}
	if len(st.Examples) > 0 {
		p("")
		p("first failures:")
		for _, ex := range st.Examples {
			p("  %s", ex)
		}
	}
	if len(st.RetryExamples) > 0 {
		p("")
		p("retries (first attempt's failure; the retry's answer was judged in full):")
		for _, ex := range st.RetryExamples {
			p("  %s", ex)
		}
	}
	for _, ex := range rep.StoreLog.Examples {
		p("store error with Redis up (not a deadline): %s", ex)
	}
	for _, e := range rep.ReloadErrs {
		p("reload error: %s", e)
	}
	for _, e := range rep.ChurnErrs {
		p("CLI error: %s", e)
	}
	for _, n := range rep.Notes {
		p("note: %s", n)
	}
	p("")
	if rep.Pass {
		tolerated := 0
		for _, n := range rep.Notes {
			if strings.HasPrefix(n, "TOLERATED") {
				tolerated++
			}
		}
		if tolerated > 0 {
			p("PASS: every invariant held, %d failure kind(s) tolerated (TOLERATE; see the notes above)", tolerated)
		} else {
			p("PASS: every invariant held")
		}
	} else {
		p("FAIL:")
		for _, f := range rep.Failed {
			p("  - %s", f)
		}
	}
}

func (rep *report) writeJSON(path string) error {
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

// kindList renders failure counts by kind: "k1 2, k4 1".
func kindList(m map[string]int64) string {
	parts := make([]string, 0, len(m))
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func kindSuffix(m map[string]int64) string {
	if len(m) == 0 {
		return ""
	}
	return "; by kind: " + kindList(m)
}
