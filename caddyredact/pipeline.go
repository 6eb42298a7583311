package caddyredact

import (
	"net/http"
	"sync"
	"sync/atomic"
)

// Once a masked response streams (it is committed), masking moves to a
// goroutine of its own, fed through a few fixed buffers. The caller of
// Write (reverse_proxy's copy loop) reads the upstream and writes the
// masked output to the client; the goroutine does nothing but mask. On a
// large body the masker is the slowest stage by far, so keeping the socket
// writes off its goroutine shortens the critical path to about the masker
// alone (measured: bench/redact.sh, caddyredact BenchmarkDoc).
//
// Ownership is strict, so no byte can take another route: while the
// pipeline runs, its goroutine alone drives the Stream, and the caller
// alone touches the client's ResponseWriter. Input goes to the goroutine
// in buffers from free over work; masked output comes back in buffers
// over ready, is written by the caller (in write, flush and stop) and
// returned over outFree. stop ends the goroutine and waits for it, and
// every path that touches the Stream afterwards (finish, the recover in
// ServeHTTP) calls it first. Memory per streaming response grows by
// pipeBuffers input buffers of pipeBufSize bytes and pipeOuts output
// buffers of pipeOutSize (288 KiB in all, pooled); a slow client blocks
// Write once the buffers are all full.
//
// Masked output reaches the client at the latest at the next Write, Flush
// or the end of the body (Write also sends what is ready without waiting),
// as with net/http's own buffering; a Flush sends everything masked so far.

const (
	pipeBuffers = 3
	pipeBufSize = 32 << 10 // reverse_proxy's copy buffer; larger writes are split
	pipeOuts    = 3
	pipeOutSize = 64 << 10 // masked output is written to the client in runs up to this size
)

// pipelineOff keeps masking inline (benchmarks compare both).
var pipelineOff = false

var (
	pipeBufPool = sync.Pool{New: func() any { b := make([]byte, pipeBufSize); return &b }}
	pipeOutPool = sync.Pool{New: func() any { b := make([]byte, 0, pipeOutSize); return &b }}
)

// pipeMsg is one unit of work: input to mask, or a flush marker.
type pipeMsg struct {
	buf   *[]byte
	n     int
	flush bool
}

// outMsg is masked output for the client, or a flush marker: everything
// before it was masked.
type outMsg struct {
	buf   *[]byte
	flush bool
}

type pipeline struct {
	mw      *maskWriter
	work    chan pipeMsg // caller → goroutine
	free    chan *[]byte // goroutine → caller: input buffers
	ready   chan outMsg  // goroutine → caller: masked output
	outFree chan *[]byte // caller → goroutine: output buffers
	done    chan struct{}
	cur     *[]byte     // output being filled (goroutine only)
	failed  atomic.Bool // set after err, once the masker refused the body or the client broke off
	err     error       // read only after failed is true or done is closed
	errOnce sync.Once
}

// startPipeline moves masking to its goroutine. Only for a committed,
// not-encoded masked body (a decoder goroutine already overlaps the work).
func (mw *maskWriter) startPipeline() {
	if pipelineOff {
		return
	}
	pl := &pipeline{
		mw:      mw,
		work:    make(chan pipeMsg, pipeBuffers+1),
		free:    make(chan *[]byte, pipeBuffers),
		ready:   make(chan outMsg, pipeOuts+1),
		outFree: make(chan *[]byte, pipeOuts),
		done:    make(chan struct{}),
		cur:     pipeOutPool.Get().(*[]byte),
	}
	for range pipeBuffers {
		pl.free <- pipeBufPool.Get().(*[]byte)
	}
	for range pipeOuts - 1 {
		pl.outFree <- pipeOutPool.Get().(*[]byte)
	}
	mw.pl = pl
	go pl.run()
}

