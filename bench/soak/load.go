package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/scopegate/scopegate/bench/internal/childproc"
)

// worker sends requests one after the other on its own keep-alive
// connections: one client per client certificate, HTTP/2 on odd workers.
type worker struct {
	e       *env
	id      int
	h2      bool
	rng     *rand.Rand
	clients [numCerts]*http.Client
	n       int
	stats   *stats

	// mustNotReach: ids of requests expected to be denied that had more
	// than one attempt or no answer; an arrival at the upstream found after
	// the load is a wrong allow.
	mustNotReach map[string]bool

	smallPost, largePost []byte
}

func (e *env) newClient(cert int, h2 bool) *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		// Always 127.0.0.1 (never ::1), whatever "localhost" resolves to;
		// the URL keeps "localhost" for SNI and Host, which Caddy requires
		// to match when client authentication is on.
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			_, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			return d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", port))
		},
		TLSClientConfig:       &tls.Config{RootCAs: e.roots, ServerName: "localhost", Certificates: e.clientCerts[cert]},
		ForceAttemptHTTP2:     h2,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       2 * time.Minute,
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: 45 * time.Second,
	}
	return &http.Client{Transport: tr, Timeout: 60 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func (e *env) newWorker(id int, seed uint64) *worker {
	w := &worker{e: e, id: id, h2: id%2 == 1, rng: rand.New(rand.NewPCG(seed, uint64(id))), stats: newStats(), mustNotReach: map[string]bool{}}
	for c := range w.clients {
		w.clients[c] = e.newClient(c, w.h2)
	}
	w.smallPost = bytes.Repeat([]byte(`{"gift":"mug","note":"thanks"}`), 70)[:2000]
	w.largePost = bytes.Repeat([]byte{'x'}, 1<<20)
	return w
}

func (w *worker) closeIdle() {
	for _, c := range w.clients {
		c.CloseIdleConnections()
	}
}

// result is what came back for one request (its last attempt, when the
// client retried).
type result struct {
	start, end  time.Time
	err         error
	status      int
	code        string // "error" of a JSON error body
	body        []byte
	fromUpstrm  bool // the answer carries the upstream's marker header
	reached     bool // the upstream saw this request (any attempt)
	seen        seenInfo
	requestID   string
	contentType string
	reused      bool   // the last connection used was a kept-alive one
	stage       string // how far the request got (for transport errors)
	gotByte     bool   // a response byte arrived on the last attempt
	conns       int    // connections the transport used for the last attempt (>1: it replayed the request)

	// retried: the first attempt failed at the connection level before any
	// response byte and the client sent the request once more on a new
	// connection; first describes that failure.
	retried bool
	first   *result
}

// idempotent reports whether the client may send the request again
// (RFC 9110 section 9.2.2): a safe or idempotent method, or a POST that
// carries an Idempotency-Key (every POST of this load does: the client
// knows they are repeatable). Go's transport uses the same rule for its own
// replays on kept-alive connections.
func idempotent(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return req.Header.Get("Idempotency-Key") != "" || req.Header.Get("X-Idempotency-Key") != ""
}

// connFailure reports whether err is a connection-level failure that a
// retry may cover: the server closed or reset the connection (EOF, reset,
// broken pipe). Timeouts, TLS verification errors and refused connections
// are not: they would say something is wrong, and a retry would hide it.
func connFailure(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	msg := err.Error()
	return strings.HasSuffix(msg, ": EOF") || strings.Contains(msg, "connection reset by peer") ||
		strings.Contains(msg, "broken pipe")
}

// do sends one request. A request that failed at the connection level
// before any response byte is sent once more, on a new connection, when
// it is idempotent: what a well-behaved HTTP client does (and what the
// operators' guidance asks of clients), since Go's transport replays only
// on kept-alive connections. A safe request (GET, HEAD, OPTIONS) is sent
// again also when the connection broke after the first bytes of its
// response but before the end of it, as browsers do: repeating it changes
// nothing (RFC 9110 §9.2.1), and a reload can close a kept-alive
// connection at that moment (seen once in a CI run: a GET with one
// response byte, then EOF). A deterministic break would break the retry
// too and still fail the run. Both attempts carry the same X-Soak-Id, so
// the upstream's record covers both: a denied request whose first attempt
// reached the upstream is still a wrong allow.
func (w *worker) do(ctx context.Context, s *site, p *plan) *result {
	w.n++
	id := fmt.Sprintf("w%d-%d", w.id, w.n)
	a := w.attempt(ctx, s, p, id)
	r := a.result
	safe := p.method == http.MethodGet || p.method == http.MethodHead || p.method == http.MethodOptions
	if r.err != nil && (!r.gotByte || safe) && a.idempotent && connFailure(r.err) && ctx.Err() == nil {
		first := r
		// Every connection of this client is idle now (the worker sends one
		// request at a time): dropping them makes the retry dial anew.
		w.clients[p.cert].CloseIdleConnections()
		r = w.attempt(ctx, s, p, id).result
		r.retried, r.first = true, first
		r.start = first.start // the request spans both attempts
	}
	r.seen, r.reached = w.e.up.take(id)
	return r
}

// attemptResult is one client.Do: a result plus whether it may be retried.
type attemptResult struct {
	*result
	idempotent bool
}

func (w *worker) attempt(ctx context.Context, s *site, p *plan, id string) attemptResult {
	r := &result{requestID: id, stage: "dialing"}
	var body io.Reader
	if p.body != nil {
		body = bytes.NewReader(p.body) // NewRequest sets GetBody: replayable
	}
	req, err := http.NewRequestWithContext(ctx, p.method, s.url(p.path), body)
	if err != nil {
		r.err = fmt.Errorf("building the request: %v", err)
		return attemptResult{result: r}
	}
	req.Header.Set("X-Soak-Id", id)
	if p.method == http.MethodPost {
		// The client knows its POSTs are repeatable (the upstream could
		// deduplicate by this key): RFC 9110 lets it retry them, and Go's
		// transport replays them like GETs on a kept-alive connection.
		req.Header.Set("Idempotency-Key", "soak-"+id)
	}
	if p.key != "" {
		req.Header.Set("Authorization", "Bearer "+p.key)
	}
	for _, h := range p.hdr {
		req.Header.Add(h[0], h[1])
	}
	// The hooks run on the transport's goroutines; mu orders their writes
	// with the reads after Do returned.
	var mu sync.Mutex
	set := func(f func()) { mu.Lock(); f(); mu.Unlock() }
	req = req.WithContext(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) {
			set(func() { r.conns++; r.reused, r.stage = info.Reused, "connected" })
		},
		TLSHandshakeDone: func(_ tls.ConnectionState, err error) {
			if err == nil {
				set(func() { r.stage = "TLS handshake done" })
			}
		},
		WroteRequest: func(info httptrace.WroteRequestInfo) {
			if info.Err == nil {
				set(func() { r.stage = "request written" })
			}
		},
		GotFirstResponseByte: func() { set(func() { r.stage, r.gotByte = "response started", true }) },
	}))
	idem := idempotent(req)
	r.start = time.Now()
	resp, err := w.clients[p.cert].Do(req)
	if err == nil {
		r.body, err = io.ReadAll(io.LimitReader(resp.Body, 256<<20))
		resp.Body.Close()
		r.status = resp.StatusCode
		r.fromUpstrm = resp.Header.Get("X-Soak-Upstream") != ""
		r.contentType = resp.Header.Get("Content-Type")
	}
	r.end = time.Now()
	mu.Lock()
	r.err = err
	if r.status != 0 {
		r.gotByte = true
	}
	mu.Unlock()
	if r.err == nil && r.status >= 400 && len(r.body) < 200 {
		var eb struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(r.body, &eb) == nil {
			r.code = eb.Error
		}
	}
	return attemptResult{result: r, idempotent: idem}
}

