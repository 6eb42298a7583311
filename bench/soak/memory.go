package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// sample is Caddy's memory at one moment: RSS from /proc, and the heap in
// use and goroutines from the admin API's /metrics right after a GC that
// the admin API's pprof endpoint forced (so the heap figure is the live
// heap, not wherever the collector's sawtooth happened to be).
type sample struct {
	Phase      string  `json:"phase"` // idle-before, load, idle-after
	T          float64 `json:"t"`     // seconds since the load started
	RSSBytes   int64   `json:"rss_bytes"`
	HeapInuse  int64   `json:"heap_inuse_bytes"`
	HeapAlloc  int64   `json:"heap_alloc_bytes"` // live heap right after the GCs
	Goroutines int64   `json:"goroutines"`
}

type memory struct {
	e       *env
	mu      sync.Mutex
	samples []sample
	errors  []string
}

var adminClient = &http.Client{Timeout: 15 * time.Second}

func (e *env) admin(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", e.cfg.adminPort, path), nil)
	if err != nil {
		return nil, err
	}
	resp, err := adminClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("admin %s: %s", path, resp.Status)
	}
	return body, err
}

// run samples every sampleEvery until ctx is done.
func (m *memory) run(ctx context.Context) {
	t := time.NewTicker(m.e.cfg.sampleEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.sample(ctx, "load", time.Since(m.e.start))
		}
	}
}

func (m *memory) sample(ctx context.Context, phase string, t time.Duration) {
	s, err := m.e.readMemory(ctx)
	if err == nil && (phase == "idle-before" || phase == "idle-mid" || phase == "idle-after") {
		// Keep profiles of the idle process before and after the load, to
		// explain a growth: go tool pprof -top -base heap-idle-before.pb.gz
		// heap-idle-after.pb.gz; goroutines-*.txt are grouped stacks.
		err = m.e.saveProfiles(ctx, phase)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil {
			m.errors = append(m.errors, fmt.Sprintf("t=%.1fs: %v", t.Seconds(), err))
		}
		return
	}
	s.Phase, s.T = phase, t.Seconds()
	m.samples = append(m.samples, s)
}

func (e *env) readMemory(ctx context.Context) (sample, error) {
	var s sample
	// Two collections: objects parked in sync.Pools survive the first one
	// (in the pools' victim caches) and are freed by the second.
	for range 2 {
		if _, err := e.admin(ctx, "/debug/pprof/heap?gc=1"); err != nil {
			return s, fmt.Errorf("forcing a GC: %v", err)
		}
	}
	body, err := e.admin(ctx, "/metrics")
	if err != nil {
		return s, err
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			continue
		}
		switch name {
		case "go_memstats_heap_inuse_bytes":
			s.HeapInuse = int64(f)
		case "go_memstats_heap_alloc_bytes":
			s.HeapAlloc = int64(f)
		case "go_goroutines":
			s.Goroutines = int64(f)
		}
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", e.caddyPid))
	if err != nil {
		return s, err
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			s.RSSBytes = kb << 10
		}
	}
	if s.HeapInuse == 0 || s.Goroutines == 0 || s.RSSBytes == 0 {
		return s, fmt.Errorf("incomplete sample (heap %d, goroutines %d, rss %d)", s.HeapInuse, s.Goroutines, s.RSSBytes)
	}
	return s, nil
}

// saveProfiles writes Caddy's heap profile and goroutine stacks to the
// work directory.
func (e *env) saveProfiles(ctx context.Context, phase string) error {
	for name, path := range map[string]string{
		"heap-" + phase + ".pb.gz":     "/debug/pprof/heap",
		"goroutines-" + phase + ".txt": "/debug/pprof/goroutine?debug=1",
	} {
		body, err := e.admin(ctx, path)
		if err != nil {
			return err
		}
		if err := os.WriteFile(e.path(name), body, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// scopegateMetrics returns the scopegate_* series from /metrics.
func (e *env) scopegateMetrics(ctx context.Context) []string {
	body, err := e.admin(ctx, "/metrics")
	if err != nil {
		return []string{"(metrics unavailable: " + err.Error() + ")"}
	}
	var out []string
	for line := range strings.SplitSeq(string(body), "\n") {
		if strings.HasPrefix(line, "scopegate_") {
			out = append(out, line)
		}
	}
	return out
}

// growth is one memory comparison. Memory is compared at quiet points
// (no request in flight, every connection closed, two forced GCs) at 25 %
// (idle-mid), 50 % and 75 % of the run and after it. The live heap
// (go_memstats_heap_alloc_bytes) grows during the first minutes of load
// (caches, pools, per-connection state warming up) and then levels off
// (measured: 10 MiB idle before, 17 at 45 s, 21 at 90 s, 23 at 135 s, 22
// at 180 s), so the judged comparison is the second half of the run:
// idle-50% to idle-after, live heap and goroutines. heap_inuse (which
// also counts the free space of partly used spans) and RSS (which keeps
// the peak of the run: Go returns memory to the OS slowly) are reported,
// as are the comparison from idle-mid and the one under load (maximum over
// the last third of the run against the middle third), which large bodies
// in flight move by several MiB from one sample to the next.
type growth struct {
	Metric  string  `json:"metric"`
	Compare string  `json:"compare"`
	From    int64   `json:"from"`
	To      int64   `json:"to"`
	Growth  float64 `json:"growth"` // (to - from) / from
	Slack   int64   `json:"slack"`  // absolute growth always tolerated
	Fail    bool    `json:"fail"`
	Judged  bool    `json:"judged"`
}

// memoryLimit: growth above this fraction (and above the metric's slack)
// between the quiet points fails the run.
const memoryLimit = 0.20

func hasPhase(samples []sample, phase string) bool {
	for _, s := range samples {
		if s.Phase == phase {
			return true
		}
	}
	return false
}

func memoryGrowth(samples []sample, d time.Duration) []growth {
	third := d.Seconds() / 3
	metrics := []struct {
		name   string
		get    func(sample) int64
		slack  int64
		judged bool
	}{
		{"heap_alloc", func(s sample) int64 { return s.HeapAlloc }, 4 << 20, true},
		{"goroutines", func(s sample) int64 { return s.Goroutines }, 20, true},
		{"heap_inuse", func(s sample) int64 { return s.HeapInuse }, 4 << 20, false},
		{"rss", func(s sample) int64 { return s.RSSBytes }, 16 << 20, false},
	}
	var out []growth
	for _, m := range metrics {
		// Judged: the second half of the run (from idle-50%); shorter runs
		// have no idle-50% and are not judged. Reported: from idle-mid.
		half := growth{Metric: m.name, Compare: "idle-50% -> idle-after", Slack: m.slack, Judged: m.judged}
		idle := growth{Metric: m.name, Compare: "idle-mid -> idle-after", Slack: m.slack}
		load := growth{Metric: m.name, Compare: "load: max mid third -> last", Slack: m.slack}
		for _, s := range samples {
			v := m.get(s)
			switch {
			case s.Phase == "idle-mid":
				idle.From = v
			case s.Phase == "idle-50%":
				half.From = v
			case s.Phase == "idle-after":
				idle.To, half.To = v, v
			case s.Phase != "load":
			case s.T >= 2*third:
				load.To = max(load.To, v)
			case s.T >= third:
				load.From = max(load.From, v)
			}
		}
		for _, g := range []*growth{&half, &idle, &load} {
			if g.From > 0 && g.To > 0 {
				g.Growth = float64(g.To-g.From) / float64(g.From)
				g.Fail = g.Growth > memoryLimit && g.To-g.From > g.Slack
				out = append(out, *g)
			}
		}
	}
	return out
}
