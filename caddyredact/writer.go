package caddyredact

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/klauspost/compress/zstd"

	"github.com/scopegate/scopegate/internal/jsonmask"
)

// writerState is where a maskWriter is in a response.
type writerState uint8

const (
	stateHeader  writerState = iota // no final status yet
	statePass                       // written through unchanged (HEAD, 204, 304, pass_types)
	stateHold                       // a non-JSON type: refused at its first body byte
	stateSniff                      // no Content-Type: decided at the first non-space byte
	stateMask                       // JSON: masked
	stateRefused                    // refused: 502 (or an abort once committed)
)

// maskWriter wraps the response writer. It overrides Write, ReadFrom,
// WriteHeader, Flush and Hijack so that no path (io.Copy's ReadFrom,
// http.ResponseController's Flush through Unwrap, a hijack) can send
// unmasked bytes or commit headers early. Once a plain body streams, the
// masking moves to a goroutine (pipeline.go) that then owns the masker
// and the client's writer until stopDecoder.
//
// It also owns Header once the final status is decided for a body that is
// not passed through: from then on the handler behind gets a header map
// of its own (late), which never reaches the client. That is what keeps
// out the trailers reverse_proxy copies into Header after the body (a
// digest of the unmasked body, or data: PR-A6), and it means that a
// decoder goroutine committing the response is the only one touching the
// client's header map (reverse_proxy's finalizeResponse keeps writing to
// Header on the handler goroutine meanwhile).
type maskWriter struct {
	*caddyhttp.ResponseWriterWrapper
	h *Redact
	r *http.Request

	// late is what Header returns after the decision (nil while the
	// response passes through unchanged): set on the handler goroutine
	// before any other goroutine starts, never read by the client path.
	late http.Header

	state     writerState
	status    int
	committed bool // the final status line went to the client
	cause     error

	mode    jsonmask.Mode
	stream  *jsonmask.Stream
	buf     *bytes.Buffer // masked output while buffering
	inBytes int64         // body bytes given to the masker
	sniff   []byte        // leading bytes while sniffing

	// A still-encoded body is decoded by a goroutine reading from a pipe.
	pipe    *io.PipeWriter
	decoded chan error

	// A plain body that streams is masked by a goroutine (pipeline.go).
	pl *pipeline
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func newMaskWriter(w http.ResponseWriter, r *http.Request, h *Redact) *maskWriter {
	return &maskWriter{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w}, h: h, r: r}
}

func (mw *maskWriter) release() {
	if mw.buf != nil && mw.buf.Cap() <= 4*DefaultMaxBuffer {
		mw.buf.Reset()
		bufPool.Put(mw.buf)
	}
	mw.buf = nil
}

func (mw *maskWriter) errOr(def error) error {
	if mw.cause != nil {
		return mw.cause
	}
	return def
}

// Header is the header map of the handler behind: the client's until the
// final status is decided, then (unless the response passes through
// unchanged) one that is discarded.
func (mw *maskWriter) Header() http.Header {
	if mw.late != nil {
		return mw.late
	}
	return mw.ResponseWriter.Header()
}

// detach gives the handler behind a header map of its own from now on,
// and drops the upstream's trailer announcement: no trailer of a body
// that is masked (or refused) ever reaches the client.
func (mw *maskWriter) detach() {
	mw.ResponseWriter.Header().Del("Trailer")
	mw.late = make(http.Header)
}

// unmaskedBodyHeaders describe the unmasked body: its validators, digests
// and ranges (SPEC §6 "Never leaks").
var unmaskedBodyHeaders = []string{"Etag", "Last-Modified", "Accept-Ranges", "Content-Md5", "Digest",
	"Content-Digest", "Repr-Digest", "Content-Range"}

