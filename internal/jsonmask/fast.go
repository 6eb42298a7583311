package jsonmask

import (
	"encoding/binary"
	"math/bits"
)

// fast is the hot loop for the most common policy (no paths, no detectors,
// strategy mask or null) inside containers. It walks whole tokens that lie
// inside the current chunk — member names that are ASCII without escapes,
// string values (validated, never decoded: they are copied or masked
// whole), numbers, literals, brackets, commas, colons and white space —
// keeping the state in locals, and only leaves the loop when the document
// does something else (an escape or non-ASCII byte in a member name, a
// token cut by the end of the chunk, an error, the end of the top-level
// value). It then returns with s.st, s.vdisp and the nesting stack exactly
// as the general state machine would have left them at that byte, so the
// general path carries on from there and both produce the same bytes at
// every split; TestFastLoopMatchesGeneral and FuzzFastLoop compare the two.
//
// With this policy a container's disposition is only dPlain or dMasked
// (dKept needs a keep path, dDropped the remove strategy), so a value is
// masked when its container is or when its member name matches.
//
// fast returns the index to continue at. It may return i unchanged with
// s.st unchanged, having done nothing; the caller then uses the general
// path for that byte.
func (s *Stream) fast(p []byte, i int) int {
	// The loop is written with labels, one per state, because the next
	// state is almost always known statically (a name is followed by a
	// colon and a value, a value by a comma or a bracket): jumping there
	// directly avoids a dispatch per token and keeps the few live values in
	// registers. Every label is at the top level of the function, and all
	// variables are declared before the first jump.
	var (
		n        = len(p)
		k        int
		m        uint64
		c        byte
		d        = s.vdisp
		fArr     bool // the container on top of the stack
		fDisp    disp
		isName   bool // which string str is scanning
		w0, w1   uint64
		nc       *nameCacheEntry
		nset     *[2]nameCacheEntry
		nb       []byte
		names    = s.cfg.names
		repl     = s.cfg.fastRepl
		replMask = repl == `"[REDACTED]"` // written as replMask0, replMask1
	)
	fArr, fDisp = s.frames[len(s.frames)-1].array, s.frames[len(s.frames)-1].disp
	switch s.st {
	case stObjFirst:
		goto objFirst
	case stObjName:
		goto objName
	case stArrFirst:
		goto arrFirst
	case stValue:
		goto value
	}
	goto after

objFirst: // after '{'
	if i >= n {
		s.st = stObjFirst
		return i
	}
	if p[i] == '"' {
		goto name
	}
	if p[i] == '}' {
		goto closing
	}
	if s.ws[p[i]] {
		i++
		goto objFirst
	}
	s.st = stObjFirst
	return i

objName: // after ',' in an object
	if i >= n {
		s.st = stObjName
		return i
	}
	if p[i] == '"' {
		goto name
	}
	if s.ws[p[i]] {
		i++
		goto objName
	}
	s.st = stObjName
	return i

name: // p[i] is the opening quote of a member name
	isName = true
	if fDisp != dPlain || names == nil || i+17 > n {
		goto str
	}
	// A name seen before is recognised without scanning it: the cache set
	// is chosen by the first four bytes after the quote, and an entry
	// matches when the next sixteen bytes, masked to the entry's length
	// plus one, are exactly its name and a closing quote (a name in the
	// cache is plain ASCII without escapes, so nothing else can match).
	nb = p[i+1 : i+17]
	w0, w1 = binary.LittleEndian.Uint64(nb[:8]), binary.LittleEndian.Uint64(nb[8:])
	nset = &s.nameCache[uint32(w0)*0x9e3779b1>>(32-nameCacheBits)]
	if nc = &nset[0]; w0&nc.m0 == nc.k0 && w1&nc.m1 == nc.k1 && nc.d != 0 {
		k, d = i+1+int(nc.l), nc.d-1
		goto nameDecided
	}
	if nc = &nset[1]; w0&nc.m0 == nc.k0 && w1&nc.m1 == nc.k1 && nc.d != 0 {
		k, d = i+1+int(nc.l), nc.d-1
		goto nameDecided
	}
	k = asciiEnd(p, i+1)
	if k < 0 || k-i > 16 {
		goto nameEnd
	}
	// A miss: the name (at most 15 bytes) goes into the set, the older
	// entry moving to the second way.
	d = dPlain
	if names.mayMatch(p[i+1:k]) && names.matchRaw(p[i+1:k]) {
		d = dMasked
	}
	nset[1] = nset[0]
	nset[0] = newNameCacheEntry(w0, w1, k-i-1, d)
	goto nameDecided
nameEnd: // k is the closing quote of the name, or -1
	if k < 0 {
		s.st = stObjName // same as stObjFirst before a quote
		return i         // escapes, non-ASCII or cut: the general path
	}
	d = fDisp
	if d == dPlain {
		if names != nil && names.mayMatch(p[i+1:k]) && names.matchRaw(p[i+1:k]) {
			d = dMasked
		}
	}
nameDecided: // d is the disposition of the member's value
	i = k + 1
	if i < n && p[i] == ':' {
		i++
		goto value
	}
	for i < n && s.ws[p[i]] {
		i++
	}
	if i < n && p[i] == ':' {
		i++
		goto value
	}
	s.vdisp = d
	s.st = stColon
	return i

arrFirst: // after '['
	if i >= n {
		s.st = stArrFirst
		return i
	}
	if p[i] == ']' {
		goto closing
	}
	if s.ws[p[i]] {
		i++
		goto arrFirst
	}
	d = fDisp
	goto value

value: // a value whose disposition is d starts at p[i]
	if i >= n {
		s.vdisp = d
		s.st = stValue
		return i
	}
	c = p[i]
	if c == '"' {
		isName = false
		goto str
	}
	goto scalar
valueEnd: // k is the closing quote of the string value at p[i], or -1
	if k < 0 {
		// Escapes or non-ASCII text: validated here as well, since the
		// value is copied or masked whole either way.
		if k = skipString(p, i+1); k < 0 {
			s.vdisp = d
			s.st = stValue
			return i
		}
	}
	if d == dMasked {
		// maskSpan inlined for the common case: the verbatim run before
		// the value and the replacement both fit in the output buffer.
		if e := s.span; e >= 0 && e <= i && len(s.out)+(i-e)+len(repl) <= s.outMax {
			// Most runs between two masked values are short (a comma and
			// a name): 8 to 32 bytes are copied as overlapping words,
			// without a call. Only the run's own bytes are read and
			// written: nothing of the value being masked is ever copied,
			// not even into the buffer's spare capacity.
			if o, l := len(s.out), i-e; l >= 8 && l <= 32 {
				out, in := s.out[o:o+l], p[e:i]
				binary.LittleEndian.PutUint64(out, binary.LittleEndian.Uint64(in))
				if l > 16 {
					binary.LittleEndian.PutUint64(out[8:], binary.LittleEndian.Uint64(in[8:]))
					if l > 24 {
						binary.LittleEndian.PutUint64(out[16:], binary.LittleEndian.Uint64(in[16:]))
					}
				}
				binary.LittleEndian.PutUint64(out[l-8:], binary.LittleEndian.Uint64(in[l-8:]))
				s.out = s.out[:o+l]
			} else {
				s.out = append(s.out, p[e:i]...)
			}
			if o := len(s.out); replMask { // two stores
				out := s.out[o : o+12]
				binary.LittleEndian.PutUint64(out[0:], replMask0)
				binary.LittleEndian.PutUint32(out[8:], replMask1)
				s.out = s.out[:o+12]
			} else {
				s.out = append(s.out, repl...)
			}
			s.fields++
			s.span = k + 1
		} else {
			s.maskSpan(p, i, k+1)
		}
	}
	i = k + 1
	goto after

scalar: // c = p[i] starts a value other than a string
	switch c {
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		nst := nStart
		for k = i; k < n; k++ {
			nx := numTab[nst][numClass[p[k]]]
			if nx >= nEnd {
				break
			}
			nst = nx
		}
		if k == n || !numTerminal[nst] || numTab[nst][numClass[p[k]]] == nErr {
			s.vdisp = d
			s.st = stValue
			return i // cut, or invalid: the general path decides
		}
		if d == dMasked {
			s.maskSpan(p, i, k)
		}
		i = k
		goto after
	case 't', 'f', 'n':
		lit := "null"
		if c == 't' {
			lit = "true"
		} else if c == 'f' {
			lit = "false"
		}
		if i+len(lit) > n || string(p[i:i+len(lit)]) != lit {
			s.vdisp = d
			s.st = stValue
			return i
		}
		if d == dMasked && c != 'n' { // null stays null
			s.maskSpan(p, i, i+len(lit))
		}
		i += len(lit)
		goto after
	case '{', '[':
		if len(s.frames) >= s.cfg.maxDepth {
			s.vdisp = d
			s.st = stValue
			return i // the general path reports it
		}
		fArr, fDisp = c == '[', d
		s.frames = append(s.frames, frame{array: fArr, disp: fDisp})
		i++
		if fArr {
			goto arrFirst
		}
		goto objFirst
	}
	if s.ws[c] {
		i++
		goto value
	}
	s.vdisp = d
	s.st = stValue
	return i

after: // after a value inside the container on top
	if i >= n {
		s.st = stAfter
		return i
	}
	c = p[i]
	if c == ',' {
		i++
		if fArr {
			d = fDisp
			goto value
		}
		goto objName
	}
	if c == '}' || c == ']' {
		if fArr != (c == ']') {
			s.st = stAfter
			return i // mismatched: the general path reports it
		}
		goto closing
	}
	if s.ws[c] {
		i++
		goto after
	}
	s.st = stAfter
	return i

str: // p[i] opens a string: k = asciiEnd(p, i+1), its first sixteen bytes inline
	k = i + 1
	if k+16 <= n {
		nb = p[k : k+16]
		if m = swarSpecial(binary.LittleEndian.Uint64(nb[:8])); m == 0 {
			if m = swarSpecial(binary.LittleEndian.Uint64(nb[8:])); m == 0 {
				k = asciiEnd(p, k+16)
				goto strDone
			}
			k += 8
		}
		if k += bits.TrailingZeros64(m) >> 3; p[k] != '"' {
			k = -1
		}
	} else {
		k = asciiEnd(p, k)
	}
strDone:
	if isName {
		goto nameEnd
	}
	goto valueEnd

closing: // p[i] closes the container on top (checked by the caller)
	i++
	s.frames = s.frames[:len(s.frames)-1]
	if len(s.frames) == 0 {
		s.endValue()
		return i
	}
	fArr, fDisp = s.frames[len(s.frames)-1].array, s.frames[len(s.frames)-1].disp
	goto after
}