// failKind names a connection-level failure by what bench/reload.sh
// found (README, "Reloads under load"): k1 a POST on a kept-alive
// HTTP/1.1 connection, k2 another method on one, k3 a new connection
// reset before the request was written, k4 a new connection that got EOF
// after it; h2 anything on HTTP/2.
func (w *worker) failKind(p *plan, r *result) string {
	switch {
	case w.h2 && r.reused:
		return "h2-kept-alive"
	case r.reused && p.method == http.MethodPost:
		return "k1"
	case r.reused:
		return "k2"
	case r.stage != "request written":
		return "k3"
	default:
		return "k4"
	}
}

// judge compares an answer with the plan and counts it.
func (w *worker) judge(s *site, p *plan, r *result) {
	st := w.stats
	cs := st.class(p.class)
	st.Requests++
	cs.Requests++
	st.BytesRead += int64(len(r.body))
	fail := func(kind, format string, a ...any) {
		st.Failures++
		if len(st.Examples) < 20 {
			st.Examples = append(st.Examples, fmt.Sprintf("t=%.1fs %s site=%s case=%s %s: %s",
				r.start.Sub(w.e.start).Seconds(), kind, s.name, p.caseName, p, fmt.Sprintf(format, a...)))
		}
	}
	exp := p.expected(r.start, r.end)
	if r.retried {
		w.countRetry(p, r)
	}
	if r.conns > 1 || (r.first != nil && r.first.conns > 1) {
		st.Replayed++
		if w.e.faultAt(r.start, r.end) == "reload" {
			st.ReplayedInReload++
		}
	}
	if r.seen.arrivals > 1 {
		st.DuplicateArrivals++
	}
	if exp == expDeny && (r.retried || r.err != nil || r.conns > 1) {
		// An attempt of this request may still reach the upstream after
		// this judgement: checked once the load is over (lateArrivals).
		w.mustNotReach[r.requestID] = true
	}
	if r.err != nil {
		cs.count("transport_error")
		st.TransportErrors++
		kind := w.failKind(p, r)
		st.TransportKinds[kind]++
		if r.reached && exp == expDeny {
			st.WrongAllows++
			st.WrongDecisions++
			fail("WRONG-ALLOW", "expected %d %s, got no answer, but the request reached the upstream", p.denyStatus, p.denyCode)
		}
		switch w.e.faultAt(r.start, r.end) {
		case "reload":
			st.TransportInReload++
			if kind == "k3" {
				st.TransportInReloadK3++
			}
		case "outage":
			st.TransportInOutage++
		default:
			st.TransportOther++
		}
		proto := protoName(w.h2)
		conn := "new connection"
		if r.reused {
			conn = "kept-alive connection"
			st.TransportReused++
		}
		retried := ""
		if r.retried {
			retried = fmt.Sprintf(", after a retry of a %s failure (%v)", w.failKind(p, r.first), r.first.err)
		}
		fail("TRANSPORT", "[%s] %v (%s, %s, last stage: %s, request %s, %.0f ms%s)", kind, r.err, proto, conn, r.stage, r.requestID, r.end.Sub(r.start).Seconds()*1000, retried)
		return
	}
	label := strconv.Itoa(r.status)
	if r.code != "" {
		label += " " + r.code
	}
	cs.count(label)

	outage := s.redis && p.needsStore && w.e.inOutage(r.start, r.end)
	if outage && exp == expAllow {
		st.outageBucket(r.start.Sub(w.e.faultKillAt()), r.status)
	}
	if r.status == http.StatusServiceUnavailable && r.code == "store_unavailable" && outage {
		st.Outage503++
		if r.reached {
			st.IdentityProblems++
			fail("IDENTITY", "answered 503 but the request reached the upstream")
		}
		return
	}
	if r.status >= 500 {
		if r.fromUpstrm {
			st.Upstream5xx++
			fail("UPSTREAM-5XX", "%s", label)
			return
		}
		if r.status == http.StatusServiceUnavailable && r.code == "store_unavailable" && s.redis {
			// Redis was up (outside the outage window): the lookup did
			// not finish within its bound.
			st.Store503++
			fail("STORE-503", "503 store_unavailable while Redis was up")
			return
		}
		st.Gateway5xx++
		fail("GATEWAY-5XX", "%s (body %q)", label, trunc(r.body, 120))
		return
	}

	allowed := r.status >= 200 && r.status < 300
	if exp == expEither {
		st.Transition++
	}
	if exp == expDeny && (allowed || r.reached) {
		st.WrongAllows++
		st.WrongDecisions++
		fail("WRONG-ALLOW", "expected %d %s, got %s (reached upstream: %v)", p.denyStatus, p.denyCode, label, r.reached)
		return
	}
	if allowed {
		st.Allowed++
		if exp == expEither {
			st.TransitionAllowed++
		}
		if outage {
			st.OutageAllowed++
		}
		if r.status != p.allowStatus {
			st.WrongDecisions++
			fail("WRONG-STATUS", "expected %d, got %s", p.allowStatus, label)
			return
		}
		if problem, leak := w.verify(p, r.body); problem != "" {
			st.WrongDecisions++
			if leak {
				st.PIILeaks++
				fail("PII-LEAK", "%s", problem)
			} else {
				fail("WRONG-BODY", "%s", problem)
			}
			return
		}
		switch {
		case !r.reached:
			st.IdentityProblems++
			fail("IDENTITY", "allowed, but the upstream never saw the request")
		case r.seen.auth:
			st.IdentityProblems++
			fail("IDENTITY", "the Authorization header reached the upstream")
		case p.checkKeyID && r.seen.keyID != p.keyID:
			st.IdentityProblems++
			fail("IDENTITY", "upstream saw X-Key-Id %q, want %q", r.seen.keyID, p.keyID)
		}
		return
	}
	st.Denied++
	if outage {
		st.OutageDenied++
	}
	if exp == expAllow {
		st.WrongDecisions++
		fail("WRONG-DENY", "expected %d, got %s", p.allowStatus, label)
		return
	}
	if exp == expEither {
		st.TransitionDenied++
	}
	if r.status != p.denyStatus || r.code != p.denyCode {
		st.WrongDecisions++
		fail("WRONG-DENY-CODE", "expected %d %s, got %s", p.denyStatus, p.denyCode, label)
	}
}

