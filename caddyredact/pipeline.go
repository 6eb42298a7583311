package caddyredact

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
)

// Once a masked response streams (it is committed), it goes through three
// stages, each on its own goroutine, so that the masker, by far the
// slowest, never waits for a socket:
//
//   - the caller of Write (reverse_proxy's copy loop) reads the upstream
//     and appends the bytes to input buffers;
//   - the mask goroutine alone drives the Stream; its output fills whole
//     output buffers (jsonmask.BufferTaker: no copy);
//   - the write goroutine alone writes them to the client, and flushes it.
//
// Hand-over is batched by demand rather than by size: a stage ready for
// more takes everything queued, a partly filled input buffer included. A
// busy masker thus gets large batches (few wake-ups, few large client
// writes) and an idle one gets every write at once (no added latency); the
// masker hands over its output at the end of every batch, so nothing
// masked waits for more input. A Flush queues a marker that the stages
// pass along in order: the client is flushed once everything written
// before it is masked and written, without making the caller wait, so a
// chunked upstream (reverse_proxy flushes after every write) is pipelined
// as well.
//
// Ownership is strict, so no byte can take another route: the caller never
// touches the Stream or the client's ResponseWriter while the pipeline
// runs; stop ends both goroutines and waits for them, and every path that
// touches them afterwards (finish, the recover in ServeHTTP) calls it
// first. Memory per streaming response: pipeBuffers input buffers of
// pipeBufSize and as many output buffers of pipeOutSize (pooled, about
// 800 KiB in all; the max_buffer buffer is released at commit); a slow
// client blocks Write once they are all full. The sizes are measured
// (bench/redact.sh, same-run A/B of two builds): three buffers of 128 KiB
// beat two by 6-10 % (they absorb the stages' wake-up delays), 64 KiB
// ones lose 10-16 %, and two of 256 KiB lose 4 %.

const (
	pipeBuffers = 3
	pipeBufSize = 128 << 10
	pipeOutSize = pipeBufSize + 8<<10 // the masked form of a full input buffer, mostly
)

// droppedSharedBuffers counts buffers stop kept out of the pools because
// they were there twice (or had another size): it stays 0 unless the
// ownership rules are broken (TestPipelineBufferOwnership checks).
var droppedSharedBuffers atomic.Int64

// pipelineOff keeps masking inline (benchmarks compare both).
var pipelineOff = false

var (
	pipeBufPool = sync.Pool{New: func() any { b := make([]byte, pipeBufSize); return &b }}
	pipeOutPool = sync.Pool{New: func() any { b := make([]byte, 0, pipeOutSize); return &b }}
)

// pipeItem is a unit of work for a stage: bytes in buf (if any), then a
// flush of the client if flush is set.
type pipeItem struct {
	buf   []byte
	flush bool
}

// pipeline is shared by the three stages under mu. Each stage waits on a
// cond of its own, signalled when what it waits for changes (and all of
// them on an error), so no stage is woken for another's work.
type pipeline struct {
	mw   *maskWriter
	done chan struct{} // closed when the write goroutine (the last stage) ended

	mu       sync.Mutex
	callerC  sync.Cond  // the caller waits for an empty input buffer
	maskC    sync.Cond  // the mask goroutine waits for input, or an empty output buffer
	writeC   sync.Cond  // the write goroutine waits for output
	in       []pipeItem // caller → mask goroutine, in order
	fill     []byte     // input being filled by the caller (nil: none)
	fillFlu  bool       // a flush was asked for after fill
	free     [][]byte   // empty input buffers (len 0, cap pipeBufSize)
	out      []pipeItem // mask goroutine → write goroutine, in order
	outFree  [][]byte   // empty output buffers
	closed   bool       // stop was called: no more input
	maskDone bool       // the mask goroutine ended: no more output
	err      error      // the masker refused the body, or the client broke off
}

// startPipeline moves masking and writing to their goroutines. Only for a
// committed, not-encoded masked body (a decoder goroutine already overlaps
// the work).
func (mw *maskWriter) startPipeline() {
	if pipelineOff {
		return
	}
	pl := &pipeline{mw: mw, done: make(chan struct{})}
	pl.callerC.L, pl.maskC.L, pl.writeC.L = &pl.mu, &pl.mu, &pl.mu
	for range pipeBuffers {
		pl.free = append(pl.free, (*pipeBufPool.Get().(*[]byte))[:0])
		pl.outFree = append(pl.outFree, (*pipeOutPool.Get().(*[]byte))[:0])
	}
	first := pl.outFree[len(pl.outFree)-1]
	pl.outFree = pl.outFree[:len(pl.outFree)-1]
	mw.stream.SetBufferTaker(pl, first)
	mw.pl = pl
	go pl.mask()
	go pl.write()
}

