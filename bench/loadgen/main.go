// Command loadgen is a small closed-loop HTTP/1.1 load generator for the
// scopegate benchmark: -c workers, each with its own keep-alive TLS
// connection (client certificate optional), each sending the next request as
// soon as the previous answer was read. It prints one JSON line:
//
//	{"label":"…","round":1,"requests":…,"errors":…,"non2xx":…,"rps":…,"p50_us":…,"p99_us":…}
//
// Example:
//
//	go run ./bench/loadgen -url https://localhost:9443/v1/gifts -connect 127.0.0.1:9443 \
//	    -ca bench/out/certs/ca.pem -cert bench/out/certs/hris.pem -key bench/out/certs/hris-key.pem \
//	    -header "Authorization: Bearer $KEY" -c 16 -warmup 2s -d 10s
//
// With -pid (Linux), it also reads the server process's CPU time from
// /proc/<pid>/stat at the start and end of the measured window and reports
// the server's CPU time per request, which other load on the machine
// disturbs far less than throughput.
//
// Runs are bounded: -d at most 60s, -warmup at most 30s, each request times
// out after -timeout, and a watchdog ends the process if workers hang.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	maxDuration = 60 * time.Second
	maxWarmup   = 30 * time.Second
)

type headerFlags []string

func (h *headerFlags) String() string     { return strings.Join(*h, ", ") }
func (h *headerFlags) Set(v string) error { *h = append(*h, v); return nil }

type config struct {
	url      *url.URL
	method   string
	connect  string
	headers  http.Header
	host     string
	conc     int
	duration time.Duration
	warmup   time.Duration
	timeout  time.Duration
	tls      *tls.Config
	pid      int
}

type result struct {
	Label    string  `json:"label,omitempty"`
	Round    int     `json:"round,omitempty"`
	Requests int64   `json:"requests"`
	Errors   int64   `json:"errors"`
	Non2xx   int64   `json:"non2xx"`
	RPS      float64 `json:"rps"`
	P50us    int64   `json:"p50_us"`
	P99us    int64   `json:"p99_us"`
	// ServerCPUus is the server's CPU time (user + system) per request in
	// the measured window, in microseconds, when -pid was given.
	ServerCPUus float64 `json:"server_cpu_us_per_req,omitempty"`
	// FirstError is the first transport error or non-2xx status seen, to
	// make a broken setup obvious.
	FirstError string `json:"first_error,omitempty"`
}

func main() {
	var (
		rawURL   = flag.String("url", "", "target URL (https://… or http://…)")
		method   = flag.String("method", "GET", "request method")
		connect  = flag.String("connect", "", "dial this host:port instead of the URL's (keeps SNI and Host from -url)")
		caFile   = flag.String("ca", "", "PEM file of CAs that verify the server (default: system roots)")
		certFile = flag.String("cert", "", "client certificate PEM (leaf first)")
		keyFile  = flag.String("key", "", "client private key PEM")
		conc     = flag.Int("c", 16, "concurrency: workers, one connection each")
		duration = flag.Duration("d", 10*time.Second, "measured duration (max 60s)")
		warmup   = flag.Duration("warmup", 2*time.Second, "unmeasured warm-up before -d (max 30s)")
		timeout  = flag.Duration("timeout", 5*time.Second, "per-request timeout")
		label    = flag.String("label", "", "label copied into the JSON output")
		round    = flag.Int("round", 0, "round number copied into the JSON output")
		pid      = flag.Int("pid", 0, "server process id: report its CPU time per request (Linux /proc)")
		headers  headerFlags
	)
	flag.Var(&headers, "header", `request header "Name: value" (repeatable)`)
	flag.Parse()

	cfg, err := buildConfig(*rawURL, *method, *connect, *caFile, *certFile, *keyFile, headers, *conc, *duration, *warmup, *timeout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	cfg.pid = *pid
	if cfg.pid > 0 {
		if _, err := cpuTime(cfg.pid); err != nil {
			fmt.Fprintln(os.Stderr, "loadgen: -pid:", err)
			os.Exit(2)
		}
	}
	// Watchdog: whatever happens, the process ends.
	deadline := cfg.warmup + cfg.duration + 2*cfg.timeout + 5*time.Second
	time.AfterFunc(deadline, func() {
		fmt.Fprintln(os.Stderr, "loadgen: watchdog fired after", deadline)
		os.Exit(3)
	})
	res := run(cfg)
	res.Label, res.Round = *label, *round
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
	if res.Requests == 0 {
		os.Exit(1)
	}
}

func buildConfig(rawURL, method, connect, caFile, certFile, keyFile string, headers []string,
	conc int, duration, warmup, timeout time.Duration) (*config, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("-url %q: want an absolute http(s) URL", rawURL)
	}
	switch {
	case conc < 1 || conc > 1024:
		return nil, errors.New("-c must be between 1 and 1024")
	case duration <= 0 || duration > maxDuration:
		return nil, fmt.Errorf("-d must be in (0, %s]", maxDuration)
	case warmup < 0 || warmup > maxWarmup:
		return nil, fmt.Errorf("-warmup must be in [0, %s]", maxWarmup)
	case timeout <= 0:
		return nil, errors.New("-timeout must be positive")
	}
	cfg := &config{url: u, method: method, connect: connect, headers: http.Header{},
		conc: conc, duration: duration, warmup: warmup, timeout: timeout}
	for _, h := range headers {
		name, value, ok := strings.Cut(h, ":")
		if !ok || strings.TrimSpace(name) == "" {
			return nil, fmt.Errorf("-header %q: want \"Name: value\"", h)
		}
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		if strings.EqualFold(name, "Host") {
			cfg.host = value
			continue
		}
		cfg.headers.Add(name, value)
	}
	tc := &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-ca %s: no certificate", caFile)
		}
		tc.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("-cert and -key go together")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	cfg.tls = tc
	return cfg, nil
}