// countRetry records a retried request: which failure the retry covered,
// during which fault, and what the retry got (its answer is judged in full
// like any other).
func (w *worker) countRetry(p *plan, r *result) {
	st := w.stats
	st.Retries++
	kind := w.failKind(p, r.first)
	st.RetryKinds[kind]++
	where := w.e.faultAt(r.first.start, r.first.end)
	switch where {
	case "reload":
		st.RetriesInReload++
	case "outage":
		st.RetriesInOutage++
	default:
		st.RetriesOther++
		where = "no fault"
	}
	if r.err == nil {
		st.RetriesAnswered++
	}
	if len(st.RetryExamples) < 12 {
		got := fmt.Sprintf("retry answered %d", r.status)
		if r.err != nil {
			got = fmt.Sprintf("retry failed too: %v", r.err)
		}
		st.RetryExamples = append(st.RetryExamples, fmt.Sprintf("t=%.1fs %s (%s) %s %s: [%s] %v (last stage: %s); %s",
			r.first.start.Sub(w.e.start).Seconds(), where, protoName(w.h2), p.method, p.path, kind, r.first.err, r.first.stage, got))
	}
}

func protoName(h2 bool) string {
	if h2 {
		return "HTTP/2"
	}
	return "HTTP/1.1"
}

// verify checks an allowed body. leak is true when PII is where it must
// not be.
func (w *worker) verify(p *plan, body []byte) (problem string, leak bool) {
	want := w.e.up.bodies[p.verifyPath]
	switch p.verify {
	case vExact:
		if !bytes.Equal(body, want) {
			if !hasPII(body) {
				return fmt.Sprintf("expected the unmasked body (%d bytes), got a body without PII (%d bytes)", len(want), len(body)), false
			}
			return fmt.Sprintf("expected the upstream's body byte for byte (%d bytes), got %d bytes", len(want), len(body)), false
		}
	case vHealth:
		if !bytes.Equal(bytes.TrimSpace(body), want) {
			return fmt.Sprintf("expected %s, got %q", want, trunc(body, 80)), false
		}
	case vMasked, vPost:
		if hasPII(body) {
			return fmt.Sprintf("masked body (%d bytes) contains PII", len(body)), true
		}
		if !json.Valid(body) {
			return fmt.Sprintf("masked body is not valid JSON (%d bytes): %q", len(body), trunc(body, 80)), false
		}
		if !bytes.Contains(body, []byte(`"[REDACTED]"`)) {
			return "masked body has no [REDACTED]", false
		}
		if n, wantN := bytes.Count(body, idMarker), w.e.up.ids[p.verifyPath]; n != wantN {
			return fmt.Sprintf("masked body has %d records, the upstream sent %d", n, wantN), false
		}
		if p.verify == vPost && !bytes.Contains(body, []byte(`"received":`+strconv.Itoa(len(p.body)))) {
			return fmt.Sprintf("the upstream did not receive the %d-byte request body: %q", len(p.body), trunc(body, 120)), false
		}
	}
	return "", false
}

