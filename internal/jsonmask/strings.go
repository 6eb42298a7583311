package jsonmask

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"math/bits"
	"unicode/utf16"
	"unicode/utf8"
)

// String content is scanned eight bytes at a time for the bytes that need
// attention: '"', '\\', control characters and non-ASCII (validated as
// UTF-8). Runs between them are handed in bulk to the sinks that the
// current value needs; a string that is copied verbatim has no sink and
// costs only the scan.

// Sinks: what string content feeds.
const (
	sinkNorm = 1 << iota // normalised member name
	sinkRaw              // raw content held back (rewritten later)
	sinkDec              // decoded content (detectors, partial)
	sinkHash             // HMAC of the decoded content
)

const (
	swarLo = 0x0101010101010101
	swarHi = 0x8080808080808080
)

// specialByte marks bytes that end a plain run inside a string.
var specialByte = func() (t [256]bool) {
	for i := 0; i < 0x20; i++ {
		t[i] = true
	}
	for i := 0x80; i < 0x100; i++ {
		t[i] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

// indexSpecial returns the index of the first special byte of b, or len(b).
func indexSpecial(b []byte) int {
	i := 0
	for ; i+8 <= len(b); i += 8 {
		x := binary.LittleEndian.Uint64(b[i:])
		q := x ^ (swarLo * '"')
		e := x ^ (swarLo * '\\')
		m := ((q-swarLo)&^q | (e-swarLo)&^e | (x - swarLo*0x20) | x) & swarHi
		if m != 0 {
			return i + bits.TrailingZeros64(m)>>3
		}
	}
	for ; i < len(b); i++ {
		if specialByte[b[i]] {
			return i
		}
	}
	return i
}

// asciiEnd returns the index of the closing quote when the string content
// starting at p[i] is pure ASCII without escapes and ends inside p, else -1.
// It is indexSpecial specialised for the hot path (one call, no tail loop
// while eight bytes remain in the chunk).
func asciiEnd(p []byte, i int) int {
	for ; i+8 <= len(p); i += 8 {
		if m := swarSpecial(binary.LittleEndian.Uint64(p[i : i+8])); m != 0 {
			j := i + bits.TrailingZeros64(m)>>3
			if p[j] == '"' {
				return j
			}
			return -1
		}
	}
	for ; i < len(p); i++ {
		if specialByte[p[i]] {
			if p[i] == '"' {
				return i
			}
			return -1
		}
	}
	return -1
}

// utf8Len is the length of a UTF-8 sequence by its first byte, 0 if invalid.
func utf8Len(c byte) int {
	switch {
	case c >= 0xC2 && c <= 0xDF:
		return 2
	case c >= 0xE0 && c <= 0xEF:
		return 3
	case c >= 0xF0 && c <= 0xF4:
		return 4
	}
	return 0
}

// carryNeed is the length of the token whose first bytes are c.
func carryNeed(c []byte) int {
	if c[0] == '\\' {
		if len(c) < 2 {
			return 2
		}
		if c[1] == 'u' {
			return 6
		}
		return 2
	}
	return utf8Len(c[0])
}

// beginString starts a string value at p[i] (the opening quote).
func (s *Stream) beginString(p []byte, i int, d disp) int {
	s.isName = false
	s.sink = 0
	s.hi = 0
	switch d {
	case dPlain:
		s.act = actCopy
		if s.cfg.detect {
			if k := asciiEnd(p, i+1); k >= 0 {
				return s.detectFast(p, i, k)
			}
			s.cut(p, i)
			s.act = actDetect
			s.sink = sinkRaw | sinkDec
			s.raw, s.rawOver = s.raw[:0], false
			s.startDec(s.cfg.maxValue)
		}
	case dKept:
		s.act = actCopy
	case dDropped:
		s.act = actSkip
	case dMasked:
		s.cut(p, i)
		s.fields++
		s.act = actSkip
		switch s.cfg.strategy {
		case StrategyMask:
			s.emitStr(`"[REDACTED]"`)
		case StrategyNull:
			s.emitStr("null")
		case StrategyPartial:
			s.act = actPartial
			s.sink = sinkDec
			s.startDec(partialCap)
		case StrategyHash:
			s.startHash()
			s.act = actHash
			s.sink = sinkHash
		}
	}
	s.st = stStr
	j, done := s.strRun(p, i+1)
	if done {
		s.endString(p, j)
	}
	return j
}

// detectFast handles a plain string value p[i:k+1] that lies inside the
// chunk, is ASCII and has no escapes, so raw and decoded bytes coincide.
func (s *Stream) detectFast(p []byte, i, k int) int {
	content := p[i+1 : k]
	if len(content) > s.cfg.maxValue {
		// Same rule as the held path: too long to inspect, replaced whole.
		s.cut(p, i)
		s.applyDetected(nil, nil, nil, true)
		s.resume(k + 1)
		s.endValue()
		return k + 1
	}
	spans := s.findPII(content)
	if len(spans) == 0 {
		if s.pending {
			s.commit(p, i)
		}
		s.endValue()
		return k + 1
	}
	s.cut(p, i)
	s.applyDetected(content, content, spans, false)
	s.resume(k + 1)
	s.endValue()
	return k + 1
}

// applyDetected writes a string value in which detectors found spans (or
// that was too long to inspect: whole).
func (s *Stream) applyDetected(raw, dec []byte, spans []span, whole bool) {
	if whole {
		s.fields++
	} else {
		s.fields += int64(len(spans))
	}
	switch s.cfg.strategy {
	case StrategyRemove:
		if s.pending {
			s.dropPending()
		} else {
			s.emitStr("null") // the root
		}
	case StrategyNull:
		s.emitStr("null")
	default:
		if whole {
			s.emitStr(`"[REDACTED]"`)
			return
		}
		s.rw = s.appendDetected(s.rw[:0], raw, dec, spans)
		s.emit(s.rw)
	}
}

// beginName starts a member name at p[i] (the opening quote).
func (s *Stream) beginName(p []byte, i int) int {
	f := &s.frames[len(s.frames)-1]
	s.isName = true
	s.namePII = false
	det := s.cfg.detect && f.disp <= dMasked
	if k := asciiEnd(p, i+1); k >= 0 {
		raw := p[i+1 : k]
		if s.cfg.paths == nil && f.disp == dPlain {
			s.vdisp = dPlain // inlined nameDecide for the common case
			if s.cfg.names != nil && s.cfg.names.matchRaw(raw) {
				s.vdisp = dMasked
			}
		} else {
			s.nameDecide(nameRef{ascii: true, raw: raw})
		}
		if det && s.vdisp <= dMasked {
			if len(raw) > s.cfg.maxValue {
				// Too long to inspect (same rule as the slow path).
				if s.cfg.remove {
					s.namePII = true
				} else {
					s.fields++
					s.cut(p, i)
					s.emitStr(`"[REDACTED]"`)
					s.resume(k + 1)
				}
			} else if spans := s.findPII(raw); len(spans) > 0 {
				if s.cfg.remove {
					s.namePII = true
				} else {
					s.fields += int64(len(spans))
					s.cut(p, i)
					s.rw = s.appendDetected(s.rw[:0], raw, raw, spans)
					s.emit(s.rw)
					s.resume(k + 1)
				}
			}
		}
		s.isName = false
		s.st = stColon
		return k + 1
	}
	s.name, s.nameTrunc = s.name[:0], false
	s.raw, s.rawOver = s.raw[:0], false
	s.sink = sinkNorm
	s.hi = 0
	s.nameDet = det
	if det {
		s.sink |= sinkDec
		s.startDec(s.cfg.maxValue)
		if !s.cfg.remove {
			s.sink |= sinkRaw
			s.raw, s.rawOver = s.raw[:0], false
			s.cut(p, i)
		}
	}
	s.st = stStr
	j, done := s.strRun(p, i+1)
	if done {
		s.endString(p, j)
	}
	return j
}

// endName finishes a member name read through the slow path; j is the
// index after its closing quote.
func (s *Stream) endName(p []byte, j int) {
	s.isName = false
	s.nameDecide(nameRef{norm: s.name, trunc: s.nameTrunc})
	s.st = stColon
	if !s.nameDet {
		return
	}
	s.nameDet = false
	if s.vdisp <= dMasked {
		whole := s.rawOver || s.decOver
		var spans []span
		if !whole {
			spans = s.findPII(s.dec)
		}
		if whole || len(spans) > 0 {
			if s.cfg.remove {
				s.namePII = true
				return
			}
			if whole {
				s.fields++
				s.emitStr(`"[REDACTED]"`)
			} else {
				s.fields += int64(len(spans))
				s.rw = s.appendDetected(s.rw[:0], s.raw, s.dec, spans)
				s.emit(s.rw)
			}
			s.resume(j)
			return
		}
	}
	if !s.cfg.remove {
		s.emitQuoted(s.raw)
		s.resume(j)
	}
}

func (s *Stream) emitQuoted(raw []byte) {
	s.rw = append(append(append(s.rw[:0], '"'), raw...), '"')
	s.emit(s.rw)
}

// endString finishes a string; j is the index after its closing quote.
func (s *Stream) endString(p []byte, j int) {
	if s.hi != 0 {
		s.flushHi()
	}
	if s.isName {
		s.sink = 0
		s.endName(p, j)
		return
	}
	s.sink = 0
	switch s.act {
	case actSkip:
		s.resume(j)
	case actHash:
		s.emitToken()
		s.resume(j)
	case actPartial:
		s.emitPartial()
		s.resume(j)
	case actDetect:
		whole := s.rawOver || s.decOver
		var spans []span
		if !whole {
			spans = s.findPII(s.dec)
		}
		if whole || len(spans) > 0 {
			s.applyDetected(s.raw, s.dec, spans, whole)
		} else {
			if s.pending {
				s.commit(p, j)
			}
			s.emitQuoted(s.raw)
		}
		s.resume(j)
	}
	s.endValue()
}

// strRun scans string content from p[i]. It returns the index after the
// closing quote and true, or len(p) and false when the chunk ended first
// (or an error was recorded).
func (s *Stream) strRun(p []byte, i int) (int, bool) {
	n := len(p)
	for {
		j := i + indexSpecial(p[i:])
		if s.sink != 0 && j > i {
			s.feed(p[i:j])
		}
		if j >= n {
			return n, false
		}
		c := p[j]
		if c == '"' {
			return j + 1, true
		}
		if c < 0x20 {
			s.fail(j, "control character in string")
			return n, false
		}
		var need int
		if c == '\\' {
			need = 2
			if j+1 < n && p[j+1] == 'u' {
				need = 6
			}
		} else if need = utf8Len(c); need == 0 {
			s.fail(j, "invalid UTF-8")
			return n, false
		}
		if j+need > n {
			s.ncarry = copy(s.carry[:], p[j:n])
			s.st = stStrCarry
			return n, false
		}
		if !s.token(p[j:j+need], j) {
			return n, false
		}
		i = j + need
	}
}

// token handles one complete escape sequence or multi-byte UTF-8 sequence.
func (s *Stream) token(t []byte, off int) bool {
	if t[0] != '\\' {
		r, size := utf8.DecodeRune(t)
		if r == utf8.RuneError && size <= 1 {
			s.fail(off, "invalid UTF-8")
			return false
		}
		if s.sink != 0 {
			if s.hi != 0 {
				s.flushHi()
			}
			if s.sink&sinkNorm != 0 {
				s.nameRune(r)
			}
			if s.sink&sinkRaw != 0 {
				s.appendRaw(t)
			}
			if s.sink&sinkDec != 0 {
				s.appendDec(t)
			}
			if s.sink&sinkHash != 0 {
				s.hm.Write(t)
			}
		}
		return true
	}
	if t[1] == 'u' {
		var r rune
		for _, c := range t[2:6] {
			v := unhex[c]
			if v == 0xff {
				s.fail(off, "invalid \\u escape")
				return false
			}
			r = r<<4 | rune(v)
		}
		if s.sink == 0 {
			return true
		}
		if s.sink&sinkRaw != 0 {
			s.appendRaw(t)
		}
		if utf16.IsSurrogate(r) {
			if r < 0xDC00 { // high half: wait for the low half
				if s.hi != 0 {
					s.flushHi()
				}
				s.hi = r
				return true
			}
			if s.hi != 0 {
				r = utf16.DecodeRune(s.hi, r)
				s.hi = 0
			} else {
				r = utf8.RuneError
			}
		} else if s.hi != 0 {
			s.flushHi()
		}
		s.decRune(r)
		return true
	}
	d := unescape[t[1]]
	if d == 0 {
		s.fail(off, "invalid escape")
		return false
	}
	if s.sink != 0 {
		if s.sink&sinkRaw != 0 {
			s.appendRaw(t)
		}
		if s.hi != 0 {
			s.flushHi()
		}
		s.decRune(rune(d))
	}
	return true
}

var unescape = func() (t [256]byte) {
	t['"'], t['\\'], t['/'] = '"', '\\', '/'
	t['b'], t['f'], t['n'], t['r'], t['t'] = '\b', '\f', '\n', '\r', '\t'
	return t
}()

var unhex = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = byte(c - '0')
	}
	for c := 'a'; c <= 'f'; c++ {
		t[c] = byte(c - 'a' + 10)
		t[c-'a'+'A'] = byte(c - 'a' + 10)
	}
	return t
}()