// mask is the mask goroutine: it masks the queued input in order, and
// passes flush markers on once everything before them is handed over.
// After an error it keeps returning buffers (masking nothing more), so
// the caller never blocks for good.
func (pl *pipeline) mask() {
	defer func() {
		pl.mu.Lock()
		pl.maskDone = true
		pl.writeC.Signal()
		pl.mu.Unlock()
	}()
	for {
		pl.mu.Lock()
		for len(pl.in) == 0 {
			if len(pl.fill) > 0 { // take what the caller has so far
				pl.queueFill()
				break
			}
			if pl.closed {
				pl.mu.Unlock()
				return
			}
			pl.maskC.Wait()
		}
		it := pl.in[0]
		pl.in = pl.in[1:]
		failed := pl.err != nil
		pl.mu.Unlock()

		if it.buf != nil && !failed {
			if err := pl.maskBatch(it.buf); err != nil {
				pl.setErr(err)
			}
		}
		pl.mu.Lock()
		if it.buf != nil {
			pl.free = append(pl.free, it.buf[:0])
			pl.callerC.Signal()
		}
		// The Stream handed everything over at the end of its Write. One
		// flush marker at the end of the output queue covers the ones after
		// it, so a stalled client cannot make the queue grow (an upstream
		// flushing after every byte of a long masked value adds no output).
		if n := len(pl.out); it.flush && pl.err == nil && (n == 0 || pl.out[n-1].buf != nil) {
			pl.out = append(pl.out, pipeItem{flush: true})
			pl.writeC.Signal()
		}
		pl.mu.Unlock()
	}
}

// maskBatch masks one batch. A panic in the masker fails the response
// (aborted, as for invalid JSON) instead of the process: this goroutine
// is not the handler's, so nothing else would recover it.
func (pl *pipeline) maskBatch(b []byte) (err error) {
	defer func() {
		if rec := recover(); rec != nil {
			err = fmt.Errorf("redact: masker failed: %v", rec)
		}
	}()
	_, err = pl.mw.stream.Write(b)
	return err
}

// TakeBuffer is the Stream's output (jsonmask.BufferTaker, on the mask
// goroutine): full goes to the write goroutine, and an empty buffer comes
// back, waiting while the client is slower than the masker. Once full is
// queued it is the write goroutine's, so TakeBuffer returns a buffer even
// when the pipeline failed meanwhile (with the error): were it to return
// none, the Stream would keep full too, and one array would end up twice
// in the pool, shared by two responses. The write goroutine gives back
// every buffer, after an error too, so the wait ends.
func (pl *pipeline) TakeBuffer(full []byte) ([]byte, error) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.err != nil {
		return nil, pl.err // full not taken: it stays with the Stream
	}
	pl.out = append(pl.out, pipeItem{buf: full})
	pl.writeC.Signal()
	for len(pl.outFree) == 0 {
		pl.maskC.Wait()
	}
	b := pl.outFree[len(pl.outFree)-1]
	pl.outFree = pl.outFree[:len(pl.outFree)-1]
	return b, pl.err
}

// write is the write goroutine: it alone writes to the client while the
// pipeline runs. After an error it only returns buffers.
func (pl *pipeline) write() {
	defer close(pl.done)
	for {
		pl.mu.Lock()
		for len(pl.out) == 0 {
			if pl.maskDone {
				pl.mu.Unlock()
				return
			}
			pl.writeC.Wait()
		}
		it := pl.out[0]
		pl.out = pl.out[1:]
		failed := pl.err != nil
		pl.mu.Unlock()

		if !failed {
			if err := pl.writeOut(it); err != nil {
				pl.setErr(err)
			}
		}
		if it.buf != nil {
			pl.mu.Lock()
			pl.outFree = append(pl.outFree, it.buf[:0])
			pl.maskC.Signal()
			pl.mu.Unlock()
		}
	}
}