// replMask0 and replMask1 are the bytes of "[REDACTED]" (with its quotes)
// as little-endian words.
const (
	replMask0 = uint64('"') | uint64('[')<<8 | uint64('R')<<16 | uint64('E')<<24 | uint64('D')<<32 | uint64('A')<<40 | uint64('C')<<48 | uint64('T')<<56
	replMask1 = uint32('E') | uint32('D')<<8 | uint32(']')<<16 | uint32('"')<<24
)

// nameCacheBits sizes the per-Stream cache of member names (two entries
// per set): API documents repeat a few dozen names, and a hit costs two
// loads and two masked compares instead of a scan of the name and a walk
// of the suffix trie.
const nameCacheBits = 7

// nameCacheEntry is a member name of at most 15 bytes followed by its
// closing quote, as little-endian words k0, k1 with the masks m0, m1 of
// those bytes; l is the name's length and d its disposition plus one (0:
// empty; then the masks are zero and d decides).
type nameCacheEntry struct {
	k0, k1, m0, m1 uint64
	l              uint8
	d              disp
}

// newNameCacheEntry makes the entry for the name of length l (at most 15)
// whose bytes start w0, w1 (the words read at the name's first byte).
func newNameCacheEntry(w0, w1 uint64, l int, d disp) nameCacheEntry {
	e := nameCacheEntry{l: uint8(l), d: d + 1}
	if l < 8 {
		e.m0 = byteMask(l + 1)
		e.k0 = w0&byteMask(l) | '"'<<(8*l)
	} else {
		e.m0, e.k0 = ^uint64(0), w0
		e.m1 = byteMask(l - 7)
		e.k1 = w1&byteMask(l-8) | '"'<<(8*(l-8))
	}
	return e
}

// byteMask covers the first n bytes (0 to 8) of a little-endian word.
func byteMask(n int) uint64 {
	if n >= 8 {
		return ^uint64(0)
	}
	return 1<<(8*n) - 1
}

// maskSpan replaces the scalar p[i:e] by the strategy's replacement: what precedes it goes out,
// the verbatim span restarts after it. In the fast loop's policy nothing
// is ever pending or dropped, so this is cut, emitStr and resume in one.
func (s *Stream) maskSpan(p []byte, i, e int) {
	if s.span >= 0 && i > s.span {
		s.emit(p[s.span:i])
	}
	repl := s.cfg.fastRepl
	if len(s.out)+len(repl) <= cap(s.out) {
		s.out = append(s.out, repl...)
	} else {
		s.emitStr(repl)
	}
	s.fields++
	s.span = e
}
