package jsonmask

import (
	"errors"
	"fmt"
	"hash"
	"io"
)

// ErrInvalid is wrapped by every error about the input document (syntax,
// truncation, nesting too deep); errors from the destination are returned
// as they are.
var ErrInvalid = errors.New("jsonmask: invalid JSON")

// SyntaxError describes invalid input. It never quotes input bytes, only an
// offset, so that logging it cannot leak a value (research J1).
type SyntaxError struct {
	Offset int64 // bytes consumed before the offending byte
	Msg    string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("jsonmask: invalid JSON at offset %d: %s", e.Offset, e.Msg)
}

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *SyntaxError) Unwrap() error { return ErrInvalid }

var errClosed = errors.New("jsonmask: write after Close")

// Stats counts what a Stream did.
type Stats struct {
	Fields   int64 // values masked, members/elements removed, substrings detected
	BytesIn  int64 // input bytes accepted
	BytesOut int64 // bytes written to the destination
	Records  int64 // top-level values completed
}

// Stream masks one body in push style: Write accepts the input in chunks
// split anywhere, and writes masked output to the destination before
// returning. Close checks that the input was complete. Bytes of a value that
// must be masked are never written, not even partly, so an input that turns
// out truncated or invalid leaks nothing; the caller must still abort or
// discard the output after an error. A Stream is not safe for concurrent
// use; Reset makes it reusable (e.g. from a sync.Pool).
type Stream struct {
	cfg  *Config
	dst  io.Writer
	mode Mode
	ws   *[256]bool // white space inside values (NDJSON excludes '\n')

	st      state
	err     error
	closed  bool
	collect bool  // the span is open at the start of the next chunk
	span    int   // start of the uncommitted verbatim bytes in the chunk, -1 when skipping
	base    int64 // input offset of the current chunk
	bom     int

	frames []frame
	nfas   []nfaSet // NFA state of each open container (only with paths)

	// The value about to start.
	vdisp   disp
	vnfa    nfaSet
	namePII bool // remove mode: the member's name held PII, drop the member

	// The scalar in progress.
	act    act
	isName bool
	numSt  uint8
	lit    string
	litPos int

	// String decoding.
	sink      uint8
	hi        rune // pending high surrogate
	carry     [8]byte
	ncarry    int
	name      []byte // normalised member name (slow path)
	nameTrunc bool
	raw       []byte // held raw string content
	rawOver   bool
	dec       []byte // decoded string content (detect, partial)
	decCap    int
	decOver   bool
	tmp       []byte
	rw        []byte // rewritten output of one value
	nameDet   bool   // detectors run on the member name in progress

	out      []byte
	outMax   int         // out is written to the destination once it would pass this
	ownOut   []byte      // the Stream's own output buffer
	taker    BufferTaker // takes full output buffers instead of dst (SetBufferTaker)
	pend     []byte      // remove mode: bytes of a member/element not yet decided
	pending  bool
	pendDrop bool

	hm    hash.Hash
	sum   []byte
	spans []span

	fields, in, written, records int64
	rbuf                         []byte

	nameCache [1 << nameCacheBits][2]nameCacheEntry // fast loop only; depends on cfg alone
}

type frame struct {
	next    int // arrays: index of the next element (for [N] paths)
	array   bool
	disp    disp
	emitted bool // remove mode: a child was written, the next one needs a comma
}

type disp uint8

const (
	dPlain   disp = iota // copied; detectors apply
	dMasked              // every scalar inside gets the strategy
	dKept                // copied verbatim, nothing applies
	dDropped             // removed: nothing is written
)

type act uint8

const (
	actCopy    act = iota // bytes stay in the span
	actSkip               // replacement (if any) already written; skip the bytes
	actHash               // feed the HMAC, write the token at the end
	actPartial            // collect, write the partial form at the end
	actDetect             // hold, run detectors at the end
)

const (
	outFlush   = 32 << 10
	partialCap = 320 // longer values are never emails or phones for partial
	nameCap    = 2 * maxPatternLen
)

// NewStream returns a Stream for one JSON document writing to w.
func (c *Config) NewStream(w io.Writer) *Stream { return c.NewStreamMode(w, ModeJSON) }

// NewStreamMode returns a Stream for the given framing writing to w.
func (c *Config) NewStreamMode(w io.Writer, mode Mode) *Stream {
	s := &Stream{cfg: c, frames: make([]frame, 0, 16)}
	s.SetBufferTaker(nil, nil)
	s.Reset(w, mode)
	return s
}