// worker state: latencies in microseconds, measured phase only.
type worker struct {
	lat      []int32
	errors   int64
	non2xx   int64
	firstErr string
}

func run(cfg *config) result {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.warmup+cfg.duration)
	defer cancel()
	var measuring atomic.Bool
	start := time.Now()
	measureStart := start.Add(cfg.warmup)
	var cpuStart time.Duration
	cpuStarted := make(chan struct{})
	time.AfterFunc(cfg.warmup, func() {
		if cfg.pid > 0 {
			cpuStart, _ = cpuTime(cfg.pid)
		}
		measuring.Store(true)
		close(cpuStarted)
	})

	workers := make([]*worker, cfg.conc)
	var wg sync.WaitGroup
	for i := range workers {
		w := &worker{lat: make([]int32, 0, 1<<14)}
		workers[i] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.loop(ctx, cfg, &measuring)
		}()
	}
	wg.Wait()
	elapsed := time.Since(measureStart)
	<-cpuStarted
	var cpuUsed time.Duration
	if cfg.pid > 0 {
		if end, err := cpuTime(cfg.pid); err == nil {
			cpuUsed = end - cpuStart
		}
	}

	var res result
	var all []int32
	for _, w := range workers {
		all = append(all, w.lat...)
		res.Errors += w.errors
		res.Non2xx += w.non2xx
		if res.FirstError == "" {
			res.FirstError = w.firstErr
		}
	}
	res.Requests = int64(len(all))
	if elapsed > 0 {
		res.RPS = float64(res.Requests) / elapsed.Seconds()
	}
	if cfg.pid > 0 && res.Requests > 0 {
		res.ServerCPUus = float64(cpuUsed.Microseconds()) / float64(res.Requests)
	}
	slices.Sort(all)
	res.P50us = percentile(all, 0.50)
	res.P99us = percentile(all, 0.99)
	return res
}

// cpuTime returns the user + system CPU time of process pid (all threads),
// from /proc/<pid>/stat, assuming the usual 100 clock ticks per second.
func cpuTime(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may contain spaces: fields restart after ')'.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return 0, errors.New("unexpected /proc stat format")
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("unexpected /proc stat format")
	}
	var ticks int64
	for _, s := range f[11:13] { // utime, stime (fields 14 and 15)
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, err
		}
		ticks += n
	}
	const clockTicks = 100
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

func percentile(sorted []int32, p float64) int64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p+0.5) - 1
	i = max(0, min(i, len(sorted)-1))
	return int64(sorted[i])
}

func (w *worker) loop(ctx context.Context, cfg *config, measuring *atomic.Bool) {
	dialer := &net.Dialer{Timeout: cfg.timeout}
	tr := &http.Transport{
		TLSClientConfig:     cfg.tls.Clone(),
		MaxIdleConnsPerHost: 1,
		MaxConnsPerHost:     1,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
		// A non-nil empty map disables HTTP/2: one HTTP/1.1 connection each.
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if cfg.connect != "" {
				addr = cfg.connect
			}
			return dialer.DialContext(ctx, network, addr)
		},
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: cfg.timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	for ctx.Err() == nil {
		req, err := http.NewRequestWithContext(ctx, cfg.method, cfg.url.String(), nil)
		if err != nil {
			w.fail(err.Error())
			return
		}
		req.Header = cfg.headers.Clone()
		if cfg.host != "" {
			req.Host = cfg.host
		}
		t0 := time.Now()
		resp, err := client.Do(req)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		d := time.Since(t0)
		if ctx.Err() != nil {
			return // cut off by the end of the run: not counted
		}
		if !measuring.Load() {
			continue
		}
		if err != nil {
			w.errors++
			w.fail(err.Error())
			time.Sleep(10 * time.Millisecond) // do not spin on a dead server
			continue
		}
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			w.non2xx++
			w.fail("status " + resp.Status)
		}
		w.lat = append(w.lat, int32(min(d.Microseconds(), 1<<31-1)))
	}
}

func (w *worker) fail(msg string) {
	if w.firstErr == "" {
		w.firstErr = msg
	}
}