// run is the pipeline's goroutine: it masks queued input in order and
// hands the output over in runs as large as what is queued allows (fewer,
// larger writes than the upstream's reads), but never holds output while
// no more input is waiting. After an error it keeps returning buffers
// (masking nothing more), so the caller never blocks for good.
func (pl *pipeline) run() {
	defer close(pl.done)
	defer close(pl.ready)
	for m := range pl.work {
		if m.flush {
			pl.send()
			pl.ready <- outMsg{flush: true}
			continue
		}
		if !pl.failed.Load() {
			if _, err := pl.mw.stream.Write((*m.buf)[:m.n]); err != nil {
				pl.setErr(err)
			}
		}
		pl.free <- m.buf
		if len(pl.work) == 0 {
			pl.send()
		}
	}
	pl.send()
	pipeOutPool.Put(pl.cur)
}

func (pl *pipeline) setErr(err error) {
	pl.errOnce.Do(func() {
		pl.err = err
		pl.failed.Store(true)
	})
}

// buffer takes the masker's output (through sinkWriter, on the goroutine).
func (pl *pipeline) buffer(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		out := *pl.cur
		if len(out) == cap(out) {
			pl.send()
			continue
		}
		k := min(cap(out)-len(out), len(p))
		*pl.cur = append(out, p[:k]...)
		p = p[k:]
	}
	return total, nil
}

// send hands the output so far to the caller and takes an empty buffer
// (waiting for the caller to write one, when all are full).
func (pl *pipeline) send() {
	if len(*pl.cur) == 0 {
		return
	}
	if pl.failed.Load() {
		*pl.cur = (*pl.cur)[:0] // refused: nothing more goes out
		return
	}
	pl.ready <- outMsg{buf: pl.cur}
	pl.cur = <-pl.outFree
}

// writeOut writes one masked buffer to the client (on the caller) and
// returns it to the goroutine.
func (pl *pipeline) writeOut(b *[]byte) {
	if !pl.failed.Load() {
		if _, err := pl.mw.ResponseWriter.Write(*b); err != nil {
			pl.setErr(err)
		}
	}
	*b = (*b)[:0]
	pl.outFree <- b
}

// drainReady writes what is masked already, without waiting.
func (pl *pipeline) drainReady() {
	for {
		select {
		case m := <-pl.ready:
			pl.writeOut(m.buf) // no flush marker: only flush sends one, and waits for it
		default:
			return
		}
	}
}

// write queues p (copied: the caller reuses its buffer) for masking, and
// writes masked output while it waits for a free buffer.
func (pl *pipeline) write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		if pl.failed.Load() {
			return 0, pl.err
		}
		select {
		case b := <-pl.free:
			n := copy(*b, p)
			p = p[n:]
			pl.work <- pipeMsg{buf: b, n: n} // never blocks: work holds every buffer
		case m := <-pl.ready:
			pl.writeOut(m.buf)
		}
	}
	pl.drainReady()
	if pl.failed.Load() {
		return 0, pl.err
	}
	return total, nil
}

// flush writes everything queued so far, once masked, then flushes the
// client connection.
func (pl *pipeline) flush() error {
	if pl.failed.Load() {
		return pl.err
	}
	for sent := false; !sent; {
		select {
		case pl.work <- pipeMsg{flush: true}:
			sent = true
		case m := <-pl.ready:
			pl.writeOut(m.buf)
		}
	}
	for m := range pl.ready {
		if m.flush {
			break
		}
		pl.writeOut(m.buf)
	}
	if pl.failed.Load() {
		return pl.err
	}
	return http.NewResponseController(pl.mw.ResponseWriter).Flush()
}

// stop ends the goroutine after it has masked everything queued, writes
// the rest of the output, and returns the error that stopped the pipeline
// (the masker refused the body, or the client write failed).
func (pl *pipeline) stop() error {
	close(pl.work)
	for m := range pl.ready {
		if m.buf != nil {
			pl.writeOut(m.buf)
		}
	}
	<-pl.done
	for range pipeOuts - 1 {
		select {
		case b := <-pl.outFree:
			pipeOutPool.Put(b)
		default:
		}
	}
	for range pipeBuffers {
		select {
		case b := <-pl.free:
			pipeBufPool.Put(b)
		default: // not returned (a panic inside write): left to the GC
		}
	}
	return pl.err
}