// BufferTaker is a destination that takes the Stream's output buffers
// instead of being handed bytes to copy: TakeBuffer receives a buffer full
// of output and returns an empty one, with the same capacity, for the
// Stream to go on with. Returning a buffer means full was taken (the
// taker owns it from then on), with or without an error; returning nil
// and an error leaves full with the Stream. On an error the Stream stops.
type BufferTaker interface {
	TakeBuffer(full []byte) (empty []byte, err error)
}

var errShortBuffer = errors.New("jsonmask: BufferTaker returned a buffer smaller than the first")

// SetBufferTaker makes s collect its output in first (from len 0) and hand
// each full buffer, of up to about cap(first) bytes, to t instead of
// writing to its destination. SetBufferTaker(nil, nil) goes back to its
// own buffer and destination. Output not yet handed over is discarded, so
// call it between Writes (or after an error). It returns the buffer s was
// using if that came from a taker, for the caller to reuse.
func (s *Stream) SetBufferTaker(t BufferTaker, first []byte) (prev []byte) {
	if s.taker != nil {
		prev = s.out
	}
	if t == nil || cap(first) < 4096 {
		if s.ownOut == nil {
			s.ownOut = make([]byte, 0, outFlush+1024)
		}
		t, first = nil, s.ownOut
	}
	s.taker, s.out, s.outMax = t, first[:0], cap(first)-1024
	return prev
}

// Reset makes s ready for a new body written to w, keeping its buffers.
func (s *Stream) Reset(w io.Writer, mode Mode) {
	s.dst, s.mode = w, mode
	s.ws = &wsAll
	if mode == ModeNDJSON {
		s.ws = &wsNoNL
	}
	s.st, s.err, s.closed, s.collect, s.span, s.base, s.bom = stBOM, nil, false, false, -1, 0, 0
	s.frames, s.nfas = s.frames[:0], s.nfas[:0]
	s.vdisp, s.vnfa, s.namePII = dPlain, nfaSet{}, false
	s.act, s.isName, s.numSt, s.lit, s.litPos = actCopy, false, 0, "", 0
	s.sink, s.hi, s.ncarry = 0, 0, 0
	s.name, s.nameTrunc, s.raw, s.rawOver, s.dec, s.decOver = s.name[:0], false, s.raw[:0], false, s.dec[:0], false
	s.out, s.pend, s.pending, s.pendDrop = s.out[:0], s.pend[:0], false, false
	s.fields, s.in, s.written, s.records = 0, 0, 0, 0
}

// Stats returns the counters so far.
func (s *Stream) Stats() Stats {
	return Stats{Fields: s.fields, BytesIn: s.in, BytesOut: s.written, Records: s.records}
}

// Fields returns how many values were masked so far (for {http.redact.fields}).
func (s *Stream) Fields() int64 { return s.fields }

// Write masks p and writes every byte that is decided to the destination.
func (s *Stream) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.closed {
		return 0, errClosed
	}
	s.run(p)
	if s.err == nil {
		s.in += int64(len(p))
		s.base += int64(len(p))
		s.flushOut()
	}
	if s.err != nil {
		return 0, s.err
	}
	return len(p), nil
}

// WriteString is Write for a string.
func (s *Stream) WriteString(str string) (int, error) { return s.Write([]byte(str)) }