// feed hands a run of plain ASCII content (raw = decoded) to the sinks.
func (s *Stream) feed(b []byte) {
	if s.hi != 0 {
		s.flushHi()
	}
	if s.sink&sinkNorm != 0 {
		for _, c := range b {
			if nb := normASCII[c]; nb != 0 {
				s.nameByte(nb)
			}
		}
	}
	if s.sink&sinkRaw != 0 {
		s.appendRaw(b)
	}
	if s.sink&sinkDec != 0 {
		s.appendDec(b)
	}
	if s.sink&sinkHash != 0 {
		s.hm.Write(b)
	}
}

// flushHi decodes a lone high surrogate as U+FFFD.
func (s *Stream) flushHi() {
	s.hi = 0
	s.decRune(utf8.RuneError)
}

// decRune hands a decoded rune (from an escape) to the decoding sinks.
func (s *Stream) decRune(r rune) {
	if s.sink&sinkNorm != 0 {
		s.nameRune(r)
	}
	if s.sink&(sinkDec|sinkHash) != 0 {
		s.tmp = utf8.AppendRune(s.tmp[:0], r)
		if s.sink&sinkDec != 0 {
			s.appendDec(s.tmp)
		}
		if s.sink&sinkHash != 0 {
			s.hm.Write(s.tmp)
		}
	}
}