// WriteHeader decides, from the status and the headers, what happens to
// the body. Nothing is sent yet for a body that will be masked.
func (mw *maskWriter) WriteHeader(status int) {
	if mw.state != stateHeader {
		return
	}
	hdr := mw.ResponseWriter.Header()
	switch {
	case status == http.StatusSwitchingProtocols:
		mw.fail(status, errors.New("redact: protocol upgrade refused"))
		mw.detach()
		return
	case status < 200:
		mw.ResponseWriter.WriteHeader(status) // 100, 103: informational, no body
		return
	}
	mw.status = status
	mt := mediaType(hdr.Get("Content-Type"))
	mode, isJSON := jsonMode(mt)
	passed := mt != "" && !isJSON && mw.h.passes(mt) // pass_types: unchanged
	if mw.r.Method == http.MethodHead || status == http.StatusNoContent || status == http.StatusNotModified {
		// No body: pass unchanged, but never the unmasked body's length.
		if mw.r.Method == http.MethodHead {
			hdr.Del("Content-Length")
		}
		if !passed {
			// SPEC §6 says these pass unchanged, and also that a masked
			// response loses the unmasked body's validators and digests.
			// When the body would have been masked (or refused), the
			// second wins, which goes beyond "unchanged": an ETag or a
			// digest of a small unmasked body is an offline brute-force
			// oracle for the PII in it (file_server's ETag even encodes
			// its size), and a 304 updates the headers a cache stored for
			// the masked 200 (RFC 9111 §4.3.4), so it must say what that
			// 200 says: no length or encoding of the unmasked body, Vary
			// by the key header and Cache-Control private. Only pass_types
			// bodies, which are never masked, keep theirs.
			for _, name := range unmaskedBodyHeaders {
				hdr.Del(name)
			}
			hdr.Del("Content-Length")
			hdr.Del("Content-Encoding")
			privateHeaders(hdr, mw.h.vary)
			mw.detach()
		}
		mw.state = statePass
		mw.commit()
		return
	}
	switch {
	case status == http.StatusPartialContent && !(mt != "" && !isJSON && mw.h.passes(mt)):
		mw.fail(status, errors.New("redact: partial content (206) refused"))
	case mt == "":
		mw.state = stateSniff
	case isJSON:
		mw.startMasking(mode)
	case passed:
		mw.state = statePass
		mw.commit()
		return // unchanged, trailers included
	default:
		mw.state = stateHold
	}
	mw.detach()
}

// startMasking prepares the masker, and a decoder if the body is still
// encoded.
func (mw *maskWriter) startMasking(mode jsonmask.Mode) {
	mw.state, mw.mode = stateMask, mode
	mw.buf = bufPool.Get().(*bytes.Buffer)
	mw.stream = mw.h.mask.NewStreamMode(sinkWriter{mw}, mode)
	enc := strings.ToLower(strings.TrimSpace(mw.ResponseWriter.Header().Get("Content-Encoding")))
	switch enc {
	case "", "identity":
		return
	case "gzip", "x-gzip", "deflate", "zstd":
		mw.startDecoder(enc)
	default:
		mw.fail(mw.status, fmt.Errorf("redact: cannot decode Content-Encoding %q", enc))
	}
}

func (mw *maskWriter) startDecoder(enc string) {
	pr, pw := io.Pipe()
	mw.pipe, mw.decoded = pw, make(chan error, 1)
	go func() {
		var rd io.Reader
		var err error
		switch enc {
		case "gzip", "x-gzip":
			var zr *gzip.Reader
			if zr, err = gzip.NewReader(pr); err == nil {
				zr.Multistream(false)
				rd = zr
			}
		case "deflate":
			rd, err = zlib.NewReader(pr)
		case "zstd":
			var zr *zstd.Decoder
			if zr, err = zstd.NewReader(pr, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(8<<20)); err == nil {
				defer zr.Close()
				rd = zr
			}
		}
		if err == nil {
			_, err = io.Copy(writerOnly{maskerInput{mw}}, rd)
		}
		if err != nil {
			err = fmt.Errorf("redact: decoding %s body: %w", enc, err)
		}
		pr.CloseWithError(err)
		mw.decoded <- err
	}()
}