func trunc(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}

// pickCase draws a case by weight.
func (w *worker) pickCase() *loadCase {
	n := w.rng.IntN(totalWeight)
	for i := range cases {
		if n < cases[i].weight {
			return &cases[i]
		}
		n -= cases[i].weight
	}
	return &cases[0]
}

var totalWeight = func() int {
	t := 0
	for _, c := range cases {
		t += c.weight
	}
	return t
}()

// loop runs requests until the load ends (in-flight requests finish; only
// an interrupt cancels them). While the quiet gate is on it sends nothing.
func (w *worker) loop(ctx context.Context, until time.Time) {
	q := &w.e.quiet
	for ctx.Err() == nil && time.Now().Before(until) {
		select {
		case <-w.e.caddyDone:
			return
		default:
		}
		q.inflight.Add(1)
		if q.on.Load() {
			q.inflight.Add(-1)
			time.Sleep(20 * time.Millisecond)
			continue
		}
		s := w.e.sites[w.rng.IntN(len(w.e.sites))]
		c := w.pickCase()
		p := c.build(w, s)
		if p == nil {
			c = &cases[0]
			p = c.build(w, s)
		}
		p.caseName, p.class = c.name, c.class
		r := w.do(ctx, s, p)
		q.inflight.Add(-1)
		if ctx.Err() != nil {
			return // interrupted: not an answer to judge
		}
		w.judge(s, p, r)
	}
}

