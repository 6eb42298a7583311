package caddyredact

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/scopegate/scopegate/internal/jsonmask"
)

// ownerWriter is a client ResponseWriter that fails the test if two
// goroutines ever use it at once (the pipeline must own it alone), records
// what it was given, and can break after a number of bytes like a client
// that went away.
type ownerWriter struct {
	t       *testing.T
	h       http.Header
	busy    atomic.Bool
	mu      sync.Mutex
	body    bytes.Buffer
	status  int
	flushes int
	breakAt int // > 0: Write fails once this many bytes were written

	gate      chan struct{} // non-nil: Write waits until it is closed
	gateFails bool          // then fails
}

func (w *ownerWriter) enter() {
	if !w.busy.CompareAndSwap(false, true) {
		w.t.Error("the client's ResponseWriter is used by two goroutines at once")
	}
}

func (w *ownerWriter) leave() { w.busy.Store(false) }

func (w *ownerWriter) Header() http.Header { return w.h }

func (w *ownerWriter) WriteHeader(status int) {
	w.enter()
	defer w.leave()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.status == 0 {
		w.status = status
	}
}

func (w *ownerWriter) Write(p []byte) (int, error) {
	w.enter()
	defer w.leave()
	if w.gate != nil {
		<-w.gate
		if w.gateFails {
			return 0, errors.New("client went away")
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.status == 0 {
		w.status = 200
	}
	if w.breakAt > 0 && w.body.Len()+len(p) > w.breakAt {
		return 0, errors.New("client went away")
	}
	return w.body.Write(p)
}

func (w *ownerWriter) Flush() {
	w.enter()
	defer w.leave()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.flushes++
}

func (w *ownerWriter) result() (int, string, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.status, w.body.String(), w.flushes
}

// serve runs the handler with next writing body in the given chunk sizes
// (cycled), flushing every flushEvery writes (0: never), then returning
// nextErr. It returns the handler's error and whether it aborted with
// http.ErrAbortHandler.
func serve(t *testing.T, h *Redact, w http.ResponseWriter, body []byte, sizes []int, flushEvery int, nextErr ...error) (err error, aborted bool) {
	t.Helper()
	r := caddyhttp.PrepareRequest(httptest.NewRequest("GET", "/", nil), caddy.NewReplacer(), w, nil)
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Content-Type", "application/json")
		for k := 0; len(body) > 0; k++ {
			n := min(len(body), sizes[k%len(sizes)])
			if _, err := w.Write(body[:n]); err != nil {
				return err
			}
			body = body[n:]
			if flushEvery > 0 && k%flushEvery == flushEvery-1 {
				if err := http.NewResponseController(w).Flush(); err != nil {
					return err
				}
			}
		}
		return errors.Join(nextErr...)
	})
	defer func() {
		if rec := recover(); rec != nil {
			if rec != http.ErrAbortHandler {
				panic(rec)
			}
			aborted = true
		}
	}()
	return h.ServeHTTP(w, r, next), false
}

// TestPipelineStreams: past max_buffer the body is masked by the
// pipeline's goroutine; the output is byte for byte the masker's, whatever
// the write sizes (larger than a pipeline buffer included) and flushes.
func TestPipelineStreams(t *testing.T) {
	h := provisioned(t, &Redact{MaxBuffer: 4096})
	doc := denseDoc(600 << 10)
	var want bytes.Buffer
	if _, err := h.mask.Copy(&want, bytes.NewReader(doc), jsonmask.ModeJSON); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		sizes      []int
		flushEvery int
	}{
		{[]int{32 << 10}, 0},
		{[]int{1, 7, 4096, 100 << 10, 3, 65 << 10, 64 << 10}, 3},
		{[]int{513}, 1},
	} {
		w := &ownerWriter{t: t, h: http.Header{}}
		err, aborted := serve(t, h, w, doc, tc.sizes, tc.flushEvery)
		if err != nil || aborted {
			t.Fatalf("sizes %v: %v, aborted %v", tc.sizes, err, aborted)
		}
		status, got, flushes := w.result()
		if status != 200 || got != want.String() {
			t.Fatalf("sizes %v: status %d, %d bytes, want %d bytes identical to the masker's", tc.sizes, status, len(got), want.Len())
		}
		if tc.flushEvery > 0 && flushes == 0 {
			t.Errorf("sizes %v: no flush reached the client", tc.sizes)
		}
		if strings.Contains(got, "@acme.test") {
			t.Errorf("an email reached the client")
		}
	}
}