func (s *Stream) nameByte(b byte) {
	if len(s.name) >= nameCap {
		// Keep the tail: suffix rules still work, exact ones cannot match.
		copy(s.name, s.name[len(s.name)-maxPatternLen:])
		s.name = s.name[:maxPatternLen]
		s.nameTrunc = true
	}
	s.name = append(s.name, b)
}

func (s *Stream) nameRune(r rune) {
	f := foldRune(r)
	if f < 0 {
		return
	}
	if f < utf8.RuneSelf {
		s.nameByte(byte(f))
		return
	}
	var b [utf8.UTFMax]byte
	n := utf8.EncodeRune(b[:], f)
	for _, c := range b[:n] {
		s.nameByte(c)
	}
}

func (s *Stream) appendRaw(b []byte) {
	if s.rawOver {
		return
	}
	if len(s.raw)+len(b) > s.cfg.maxValue {
		s.rawOver = true
		return
	}
	s.raw = append(s.raw, b...)
}

func (s *Stream) startDec(limit int) {
	s.dec, s.decOver, s.decCap = s.dec[:0], false, limit
}

// appendDec collects decoded bytes up to decCap; past it, what fits is kept
// (partial still needs the first character) and decOver is set.
func (s *Stream) appendDec(b []byte) {
	if s.decOver {
		return
	}
	if room := s.decCap - len(s.dec); len(b) > room {
		s.dec = append(s.dec, b[:room]...)
		s.decOver = true
		return
	}
	s.dec = append(s.dec, b...)
}