// stopDecoder ends the goroutine that owns the masker and the output, if
// any (the decoder, or the masking pipeline), and returns its error. A
// non-nil cause says the body is incomplete (the handler failed or
// panicked): the pipeline then masks and writes nothing more before it
// stops, since the response is aborted or refused either way.
func (mw *maskWriter) stopDecoder(cause error) error {
	if mw.pl != nil {
		if cause != nil {
			mw.pl.setErr(cause)
		}
		err := mw.pl.stop()
		mw.pl = nil
		return err
	}
	if mw.pipe == nil {
		return nil
	}
	_ = mw.pipe.Close()
	err := <-mw.decoded
	mw.pipe = nil
	return err
}

// Write takes body bytes from the handler behind.
func (mw *maskWriter) Write(p []byte) (int, error) {
	if mw.pipe != nil {
		// A decoder goroutine owns the masker and the output until finish
		// stops it: only the pipe is touched here (its error reports a
		// refusal).
		if _, err := mw.pipe.Write(p); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	if mw.state == stateHeader {
		mw.WriteHeader(http.StatusOK)
	}
	if mw.pipe != nil { // WriteHeader started a decoder
		return mw.Write(p)
	}
	if mw.pl != nil {
		// The pipeline's goroutine owns the masker and the output.
		if mw.state == stateRefused {
			return 0, mw.cause
		}
		n, err := mw.pl.writeIn(p)
		if err != nil {
			mw.fail(mw.status, err)
			return 0, mw.cause
		}
		mw.inBytes += int64(n)
		return n, nil
	}
	switch mw.state {
	case statePass:
		return mw.ResponseWriter.Write(p)
	case stateRefused:
		return 0, mw.cause
	case stateHold:
		if len(p) == 0 {
			return 0, nil
		}
		mw.fail(mw.status, errNotJSON)
		return 0, mw.cause
	case stateSniff:
		return mw.sniffWrite(p)
	}
	n, err := maskerInput{mw}.Write(p)
	if err == nil && mw.committed && mw.state == stateMask {
		mw.startPipeline() // streaming from now on
	}
	return n, err
}

// sniffWrite decides a body without Content-Type by its first byte other
// than white space (after a UTF-8 byte order mark): "{" or "[" is JSON,
// anything else is refused.
func (mw *maskWriter) sniffWrite(p []byte) (int, error) {
	mw.sniff = append(mw.sniff, p...)
	rest, more := sniffStart(mw.sniff)
	if more {
		if int64(len(mw.sniff)) > mw.h.MaxBuffer {
			mw.fail(mw.status, errNotJSON)
			return 0, mw.cause
		}
		return len(p), nil
	}
	if rest[0] != '{' && rest[0] != '[' {
		mw.fail(mw.status, errNotJSON)
		return 0, mw.cause
	}
	held := mw.sniff
	mw.sniff = nil
	mw.startMasking(jsonmask.ModeJSON)
	if _, err := mw.Write(held); err != nil {
		return 0, err
	}
	return len(p), nil
}

var utf8BOM = []byte("\xEF\xBB\xBF")

// sniffStart skips a byte order mark and white space; more is true when
// nothing else has arrived yet.
func sniffStart(b []byte) (rest []byte, more bool) {
	if len(b) < len(utf8BOM) && bytes.HasPrefix(utf8BOM, b) {
		return nil, true
	}
	b = bytes.TrimLeft(bytes.TrimPrefix(b, utf8BOM), " \t\r\n")
	return b, len(b) == 0
}

// maskerInput feeds (decoded) body bytes to the masker and ends the buffer
// phase at max_buffer.
type maskerInput struct{ mw *maskWriter }

func (in maskerInput) Write(p []byte) (int, error) {
	mw := in.mw
	if mw.state == stateRefused {
		return 0, mw.cause
	}
	if _, err := mw.stream.Write(p); err != nil {
		mw.fail(mw.status, err)
		return 0, mw.cause
	}
	mw.inBytes += int64(len(p))
	if !mw.committed && mw.inBytes > mw.h.MaxBuffer {
		mw.commit()
	}
	return len(p), nil
}

// sinkWriter receives the masker's output: into the buffer until the
// response is committed, to the client after (from the goroutine that owns
// the masker: the caller's, the decoder's or the pipeline's).
type sinkWriter struct{ mw *maskWriter }

func (s sinkWriter) Write(p []byte) (int, error) {
	if s.mw.committed {
		return s.mw.ResponseWriter.Write(p)
	}
	return s.mw.buf.Write(p)
}

// fail refuses the body. Before the response is committed, finish turns it
// into a 502; after, the response is aborted.
func (mw *maskWriter) fail(status int, cause error) {
	if mw.state == stateRefused {
		return
	}
	mw.state, mw.status, mw.cause = stateRefused, status, cause
	mw.h.logRefusal(mw.r, status, cause)
}

// commit sends the final status line and headers (and what was buffered);
// from then on masked output streams.
func (mw *maskWriter) commit() {
	if mw.committed {
		return
	}
	mw.committed = true
	if mw.state == stateMask {
		mw.maskedHeaders(-1)
	}
	mw.ResponseWriter.WriteHeader(mw.status)
	if mw.buf != nil && mw.buf.Len() > 0 {
		_, _ = mw.ResponseWriter.Write(mw.buf.Bytes())
	}
	// The buffer (up to max_buffer) is not needed any more: output streams
	// from now on, and a streaming response holds the pipeline's buffers
	// instead.
	mw.release()
}

// maskedHeaders fixes the headers of a masked body: its length (or none
// while streaming), no validators or digests of the unmasked body, no
// encoding (it was decoded), no trailers, and no sharing between callers.
// It may run on a decoder goroutine: it touches only the client's header
// map, which the handler behind no longer sees (detach).
func (mw *maskWriter) maskedHeaders(length int) {
	hdr := mw.ResponseWriter.Header()
	for _, name := range unmaskedBodyHeaders {
		hdr.Del(name)
	}
	for _, name := range []string{"Content-Length", "Content-Encoding", "Trailer"} {
		hdr.Del(name)
	}
	if length >= 0 {
		hdr.Set("Content-Length", strconv.Itoa(length))
	}
	privateHeaders(hdr, mw.h.vary)
}

// privateHeaders marks a response as one caller's: Vary by the key header,
// and Cache-Control private (keeping no-store).
func privateHeaders(hdr http.Header, vary string) {
	hdr.Add("Vary", vary)
	if strings.Contains(strings.ToLower(hdr.Get("Cache-Control")), "no-store") {
		hdr.Set("Cache-Control", "private, no-store")
	} else {
		hdr.Set("Cache-Control", "private")
	}
}

// finish completes the response after next returned.
func (mw *maskWriter) finish(nextErr error) error {
	if derr := mw.stopDecoder(nextErr); derr != nil {
		mw.fail(mw.status, derr)
	}
	switch mw.state {
	case stateMask:
		if nextErr == nil && mw.inBytes > 0 {
			if err := mw.stream.Close(); err != nil {
				mw.fail(mw.status, err)
				break
			}
		} else if nextErr == nil {
			// An empty body with a JSON type: nothing to mask.
			mw.maskedHeaders(0)
			mw.state = statePass
			mw.commit()
			return nil
		}
		if nextErr != nil {
			if mw.committed {
				// Part of the masked body is out and the rest will never
				// come: refused, so it is aborted below and the client
				// never sees a complete-looking, truncated document.
				mw.fail(mw.status, nextErr)
				break
			}
			mw.clearHeaders()
			return nextErr
		}
		if !mw.committed {
			mw.maskedHeaders(mw.buf.Len())
			mw.committed = true
			mw.ResponseWriter.WriteHeader(mw.status)
			_, err := mw.ResponseWriter.Write(mw.buf.Bytes())
			return err
		}
		return nil
	case stateSniff:
		if len(mw.sniff) > 0 {
			// Only white space (or a BOM): not JSON, and not empty.
			mw.fail(mw.status, errNotJSON)
			break
		}
		mw.state = statePass
		mw.commit()
		return nextErr
	case stateHold:
		// A non-JSON type with an empty body: nothing to refuse.
		mw.state = statePass
		mw.commit()
		return nextErr
	}
	if mw.state == stateRefused {
		if mw.committed {
			// Part of the masked body is out: abort, so the client sees
			// an incomplete response rather than a complete-looking one.
			panic(http.ErrAbortHandler)
		}
		return mw.refuse(mw.cause)
	}
	return nextErr
}

// refuse answers 502 for a refused body, after clearing the upstream's
// headers so that none of them describes a body that is not sent.
func (mw *maskWriter) refuse(cause error) error {
	mw.clearHeaders()
	if mw.buf != nil {
		mw.buf.Reset()
	}
	return caddyhttp.Error(http.StatusBadGateway, cause)
}

// clearHeaders empties the client's header map (and the handler's own,
// so that nothing it added later survives either).
func (mw *maskWriter) clearHeaders() {
	clear(mw.ResponseWriter.Header())
	if mw.late != nil {
		clear(mw.late)
	}
}

// ReadFrom must not reach the inner writer's ReadFrom (sendfile would send
// the file unmasked): everything goes through Write.
func (mw *maskWriter) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(writerOnly{mw}, r)
}