// TestPipelineInvalidAfterCommit: invalid JSON found by the pipeline's
// goroutine after the response was committed aborts it; the client got
// only masked output (a prefix of what the masker writes for the valid
// part and what the masker wrote before the error), never the bytes
// around the error.
func TestPipelineInvalidAfterCommit(t *testing.T) {
	h := provisioned(t, &Redact{MaxBuffer: 4096})
	doc := denseDoc(300 << 10)
	valid := doc[:len(doc)-2] // the document without "]}"
	for _, tail := range []string{`,{"email":"ada@acme.test"`, `,{"email":"ada@acme.test"}}` + strings.Repeat(" ", 200<<10), `,"email"` + strings.Repeat(`x`, 100<<10)} {
		body := append(append([]byte(nil), valid...), tail...)
		// The most the masker itself writes before the error: fed one
		// byte at a time, it writes everything decided after each byte.
		// Whatever batches the pipeline forms, the client gets a prefix.
		var want bytes.Buffer
		s := h.mask.NewStream(&want)
		for k := range body {
			if _, err := s.Write(body[k : k+1]); err != nil {
				break
			}
		}
		w := &ownerWriter{t: t, h: http.Header{}}
		_, aborted := serve(t, h, w, body, []int{32 << 10}, 0)
		if !aborted {
			t.Errorf("tail %.30q: not aborted", tail)
		}
		_, got, _ := w.result()
		if !strings.HasPrefix(want.String(), got) || strings.Contains(got, "ada@") {
			t.Errorf("tail %.30q: the client got more than the masked valid part", tail)
		}
	}
}

// TestPipelineClientGone: a client that stops reading ends the response
// (no deadlock, no goroutine left writing).
func TestPipelineClientGone(t *testing.T) {
	h := provisioned(t, &Redact{MaxBuffer: 4096})
	doc := denseDoc(2 << 20)
	w := &ownerWriter{t: t, h: http.Header{}, breakAt: 100 << 10}
	err, aborted := serve(t, h, w, doc, []int{32 << 10}, 0)
	if err == nil && !aborted {
		t.Fatal("a broken client connection went unnoticed")
	}
	_, got, _ := w.result()
	if len(got) > 100<<10 {
		t.Fatalf("%d bytes written past the break", len(got))
	}
}

// TestPipelineFlushDelivers: a Flush does not wait, but once it returned
// the client gets every masked byte of the input written before it, and a
// flush, without any further Write (an upstream that pauses after a
// flush): exactly what the masker itself has written after the same
// writes, never more.
func TestPipelineFlushDelivers(t *testing.T) {
	h := provisioned(t, &Redact{MaxBuffer: 4096})
	doc := denseDoc(400 << 10)
	ref := &bytes.Buffer{}
	s := h.mask.NewStream(ref)
	w := &ownerWriter{t: t, h: http.Header{}}
	r := caddyhttp.PrepareRequest(httptest.NewRequest("GET", "/", nil), caddy.NewReplacer(), w, nil)
	checks := 0
	next := caddyhttp.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) error {
		rw.Header().Set("Content-Type", "application/json")
		for k, p := 0, doc; len(p) > 0; k++ {
			n := min(len(p), 5000)
			if _, err := rw.Write(p[:n]); err != nil {
				return err
			}
			if _, err := s.Write(p[:n]); err != nil {
				return err
			}
			p = p[n:]
			if k%7 == 6 {
				_, _, before := w.result()
				if err := http.NewResponseController(rw).Flush(); err != nil {
					return err
				}
				deadline := time.Now().Add(10 * time.Second)
				for {
					_, got, flushes := w.result()
					if !strings.HasPrefix(ref.String(), got) {
						t.Fatalf("the client has %d bytes that are not the masker's output", len(got))
					}
					if got == ref.String() && flushes > before {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("10 s after a flush the client has %d bytes and %d flushes, the masker wrote %d", len(got), flushes, ref.Len())
					}
					time.Sleep(time.Millisecond)
				}
				checks++
			}
		}
		return nil
	})
	if err := h.ServeHTTP(w, r, next); err != nil {
		t.Fatal(err)
	}
	if checks < 10 {
		t.Fatalf("only %d flushes checked", checks)
	}
}

// startTestPipeline sets up a committed masked response streaming through
// the pipeline, as Write does past max_buffer, for tests that drive the
// pipeline directly.
func startTestPipeline(t *testing.T, w *ownerWriter) *maskWriter {
	t.Helper()
	h := provisioned(t, &Redact{})
	r := caddyhttp.PrepareRequest(httptest.NewRequest("GET", "/", nil), caddy.NewReplacer(), w, nil)
	mw := newMaskWriter(w, r, h)
	mw.state, mw.status, mw.committed = stateMask, 200, true
	mw.stream = h.mask.NewStreamMode(sinkWriter{mw}, jsonmask.ModeJSON)
	mw.startPipeline()
	if mw.pl == nil {
		t.Fatal("no pipeline")
	}
	return mw
}

