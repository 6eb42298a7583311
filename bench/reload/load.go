package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"time"
)

// Load kinds: worker i runs kind i%4.
const (
	kindGet  = iota // HTTP/1.1 keep-alive GET
	kindPost        // HTTP/1.1 keep-alive POST
	kindNew         // a new connection per request (GET), HTTP/1.1
	kindH2          // HTTP/2 keep-alive, GET and POST alternately
	numKinds
)

var kindNames = [numKinds]string{"h1-keepalive-GET", "h1-keepalive-POST", "new-conn-GET", "h2-GET/POST"}

// Failure kinds (connection-level: no HTTP response), as numbered in the
// soak's findings.
const (
	failPostReused = iota // 1: POST on a kept-alive connection, no response
	failGetReused         // 2: GET on a kept-alive connection, no response
	failNewConnect        // 3: new connection failed before the request was written (connect, TLS)
	failNewWritten        // 4: new connection, request written, no response
	failOther             // anything else (after the response started, timeouts)
	numFails
)

var failNames = [numFails]string{"1 kept-alive POST", "2 kept-alive GET", "3 new conn connect/TLS", "4 new conn after write", "other"}

// counts are one (variant, load kind)'s figures.
type counts struct {
	Requests    int64           `json:"requests"`
	OK          int64           `json:"ok_2xx"`
	Non2xx      int64           `json:"non_2xx"`
	Fails       [numFails]int64 `json:"failures"`    // by failure kind
	Replayed    int64           `json:"replayed"`    // Go's transport used more than one connection for the request
	Retried     int64           `json:"app_retried"` // the client's own retry (+retry) was used
	OutOfReload int64           `json:"failures_outside_reloads"`
}

func (c *counts) failures() int64 {
	var n int64
	for _, f := range c.Fails {
		n += f
	}
	return n
}

func (c *counts) add(o *counts) {
	c.Requests += o.Requests
	c.OK += o.OK
	c.Non2xx += o.Non2xx
	for i := range c.Fails {
		c.Fails[i] += o.Fails[i]
	}
	c.Replayed += o.Replayed
	c.Retried += o.Retried
	c.OutOfReload += o.OutOfReload
}

// result is one variant's figures over all its slices.
type result struct {
	v        variant
	seconds  float64
	reloads  int
	reloadMS []float64
	kinds    [numKinds]counts
	examples []string
	statuses map[int]int64
	mu       sync.Mutex
}

// reloadWindows records when reloads ran, to tell failures during reloads
// from the others.
type reloadWindows struct {
	mu sync.Mutex
	w  [][2]time.Time
}

func (r *reloadWindows) open() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.w = append(r.w, [2]time.Time{time.Now(), time.Now().Add(time.Hour)})
	return len(r.w) - 1
}

func (r *reloadWindows) close(i int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.w[i][1] = time.Now().Add(time.Second) // old connections drain after the reload returns
}

func (r *reloadWindows) overlaps(from, to time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range r.w {
		if !to.Before(w[0]) && !from.After(w[1]) {
			return true
		}
	}
	return false
}

// runAll runs the variants in slices, alternating (in reverse order every
// other round, so that no variant always follows the same one).
func (e *env) runAll(ctx context.Context) ([]*result, error) {
	cfg := e.cfg
	results := make([]*result, len(cfg.variants))
	for i, v := range cfg.variants {
		results[i] = &result{v: v, statuses: map[int]int64{}}
	}
	slice := cfg.duration / time.Duration(cfg.rounds)
	for round := range cfg.rounds {
		order := make([]int, len(results))
		for i := range order {
			order[i] = i
			if round%2 == 1 {
				order[i] = len(results) - 1 - i
			}
		}
		for _, i := range order {
			r := results[i]
			// Switch: the variant's config (global options may differ),
			// kernel setting, then a pause so that the switch's own
			// reload is not part of the slice.
			if cfg.privateNet {
				if err := setMigrate(r.v.migrate); err != nil {
					return nil, fmt.Errorf("tcp_migrate_req: %v", err)
				}
			}
			if err := e.reload(ctx, r.v); err != nil {
				return nil, fmt.Errorf("switching to %s: %v", r.v.name, err)
			}
			if !sleepCtx(ctx, time.Second) {
				return nil, ctx.Err()
			}
			logf("round %d/%d: %s for %v", round+1, cfg.rounds, r.v.name, slice)
			if err := e.runSlice(ctx, r, slice); err != nil {
				return nil, err
			}
		}
	}
	return results, nil
}