// FlushError ends the buffer phase (SPEC: the upstream's first Flush) and
// flushes what is masked so far. Once the pipeline streams, the flush is
// queued: the client is flushed as soon as everything written before it is
// masked and written, without the caller waiting (SPEC: Flush passes
// through; it just does not block the upstream meanwhile). While a decoder
// goroutine owns the output, or before anything is decided, it does
// nothing.
func (mw *maskWriter) FlushError() error {
	if mw.pipe != nil {
		return nil
	}
	if mw.pl != nil {
		return mw.pl.flush()
	}
	switch mw.state {
	case statePass:
		return http.NewResponseController(mw.ResponseWriter).Flush()
	case stateMask:
		mw.commit()
		return http.NewResponseController(mw.ResponseWriter).Flush()
	}
	return nil
}

// Flush is FlushError for http.Flusher callers.
func (mw *maskWriter) Flush() { _ = mw.FlushError() }

// Hijack is refused: a hijacked connection would bypass masking.
func (mw *maskWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if mw.pipe != nil {
		// The decoder goroutine owns the state: refuse without touching it.
		return nil, nil, errors.New("redact: connection hijack refused")
	}
	mw.fail(http.StatusSwitchingProtocols, errors.New("redact: connection hijack refused"))
	return nil, nil, mw.cause
}