// TestPipelineBufferOwnership: the pipeline fails (the handler aborts, or
// the client breaks off) while the masker waits for an output buffer. The
// buffer it had just handed over belongs to the write goroutine from then
// on; were the Stream to keep it as well, one array would go back to the
// pool twice and be shared by two later responses (one client could get
// bytes of another's). stop's check counts any such buffer; it must find
// none.
func TestPipelineBufferOwnership(t *testing.T) {
	before := droppedSharedBuffers.Load()
	for k := range 6 {
		w := &ownerWriter{t: t, h: http.Header{}, gate: make(chan struct{}), gateFails: k%2 == 1}
		mw := startTestPipeline(t, w)
		doc := denseDoc(2 << 20)
		done := make(chan error, 1)
		go func() {
			var err error
			for p := doc; len(p) > 0 && err == nil; p = p[min(len(p), 32<<10):] {
				_, err = mw.pl.writeIn(p[:min(len(p), 32<<10)])
			}
			done <- err
		}()
		// Let the masker fill every output buffer while the first write
		// blocks, and wait in TakeBuffer; then the pipeline fails while
		// the write goroutine still holds its buffers (an abort), or the
		// client write fails.
		time.Sleep(100 * time.Millisecond)
		if !w.gateFails {
			mw.pl.setErr(errors.New("test: handler aborted"))
			time.Sleep(20 * time.Millisecond)
		}
		close(w.gate)
		<-done
		if err := mw.pl.stop(); err == nil {
			t.Fatal("the client's failure went unnoticed")
		}
	}
	if n := droppedSharedBuffers.Load() - before; n != 0 {
		t.Fatalf("%d buffers were owned twice", n)
	}
}

// TestPipelineFlushMarkersBounded: a client that stops reading while the
// upstream sends a long masked value a byte at a time, flushing after
// each (reverse_proxy does for a chunked upstream), must not grow the
// output queue: one flush marker stands for those after it.
func TestPipelineFlushMarkersBounded(t *testing.T) {
	w := &ownerWriter{t: t, h: http.Header{}, gate: make(chan struct{})}
	mw := startTestPipeline(t, w)
	pl := mw.pl
	write := func(s string) {
		if _, err := pl.writeIn([]byte(s)); err != nil {
			t.Fatal(err)
		}
		if err := pl.flush(); err != nil {
			t.Fatal(err)
		}
	}
	write(`[{"id":1},{"email":"`)
	peak := 0
	for k := range 20000 {
		write("x")
		if k%100 == 0 {
			time.Sleep(50 * time.Microsecond) // let the masker take the small batches
		}
		pl.mu.Lock()
		peak = max(peak, len(pl.out))
		pl.mu.Unlock()
	}
	write(`"}]`)
	close(w.gate)
	if err := pl.stop(); err != nil {
		t.Fatal(err)
	}
	if limit := 2*pipeBuffers + 1; peak > limit {
		t.Fatalf("the output queue reached %d items (limit %d)", peak, limit)
	}
	if _, got, _ := w.result(); got != `[{"id":1},{"email":"[REDACTED]"}]` {
		t.Fatalf("client got %q", got)
	}
}

// noFlushWriter is a client writer without Flush (a middleware in between
// that hides it).
type noFlushWriter struct {
	h    http.Header
	body bytes.Buffer
	mu   sync.Mutex
	// panicAt > 0: Write panics once this many bytes were written.
	panicAt int
}

func (w *noFlushWriter) Header() http.Header { return w.h }
func (w *noFlushWriter) WriteHeader(int)     {}
func (w *noFlushWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.panicAt > 0 && w.body.Len()+len(p) > w.panicAt {
		panic("test: the client's writer panicked")
	}
	return w.body.Write(p)
}

// TestPipelineWriterEdges: a client writer that cannot flush still gets
// the whole masked body (a flush it cannot do is not an error, as on the
// other paths); one that panics fails the response (aborted) instead of
// the process; and a handler that fails after the response was committed
// aborts it, so the client never sees a complete-looking truncated
// document.
func TestPipelineWriterEdges(t *testing.T) {
	h := provisioned(t, &Redact{MaxBuffer: 4096})
	doc := denseDoc(600 << 10)
	var want bytes.Buffer
	if _, err := h.mask.Copy(&want, bytes.NewReader(doc), jsonmask.ModeJSON); err != nil {
		t.Fatal(err)
	}

	w := &noFlushWriter{h: http.Header{}}
	if err, aborted := serve(t, h, w, doc, []int{32 << 10}, 1); err != nil || aborted {
		t.Fatalf("writer without Flush: %v, aborted %v", err, aborted)
	}
	if w.body.String() != want.String() {
		t.Fatalf("writer without Flush: %d bytes, want the masker's %d", w.body.Len(), want.Len())
	}

	w = &noFlushWriter{h: http.Header{}, panicAt: 200 << 10}
	if _, aborted := serve(t, h, w, doc, []int{32 << 10}, 0); !aborted {
		t.Fatal("a panicking client writer did not abort the response")
	}

	w = &noFlushWriter{h: http.Header{}}
	if _, aborted := serve(t, h, w, doc[:len(doc)/2], []int{32 << 10}, 0, errors.New("test: upstream failed")); !aborted {
		t.Fatal("a handler error after commit did not abort the response")
	}
	if strings.Contains(w.body.String(), "@acme.test") {
		t.Fatal("an email reached the client")
	}
}