// runSlice runs the load on one variant for d with reloads every
// reloadEvery, and adds the figures to r.
func (e *env) runSlice(ctx context.Context, r *result, d time.Duration) error {
	start := time.Now()
	until := start.Add(d)
	windows := &reloadWindows{}
	var reloadErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 1; ; n++ {
			at := start.Add(time.Duration(n) * e.cfg.reloadEvery)
			if at.After(until.Add(-500 * time.Millisecond)) {
				return
			}
			if !sleepCtx(ctx, time.Until(at)) {
				return
			}
			i := windows.open()
			t0 := time.Now()
			err := e.reload(ctx, r.v)
			windows.close(i)
			if err != nil {
				reloadErr = err
				return
			}
			r.mu.Lock()
			r.reloads++
			r.reloadMS = append(r.reloadMS, float64(time.Since(t0).Milliseconds()))
			r.mu.Unlock()
		}
	}()
	for i := range e.cfg.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.worker(ctx, r, i%numKinds, until, windows)
		}()
	}
	wg.Wait()
	r.mu.Lock()
	r.seconds += time.Since(start).Seconds()
	r.mu.Unlock()
	select {
	case <-e.caddyDone:
		return errors.New("caddy exited during the load: see caddy.log")
	default:
	}
	if reloadErr != nil {
		return fmt.Errorf("%s: caddy reload failed: %v", r.v.name, reloadErr)
	}
	return ctx.Err()
}