// quietGate pauses the load so that memory can be sampled with no request
// in flight (the same state as after the load), keeping every connection.
type quietGate struct {
	on       atomic.Bool
	inflight atomic.Int64
}

// quietSample stops the load, waits until nothing is in flight (30 s at
// most), takes a memory sample and lets the load go on.
func (e *env) quietSample(ctx context.Context, mem *memory, phase string) {
	e.quiet.on.Store(true)
	defer e.quiet.on.Store(false)
	deadline := time.Now().Add(30 * time.Second)
	for idle := 0; idle < 5 && time.Now().Before(deadline) && ctx.Err() == nil; {
		if e.quiet.inflight.Load() == 0 {
			idle++
		} else {
			idle = 0
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Both quiet points start from the same connection state: the clients
	// drop their kept-alive connections, and the upstream closes Caddy's
	// (reverse_proxy keeps idle upstream connections of the transports of
	// configs replaced by a reload for their 2-minute idle timeout: counted
	// here, then closed, so that they do not pass for a leak).
	e.upConns[phase] = e.up.conns.Load()
	for _, w := range e.workers {
		w.closeIdle()
	}
	e.up.srv.CloseClientConnections()
	// Past write_idle, so that the buffers pinned by the write-deadline
	// timers of streams that failed (Caddy + x/net, not ours: see
	// bench/README.md) are free again and are not counted as growth.
	// Only where memory is judged (30 s or more): in a SHORT run the pause
	// would swallow the compressed fault schedule (the Redis outage).
	wait := 1500 * time.Millisecond
	switch idle := e.cfg.writeIdle; {
	case e.cfg.duration < 30*time.Second:
	case idle == 0:
		wait = max(wait, 61*time.Second)
	default:
		wait = max(wait, idle+time.Second)
	}
	sleepUntil(ctx, time.Now().Add(wait))
	t := time.Since(e.start)
	if phase == "idle-before" {
		t = 0
	}
	mem.sample(ctx, phase, t)
}

// stats are one worker's counts; merged at the end.
type stats struct {
	Requests, Allowed, Denied, BytesRead int64

	WrongDecisions   int64 `json:"wrong_decisions"`
	WrongAllows      int64 `json:"wrong_allows"`
	PIILeaks         int64 `json:"pii_leaks"`
	Gateway5xx       int64 `json:"gateway_5xx"`
	Upstream5xx      int64 `json:"upstream_5xx"`
	Store503         int64 `json:"store_503_redis_up"`
	IdentityProblems int64 `json:"identity_problems"`

	TransportErrors   int64 `json:"transport_errors"`
	TransportInReload int64 `json:"transport_errors_in_reload"`
	TransportInOutage int64 `json:"transport_errors_in_outage"`
	TransportOther    int64 `json:"transport_errors_other"`
	TransportReused   int64 `json:"transport_errors_on_kept_alive_connections"`
	// TransportKinds: failures by kind (k1..k4, h2-kept-alive; failKind).
	TransportKinds      map[string]int64 `json:"transport_errors_by_kind"`
	TransportInReloadK3 int64            `json:"transport_errors_in_reload_k3"`

	// Retries: requests sent a second time, on a new connection, after a
	// connection-level failure before any response byte (the answer of the
	// retry is what was judged).
	Retries         int64            `json:"retries"`
	RetriesInReload int64            `json:"retries_in_reload"`
	RetriesInOutage int64            `json:"retries_in_outage"`
	RetriesOther    int64            `json:"retries_outside_faults"`
	RetriesAnswered int64            `json:"retries_answered"`
	RetryKinds      map[string]int64 `json:"retries_by_kind"`
	RetryExamples   []string         `json:"retry_examples"`
	// Replayed: requests Go's transport itself sent again on a new
	// connection after a kept-alive one failed (GETs, POSTs with an
	// Idempotency-Key).
	Replayed         int64 `json:"transport_replays"`
	ReplayedInReload int64 `json:"transport_replays_in_reload"`
	// DuplicateArrivals: requests that reached the upstream twice (a
	// replay or retry of one that had arrived; the Idempotency-Key lets a
	// real upstream deduplicate POSTs).
	DuplicateArrivals int64 `json:"duplicate_arrivals"`
	// LateArrivals: arrivals at the upstream found only after the load,
	// of requests already judged; LateWrongAllows of them were expected to
	// be denied (also counted as wrong allows).
	LateArrivals    int64 `json:"late_arrivals"`
	LateWrongAllows int64 `json:"late_wrong_allows"`

	Transition        int64 `json:"in_transition"`
	TransitionAllowed int64 `json:"in_transition_allowed"`
	TransitionDenied  int64 `json:"in_transition_denied"`

	Outage503     int64 `json:"outage_503"`
	OutageAllowed int64 `json:"outage_allowed"`
	OutageDenied  int64 `json:"outage_denied"`
	// OutageTimeline: Redis-site requests with a valid key (expected to be
	// allowed) during the outage window, by second since the kill:
	// [allowed, 503, other].
	OutageTimeline map[int]*[3]int64 `json:"outage_timeline"`

	Classes  map[string]*classStats `json:"classes"`
	Failures int64                  `json:"failures"`
	Examples []string               `json:"examples"`
}

type classStats struct {
	Requests int64            `json:"requests"`
	Outcomes map[string]int64 `json:"outcomes"`
}

func newStats() *stats {
	return &stats{Classes: map[string]*classStats{}, OutageTimeline: map[int]*[3]int64{},
		TransportKinds: map[string]int64{}, RetryKinds: map[string]int64{}}
}

func (s *stats) class(name string) *classStats {
	c := s.Classes[name]
	if c == nil {
		c = &classStats{Outcomes: map[string]int64{}}
		s.Classes[name] = c
	}
	return c
}

func (c *classStats) count(label string) { c.Outcomes[label]++ }

func (s *stats) outageBucket(sinceKill time.Duration, status int) {
	sec := int(sinceKill.Seconds())
	if sinceKill < 0 {
		sec = -1
	}
	b := s.OutageTimeline[sec]
	if b == nil {
		b = &[3]int64{}
		s.OutageTimeline[sec] = b
	}
	switch {
	case status >= 200 && status < 300:
		b[0]++
	case status == http.StatusServiceUnavailable:
		b[1]++
	default:
		b[2]++
	}
}

func (s *stats) merge(o *stats) {
	s.Requests += o.Requests
	s.Allowed += o.Allowed
	s.Denied += o.Denied
	s.BytesRead += o.BytesRead
	s.WrongDecisions += o.WrongDecisions
	s.WrongAllows += o.WrongAllows
	s.PIILeaks += o.PIILeaks
	s.Gateway5xx += o.Gateway5xx
	s.Upstream5xx += o.Upstream5xx
	s.Store503 += o.Store503
	s.IdentityProblems += o.IdentityProblems
	s.TransportErrors += o.TransportErrors
	s.TransportInReload += o.TransportInReload
	s.TransportInOutage += o.TransportInOutage
	s.TransportOther += o.TransportOther
	s.TransportReused += o.TransportReused
	s.TransportInReloadK3 += o.TransportInReloadK3
	s.Retries += o.Retries
	s.RetriesInReload += o.RetriesInReload
	s.RetriesInOutage += o.RetriesInOutage
	s.RetriesOther += o.RetriesOther
	s.RetriesAnswered += o.RetriesAnswered
	s.Replayed += o.Replayed
	s.ReplayedInReload += o.ReplayedInReload
	s.DuplicateArrivals += o.DuplicateArrivals
	s.LateArrivals += o.LateArrivals
	s.LateWrongAllows += o.LateWrongAllows
	for k, v := range o.TransportKinds {
		s.TransportKinds[k] += v
	}
	for k, v := range o.RetryKinds {
		s.RetryKinds[k] += v
	}
	for _, ex := range o.RetryExamples {
		if len(s.RetryExamples) < 20 {
			s.RetryExamples = append(s.RetryExamples, ex)
		}
	}
	s.Transition += o.Transition
	s.TransitionAllowed += o.TransitionAllowed
	s.TransitionDenied += o.TransitionDenied
	s.Outage503 += o.Outage503
	s.OutageAllowed += o.OutageAllowed
	s.OutageDenied += o.OutageDenied
	for k, v := range o.OutageTimeline {
		b := s.OutageTimeline[k]
		if b == nil {
			b = &[3]int64{}
			s.OutageTimeline[k] = b
		}
		for i := range b {
			b[i] += v[i]
		}
	}
	for name, c := range o.Classes {
		m := s.class(name)
		m.Requests += c.Requests
		for l, n := range c.Outcomes {
			m.Outcomes[l] += n
		}
	}
	s.Failures += o.Failures
	for _, ex := range o.Examples {
		if len(s.Examples) < 30 {
			s.Examples = append(s.Examples, ex)
		}
	}
}

// runLoad runs the workers, the faults and the memory sampler for the
// configured duration and returns the report.
func (e *env) runLoad(ctx context.Context) *report {
	cfg := e.cfg
	rep := &report{Duration: cfg.duration.String(), Workers: cfg.workers, Seed: cfg.seed, Short: cfg.short,
		PortBase: cfg.portBase, AdminPort: cfg.adminPort, CacheTTL: cfg.cacheTTL.String(),
		SettleFile: cfg.settleFile.String(), SettleRedis: cfg.settleRedis.String(), RecoverGrace: cfg.recoverGrace.Seconds()}
	rep.LoadBefore = childproc.LoadAvg()
	mem := &memory{e: e}
	e.workers = make([]*worker, cfg.workers)
	for i := range e.workers {
		e.workers[i] = e.newWorker(i, cfg.seed)
	}
	e.upConns = map[string]int64{}
	e.quietSample(ctx, mem, "idle-before")

	e.start = time.Now()
	until := e.start.Add(cfg.duration)
	loadCtx, cancel := context.WithDeadline(ctx, until)
	defer cancel()
	logf("load: %d workers for %v (faults: reload every %v, key churn every %v, Redis killed at %v for %v)",
		cfg.workers, cfg.duration, cfg.reloadEvery, cfg.churnEvery, cfg.outageAt, cfg.outageFor)

	var fwg sync.WaitGroup
	start := func(enabled bool, f func()) {
		if enabled {
			fwg.Add(1)
			go func() { defer fwg.Done(); f() }()
		}
	}
	start(cfg.faults["reload"], func() { e.reloader(loadCtx, until) })
	start(cfg.faults["churn"], func() { e.churner(loadCtx) })
	start(cfg.faults["redis"], func() { e.outageFault(ctx, loadCtx) })
	start(true, func() { mem.run(loadCtx) })

	fwg.Add(1)
	go func() {
		// The quiet point after warm-up (idle-mid) is the reference for
		// the memory comparison with the one after the load; runs of 30 s
		// or more also pause at 50 % and 75 %, to show the trend.
		defer fwg.Done()
		points := []struct {
			at    time.Duration
			phase string
		}{{cfg.duration / 4, "idle-mid"}}
		if cfg.duration >= 30*time.Second {
			points = append(points, struct {
				at    time.Duration
				phase string
			}{cfg.duration / 2, "idle-50%"}, struct {
				at    time.Duration
				phase string
			}{cfg.duration * 3 / 4, "idle-75%"})
		}
		for _, pt := range points {
			if !sleepUntil(loadCtx, e.start.Add(pt.at)) {
				return
			}
			e.quietSample(loadCtx, mem, pt.phase)
		}
	}()

	workers := e.workers
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func(w *worker) { defer wg.Done(); w.loop(ctx, until) }(workers[i])
	}
	wg.Wait()
	rep.Elapsed = time.Since(e.start).Seconds()
	rep.LoadAfter = childproc.LoadAvg()
	cancel()
	fwg.Wait()
	logf("load done after %.1fs; final samples", rep.Elapsed)

	select {
	case <-e.caddyDone:
		rep.CaddyExited = true
	default:
		// Workers keep their connections until this sample, as at idle-mid.
		e.quietSample(ctx, mem, "idle-after")
		rep.Metrics = e.scopegateMetrics(ctx)
	}
	rep.UpstreamConns = e.upConns

	total := newStats()
	for _, w := range workers {
		total.merge(w.stats)
	}
	e.lateArrivals(total)
	rep.Stats = total
	rep.Samples = mem.samples
	rep.SampleErrors = mem.errors
	e.faultReport(rep)
	rep.StoreLog = e.storeEvidence()
	rep.Network, rep.MigrateReq = "host network namespace", migrateReq()
	if cfg.privateNet {
		rep.Network = "private network namespace (unshare -n, loopback only)"
	}
	rep.judge(cfg, mem)
	return rep
}

// lateArrivals looks, after the load (and the final quiet point, which
// waited for everything in flight), for upstream arrivals that no answer
// took: an attempt that Caddy forwarded after the client had given up on
// it. One of a request that had to be denied is a wrong allow, whatever
// the client was answered.
func (e *env) lateArrivals(st *stats) {
	for id, si := range e.up.leftover() {
		st.LateArrivals++
		for _, w := range e.workers {
			if w.mustNotReach[id] {
				st.LateWrongAllows++
				st.WrongAllows++
				st.WrongDecisions++
				st.Failures++
				if len(st.Examples) < 30 {
					st.Examples = append(st.Examples, fmt.Sprintf("WRONG-ALLOW request %s was expected to be denied, yet reached the upstream %d time(s) after it was judged", id, si.arrivals))
				}
			}
		}
	}
}

func logf(format string, a ...any) {
	fmt.Printf("%s soak: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, a...))
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