func (s *Stream) startHash() {
	if s.hm == nil {
		s.hm = hmac.New(sha256.New, s.cfg.hashKey)
	}
	s.hm.Reset()
}

func (s *Stream) emitToken() {
	s.sum = s.hm.Sum(s.sum[:0])
	s.rw = append(s.rw[:0], '"')
	s.rw = appendToken(s.rw, s.sum)
	s.rw = append(s.rw, '"')
	s.emit(s.rw)
}

func (s *Stream) emitPartial() {
	s.rw = append(s.rw[:0], '"')
	s.rw = appendPartial(s.rw, s.dec, s.decOver, kindUnknown)
	s.rw = append(s.rw, '"')
	s.emit(s.rw)
}

// swarSpecial flags (high bit) the bytes of x that end a plain run: '"',
// '\\', control characters and non-ASCII. The lowest flag is exact; flags
// above it may be false positives (borrows), which no caller looks at.
func swarSpecial(x uint64) uint64 {
	q := x ^ (swarLo * '"')
	e := x ^ (swarLo * '\\')
	return ((q-swarLo)&^q | (e-swarLo)&^e | (x - swarLo*0x20) | x) & swarHi
}

// skipString returns the index of the closing quote when the string content
// starting at p[i] is valid and ends inside p, else -1 (the general path
// then reports the error or waits for the rest). It is what strRun and
// token check for a string that no sink needs (copied verbatim, or masked
// whole by mask or null), without decoding anything: the fast loop's way
// over values with escapes or non-ASCII text.
func skipString(p []byte, i int) int {
	n := len(p)
	for {
		j := i + indexSpecial(p[i:])
		if j >= n {
			return -1
		}
		c := p[j]
		switch {
		case c == '"':
			return j
		case c == '\\':
			if j+1 >= n {
				return -1
			}
			if p[j+1] != 'u' {
				if unescape[p[j+1]] == 0 {
					return -1
				}
				i = j + 2
				continue
			}
			if j+6 > n {
				return -1
			}
			for _, h := range p[j+2 : j+6] {
				if unhex[h] == 0xff {
					return -1
				}
			}
			i = j + 6
		case c < 0x20:
			return -1
		default:
			need := utf8Len(c)
			if need == 0 || j+need > n {
				return -1
			}
			if r, size := utf8.DecodeRune(p[j : j+need]); r == utf8.RuneError && size <= 1 {
				return -1
			}
			i = j + need
		}
	}
}