// writerOnly hides every method but Write, so io.Copy cannot find a
// ReadFrom or WriterTo shortcut.
type writerOnly struct{ io.Writer }

// exposeWriter passes an exposed (opted-in) response unchanged but for the
// cache headers: one caller's unmasked variant must never be served to
// another by a shared cache.
type exposeWriter struct {
	*caddyhttp.ResponseWriterWrapper
	h    *Redact
	done bool
}

func (ew *exposeWriter) WriteHeader(status int) {
	if status >= 200 && !ew.done {
		ew.done = true
		privateHeaders(ew.Header(), ew.h.vary)
	}
	ew.ResponseWriter.WriteHeader(status)
}

func (ew *exposeWriter) Write(p []byte) (int, error) {
	if !ew.done {
		ew.WriteHeader(http.StatusOK)
	}
	return ew.ResponseWriter.Write(p)
}

// FlushError commits the cache headers before a flush can send the header.
func (ew *exposeWriter) FlushError() error {
	if !ew.done {
		ew.WriteHeader(http.StatusOK)
	}
	return http.NewResponseController(ew.ResponseWriter).Flush()
}

// Flush is FlushError for http.Flusher callers.
func (ew *exposeWriter) Flush() { _ = ew.FlushError() }

func (ew *exposeWriter) ReadFrom(r io.Reader) (int64, error) {
	if !ew.done {
		ew.WriteHeader(http.StatusOK)
	}
	return ew.ResponseWriterWrapper.ReadFrom(r)
}