// writeOut sends one item to the client. A writer that cannot flush is
// not an error (as on the other paths: the bytes still go out); a panic in
// the client's writer fails the response instead of the process.
func (pl *pipeline) writeOut(it pipeItem) (err error) {
	defer func() {
		if rec := recover(); rec != nil {
			err = fmt.Errorf("redact: writing to the client failed: %v", rec)
		}
	}()
	if it.flush {
		if err = http.NewResponseController(pl.mw.ResponseWriter).Flush(); errors.Is(err, http.ErrNotSupported) {
			err = nil
		}
		return err
	}
	_, err = pl.mw.ResponseWriter.Write(it.buf)
	return err
}

func (pl *pipeline) setErr(err error) {
	pl.mu.Lock()
	if pl.err == nil {
		pl.err = err
	}
	pl.callerC.Broadcast()
	pl.maskC.Broadcast()
	pl.writeC.Broadcast()
	pl.mu.Unlock()
}

// writeIn hands p over (copied: the caller reuses its buffer). It waits only
// when every input buffer is full, and reports a refusal or a broken
// client.
func (pl *pipeline) writeIn(p []byte) (int, error) {
	total := len(p)
	pl.mu.Lock()
	defer pl.mu.Unlock()
	for len(p) > 0 {
		if pl.err != nil {
			return 0, pl.err
		}
		if pl.fill == nil {
			if len(pl.free) == 0 {
				pl.callerC.Wait()
				continue
			}
			pl.fill = pl.free[len(pl.free)-1]
			pl.free = pl.free[:len(pl.free)-1]
		}
		n := min(len(p), cap(pl.fill)-len(pl.fill))
		pl.fill = append(pl.fill, p[:n]...)
		p = p[n:]
		if len(pl.fill) == cap(pl.fill) {
			pl.queueFill()
		}
	}
	pl.maskC.Signal() // a waiting mask goroutine takes the partial buffer
	if pl.err != nil {
		return 0, pl.err
	}
	return total, nil
}

// queueFill moves the buffer being filled, and the flush asked for after
// it, to the input queue (pl.mu held).
func (pl *pipeline) queueFill() {
	if len(pl.fill) > 0 {
		pl.in = append(pl.in, pipeItem{buf: pl.fill, flush: pl.fillFlu})
		pl.fill, pl.fillFlu = nil, false
	}
	pl.maskC.Signal()
}

// sharesArray reports whether b has the same backing array as one of bs.
func sharesArray(bs [][]byte, b []byte) bool {
	for _, x := range bs {
		if cap(x) > 0 && cap(b) > 0 && &x[:1][0] == &b[:1][0] {
			return true
		}
	}
	return false
}

// flush asks for a flush of the client after everything written so far.
// It does not wait for it: the client is flushed as soon as that is
// masked and written (a later Write or the end of the body reports its
// error). It does not end the batch either: an upstream that flushes after
// every write (reverse_proxy does for a chunked one) still gets large
// batches while the masker is busy, and one flush per batch.
func (pl *pipeline) flush() error {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.err != nil {
		return pl.err
	}
	switch n := len(pl.in); {
	case len(pl.fill) > 0:
		pl.fillFlu = true
	case n > 0:
		pl.in[n-1].flush = true
	default:
		pl.in = append(pl.in, pipeItem{flush: true})
	}
	pl.maskC.Signal() // an idle masker takes it now
	return nil
}

// stop ends both goroutines after everything queued is masked and
// written, and returns the error that stopped the pipeline (the masker
// refused the body, or the client write failed). The Stream goes back to
// its own buffer and destination.
func (pl *pipeline) stop() error {
	pl.mu.Lock()
	pl.queueFill()
	pl.closed = true
	pl.maskC.Signal()
	pl.mu.Unlock()
	<-pl.done
	if b := pl.mw.stream.SetBufferTaker(nil, nil); b != nil {
		pl.outFree = append(pl.outFree, b[:0])
	}
	// Only whole, distinct buffers go back to the pools: a buffer there
	// twice would be shared by two responses. (TakeBuffer's ownership rule
	// keeps this from happening; this is the net under it.)
	for k, b := range pl.free {
		if cap(b) == pipeBufSize && !sharesArray(pl.free[:k], b) {
			pipeBufPool.Put(&b)
		} else {
			droppedSharedBuffers.Add(1)
		}
	}
	for k, b := range pl.outFree {
		if cap(b) == pipeOutSize && !sharesArray(pl.outFree[:k], b) {
			pipeOutPool.Put(&b)
		} else {
			droppedSharedBuffers.Add(1)
		}
	}
	return pl.err
}