func (e *env) transport(h2, keepAlive bool) *http.Transport {
	tr := &http.Transport{
		DialContext:           dial127,
		TLSClientConfig:       e.tlsConfig(),
		ForceAttemptHTTP2:     h2,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       time.Minute,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 20 * time.Second,
		DisableKeepAlives:     !keepAlive,
	}
	if !h2 {
		// A non-nil empty map turns HTTP/2 off whatever the server offers.
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return tr
}

// worker sends requests of one load kind until the slice ends.
func (e *env) worker(ctx context.Context, r *result, kind int, until time.Time, windows *reloadWindows) {
	v := r.v
	h2 := kind == kindH2 || v.h2
	var tr *http.Transport
	if kind != kindNew {
		tr = e.transport(h2, true)
		defer tr.CloseIdleConnections()
	}
	local := &counts{}
	localStatus := map[int]int64{}
	var examples []string
	postBody := []byte(`{"gift":"mug","note":"thanks for the help"}`)
	for n := 0; ctx.Err() == nil && time.Now().Before(until); n++ {
		method := http.MethodGet
		if kind == kindPost || (kind == kindH2 && n%2 == 1) {
			method = http.MethodPost
		}
		t := tr
		if kind == kindNew {
			// New connection per request: a fresh transport (works for
			// HTTP/1.1 and HTTP/2 alike).
			t = e.transport(h2, false)
		}
		a := e.attempt(ctx, t, v, method, postBody, n)
		if a.err != nil && v.retry && a.status == 0 && !a.gotByte && (method == http.MethodGet || v.idem) {
			// The client's own retry, on a new connection: Go's transport
			// never retries a request whose connection was new.
			if kind != kindNew {
				t.CloseIdleConnections()
			}
			local.Retried++
			b := e.attempt(ctx, t, v, method, postBody, n)
			b.conns += a.conns
			b.start = a.start
			a = b
		}
		if kind == kindNew {
			t.CloseIdleConnections()
		}
		if ctx.Err() != nil {
			break
		}
		local.Requests++
		if a.conns > 1 {
			local.Replayed++
		}
		switch {
		case a.err != nil:
			f := classify(a, method)
			local.Fails[f]++
			if !windows.overlaps(a.start, a.end) {
				local.OutOfReload++
			}
			if len(examples) < 4 {
				examples = append(examples, fmt.Sprintf("%s %s %s: [%s] %v (reused=%v, stage=%s, %d conn(s), %.0f ms)",
					v.name, kindNames[kind], method, failNames[f], a.err, a.reused, a.stage, a.conns, a.end.Sub(a.start).Seconds()*1000))
			}
		case a.status >= 200 && a.status < 300:
			local.OK++
		default:
			local.Non2xx++
			localStatus[a.status]++
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.kinds[kind].add(local)
	for s, n := range localStatus {
		r.statuses[s] += n
	}
	for _, ex := range examples {
		if len(r.examples) < 24 {
			r.examples = append(r.examples, ex)
		}
	}
}

// attemptResult is what one client.Do gave.
type attemptResult struct {
	start, end time.Time
	err        error
	status     int
	reused     bool   // the last connection used was a kept-alive one
	stage      string // how far the last connection got
	written    bool   // the request was written on the last connection
	gotByte    bool   // a response byte arrived
	conns      int    // connections used (more than 1: the transport replayed it)

	// mu guards the fields the trace hooks set: the transport calls them
	// from its own goroutines.
	mu sync.Mutex
}

func (e *env) attempt(ctx context.Context, t *http.Transport, v variant, method string, postBody []byte, n int) *attemptResult {
	a := &attemptResult{stage: "dialing"}
	var rd io.Reader
	if method == http.MethodPost {
		rd = bytes.NewReader(postBody) // NewRequest sets GetBody: replayable when idempotent
	}
	req, err := http.NewRequestWithContext(ctx, method, e.url(v.ours, "/v1/gifts"), rd)
	if err != nil {
		a.err = err
		return a
	}
	if v.ours {
		req.Header.Set("Authorization", "Bearer "+e.key)
	}
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/json")
		if v.idem {
			req.Header.Set("Idempotency-Key", fmt.Sprintf("reload-%p-%d", a, n))
		}
	}
	req = req.WithContext(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) {
			a.mu.Lock()
			defer a.mu.Unlock()
			a.conns++
			a.reused, a.stage, a.written = info.Reused, "connected", false
		},
		TLSHandshakeDone: func(_ tls.ConnectionState, err error) {
			a.mu.Lock()
			defer a.mu.Unlock()
			if err == nil {
				a.stage = "TLS done"
			} else {
				a.stage = "TLS failed"
			}
		},
		WroteRequest: func(info httptrace.WroteRequestInfo) {
			a.mu.Lock()
			defer a.mu.Unlock()
			if info.Err == nil {
				a.stage, a.written = "request written", true
			}
		},
		GotFirstResponseByte: func() {
			a.mu.Lock()
			defer a.mu.Unlock()
			a.stage, a.gotByte = "response started", true
		},
	}))
	a.start = time.Now()
	resp, err := (&http.Client{Transport: t, Timeout: 30 * time.Second}).Do(req)
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		a.status = resp.StatusCode
	}
	a.mu.Lock() // the hooks are done: Do has returned
	defer a.mu.Unlock()
	a.end = time.Now()
	a.err = err
	return a
}

// classify maps a failed request to the soak's failure kinds.
func classify(a *attemptResult, method string) int {
	switch {
	case a.gotByte || isTimeout(a.err):
		return failOther
	case !a.reused && !a.written:
		return failNewConnect
	case !a.reused:
		return failNewWritten
	case method == http.MethodPost:
		return failPostReused
	default:
		return failGetReused
	}
}

func isTimeout(err error) bool {
	return err != nil && (errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "Timeout"))
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