// ReadFrom masks everything r yields, reading through a fixed buffer owned
// by s. It does not Close.
func (s *Stream) ReadFrom(r io.Reader) (int64, error) {
	if s.rbuf == nil {
		s.rbuf = make([]byte, 32<<10)
	}
	var total int64
	for {
		n, err := r.Read(s.rbuf)
		if n > 0 {
			total += int64(n)
			if _, werr := s.Write(s.rbuf[:n]); werr != nil {
				return total, werr
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// Close finishes the body: it fails if the input was empty (single-document
// mode), truncated or invalid, and flushes the output otherwise. It does not
// close the destination.
func (s *Stream) Close() error {
	if s.closed {
		return s.err
	}
	s.closed = true
	if s.err != nil {
		return s.err
	}
	if s.st == stNum && depthZeroNumDone(s) {
		s.endNumber(nil, 0)
	}
	ok := false
	switch s.mode {
	case ModeJSON:
		ok = s.st == stTopAfter
	case ModeNDJSON:
		ok = s.st == stTop || s.st == stTopAfter || (s.st == stBOM && s.bom == 0)
	case ModeJSONSeq:
		ok = s.st == stTop || s.st == stTopAfter || s.st == stSeqStart || (s.st == stBOM && s.bom == 0)
	}
	if !ok {
		s.err = &SyntaxError{Offset: s.base, Msg: "unexpected end of input"}
		return s.err
	}
	s.flushOut()
	return s.err
}

func depthZeroNumDone(s *Stream) bool { return len(s.frames) == 0 && numTerminal[s.numSt] }

// Copy masks src into dst in one pass through a Stream in the given mode.
func (c *Config) Copy(dst io.Writer, src io.Reader, mode Mode) (Stats, error) {
	s := c.NewStreamMode(dst, mode)
	if _, err := s.ReadFrom(src); err != nil {
		return s.Stats(), err
	}
	err := s.Close()
	return s.Stats(), err
}

func (s *Stream) fail(i int, msg string) {
	if s.err == nil {
		s.err = &SyntaxError{Offset: s.base + int64(i), Msg: msg}
	}
}

// emit queues decided bytes for the destination (or for the pending member
// in remove mode). Large runs go straight through without a copy.
func (s *Stream) emit(b []byte) {
	if s.pending {
		if len(s.pend)+len(b) > s.pendLimit() {
			s.pendDrop = true // see pendTotal: the member will be dropped
			return
		}
		s.pend = append(s.pend, b...)
		return
	}
	if len(s.out)+len(b) > s.outMax {
		s.flushOut()
		if len(b) >= s.outMax/2 {
			if s.taker == nil {
				s.write(b)
				return
			}
			for len(b) > s.outMax { // a taker gets whole buffers only
				s.out = append(s.out, b[:s.outMax]...)
				b = b[s.outMax:]
				s.flushOut()
			}
		}
	}
	s.out = append(s.out, b...)
}

func (s *Stream) emitStr(str string) {
	if !s.pending && len(s.out)+len(str) <= cap(s.out) {
		s.out = append(s.out, str...)
		return
	}
	s.emit([]byte(str))
}

func (s *Stream) flushOut() {
	if len(s.out) > 0 && s.err == nil && s.taker != nil {
		n := len(s.out)
		out, err := s.taker.TakeBuffer(s.out)
		if out != nil {
			// Taken, even with an error. The Stream relies on the
			// capacity it sized outMax by (the fast loop slices up to
			// outMax, emitStr appends up to the capacity): a buffer with
			// less room than the first is refused, not trusted.
			s.written += int64(n)
			s.out = out[:0]
			if cap(out) < s.outMax+1024 && err == nil {
				err = errShortBuffer
			}
		}
		if err != nil {
			s.err = err
		}
	} else if len(s.out) > 0 && s.err == nil {
		s.write(s.out)
	}
	s.out = s.out[:0]
}

func (s *Stream) write(b []byte) {
	if s.err != nil {
		return
	}
	n, err := s.dst.Write(b)
	s.written += int64(n)
	if err == nil && n < len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		s.err = err
	}
}

// cut ends the verbatim span before index i.
func (s *Stream) cut(p []byte, i int) {
	if s.span >= 0 {
		if i > s.span {
			s.emit(p[s.span:i])
		}
		s.span = -1
	}
}

// resume restarts the verbatim span at index i, unless an enclosing
// container is being dropped.
func (s *Stream) resume(i int) {
	if len(s.frames) == 0 || s.frames[len(s.frames)-1].disp != dDropped {
		s.span = i
	}
}

// commit writes the pending member or element (remove mode): the comma it
// needs, then the held bytes.
func (s *Stream) commit(p []byte, i int) {
	s.pending = false
	f := &s.frames[len(s.frames)-1]
	if f.emitted {
		s.emitStr(",")
	}
	f.emitted = true
	if len(s.pend) > 0 {
		s.emit(s.pend)
		s.pend = s.pend[:0]
	}
	if s.span >= 0 && i > s.span {
		s.emit(p[s.span:i])
	}
	if s.span >= 0 {
		s.span = i
	}
}

// pendLimit bounds the bytes held for one undecided member or element in
// remove mode (its name and the white space around it).
func (s *Stream) pendLimit() int { return s.cfg.maxValue + 1024 }

// pendTotal is the size of the pending region up to p[i], however it was
// split across writes; a region over pendLimit is dropped (fail closed), so
// the outcome does not depend on chunking.
func (s *Stream) pendTotal(i int) int {
	t := len(s.pend)
	if s.span >= 0 {
		t += i - s.span
	}
	return t
}

// dropPending forgets the pending member or element (remove mode).
func (s *Stream) dropPending() {
	s.pend = s.pend[:0]
	s.pending, s.pendDrop, s.namePII = false, false, false
	s.span = -1
}
