package jsonmask

// The scanner is a resumable byte-wise state machine over RFC 8259 JSON
// with fast paths for whole tokens inside the current chunk. The state
// survives between writes, so a document may be split at any byte.
//
// Output is produced as spans: s.span marks the start of input bytes that
// are copied verbatim; a span is cut (written out) just before a value that
// must be rewritten and resumed after it. At the end of a chunk the open
// span is written, so only decided bytes ever leave.

type state uint8

const (
	stBOM      state = iota // at the start of the stream: an optional UTF-8 BOM
	stSeqStart              // json-seq: before the first RS
	stTop                   // before a top-level value
	stTopAfter              // after a top-level value
	stObjFirst              // after '{'
	stObjName               // after ',' in an object
	stColon                 // after a member name
	stValue                 // before a member value or array element
	stArrFirst              // after '['
	stAfter                 // after a value inside a container
	stStr                   // inside string content
	stStrCarry              // inside an escape or UTF-8 sequence split across writes
	stNum                   // inside a number
	stLit                   // inside true, false or null
)

const rs = 0x1e // RFC 7464 record separator

var wsAll, wsNoNL [256]bool

func init() {
	for _, c := range " \t\r\n" {
		wsAll[c] = true
	}
	for _, c := range " \t\r" {
		wsNoNL[c] = true
	}
}

var bomBytes = [3]byte{0xEF, 0xBB, 0xBF}

// Static texts hashed for booleans (a []byte conversion would allocate).
var litTrue, litFalse = []byte("true"), []byte("false")

func (s *Stream) run(p []byte) {
	n := len(p)
	i := 0
	s.span = -1
	if s.collect {
		s.span = 0
	}
	ws := s.ws
	for i < n && s.err == nil {
		if s.cfg.fastPath && len(s.frames) > 0 {
			// Inside containers the common policy takes the fast loop; it
			// hands back whatever it does not handle.
			switch st := s.st; st {
			case stObjFirst, stObjName, stArrFirst, stValue, stAfter:
				if j := s.fast(p, i); j != i || s.st != st {
					i = j
					continue
				}
			}
		}
		switch s.st {
		case stBOM:
			for s.bom < 3 && i < n {
				if s.bom == 0 && p[i] != bomBytes[0] {
					break
				}
				if p[i] != bomBytes[s.bom] {
					s.fail(i, "invalid byte order mark")
					return
				}
				s.bom++
				i++
			}
			if s.bom == 0 || s.bom == 3 {
				s.st = stTop
				if s.mode == ModeJSONSeq {
					s.st = stSeqStart
				}
				s.span = i
			}

		case stSeqStart:
			for i < n && wsAll[p[i]] {
				i++
			}
			if i < n {
				if p[i] != rs {
					s.fail(i, "JSON text sequence must start with RS")
					return
				}
				i++
				s.st = stTop
			}

		case stTop:
			for i < n && wsAll[p[i]] {
				i++
			}
			if i == n {
				break
			}
			if p[i] == rs && s.mode == ModeJSONSeq {
				i++
				continue
			}
			s.rootDecide()
			i = s.value(p, i)

		case stTopAfter:
			switch s.mode {
			case ModeJSON:
				for i < n && wsAll[p[i]] {
					i++
				}
				if i < n {
					s.fail(i, "data after the top-level value")
					return
				}
			case ModeNDJSON:
				for i < n && wsNoNL[p[i]] {
					i++
				}
				if i < n {
					if p[i] != '\n' {
						s.fail(i, "data after the value on an NDJSON line")
						return
					}
					i++
					s.st = stTop
				}
			case ModeJSONSeq:
				for i < n && wsAll[p[i]] {
					i++
				}
				if i < n {
					if p[i] != rs {
						s.fail(i, "data after the value in a JSON text sequence record")
						return
					}
					i++
					s.st = stTop
				}
			}

		case stObjFirst, stObjName:
			for i < n && ws[p[i]] {
				i++
			}
			if i == n {
				break
			}
			switch p[i] {
			case '"':
				i = s.beginName(p, i)
				// Usually the colon and the value follow at once.
				if s.st == stColon && i < n && p[i] == ':' {
					i++
					s.st = stValue
					for i < n && ws[p[i]] {
						i++
					}
					if i < n && s.err == nil {
						i = s.value(p, i)
					}
				}
			case '}':
				if s.st == stObjName {
					s.fail(i, "trailing comma in object")
					return
				}
				i = s.closeContainer(p, i, false)
			default:
				s.fail(i, "expected a member name")
				return
			}

		case stColon:
			for i < n && ws[p[i]] {
				i++
			}
			if i == n {
				break
			}
			if p[i] != ':' {
				s.fail(i, "expected ':' after member name")
				return
			}
			i++
			s.st = stValue
			for i < n && ws[p[i]] {
				i++
			}
			if i < n {
				i = s.value(p, i)
			}

		case stValue:
			for i < n && ws[p[i]] {
				i++
			}
			if i < n {
				i = s.value(p, i)
			}

		case stArrFirst:
			for i < n && ws[p[i]] {
				i++
			}
			if i == n {
				break
			}
			if p[i] == ']' {
				i = s.closeContainer(p, i, true)
				break
			}
			s.elemDecide()
			i = s.value(p, i)

		case stAfter:
			for i < n && ws[p[i]] {
				i++
			}
			if i == n {
				break
			}
			f := &s.frames[len(s.frames)-1]
			switch p[i] {
			case ',':
				if s.cfg.remove && f.disp <= dMasked {
					s.cut(p, i)
					s.span = i + 1
					s.pending = true
				}
				i++
				if f.array {
					s.elemDecide()
					s.st = stValue
				} else {
					s.st = stObjName
					// Compact objects: the next name follows at once.
					if i < n && p[i] == '"' {
						i = s.beginName(p, i)
						if s.st == stColon && i < n && p[i] == ':' {
							i++
							s.st = stValue
							for i < n && ws[p[i]] {
								i++
							}
							if i < n && s.err == nil {
								i = s.value(p, i)
							}
						}
					}
				}
			case '}':
				i = s.closeContainer(p, i, false)
			case ']':
				i = s.closeContainer(p, i, true)
			default:
				s.fail(i, "expected ',' or end of container")
				return
			}

		case stStr:
			j, done := s.strRun(p, i)
			i = j
			if done {
				s.endString(p, j)
			}

		case stStrCarry:
			for i < n {
				need := carryNeed(s.carry[:s.ncarry])
				if s.ncarry >= need {
					break
				}
				s.carry[s.ncarry] = p[i]
				s.ncarry++
				i++
			}
			need := carryNeed(s.carry[:s.ncarry])
			if s.ncarry < need {
				break
			}
			s.ncarry = 0
			if !s.token(s.carry[:need], i) {
				return
			}
			s.st = stStr

		case stNum:
			i = s.numRun(p, i)

		case stLit:
			i = s.litRun(p, i)
		}
	}
	if s.err != nil {
		return
	}
	if s.span >= 0 && s.span < n {
		s.emit(p[s.span:n])
	}
	s.collect = s.span >= 0
}

// rootDecide sets the disposition of a top-level value.
func (s *Stream) rootDecide() {
	s.vdisp = dPlain
	s.namePII = false
	if a := s.cfg.paths; a != nil {
		s.vnfa = a.start
		if s.vnfa.hits(&a.keepAcc) {
			s.vdisp = dKept
		} else if s.vnfa.hits(&a.selAcc) {
			s.vdisp = dMasked
		}
	}
}

// elemDecide sets the disposition of the next element of the array on top.
func (s *Stream) elemDecide() {
	f := &s.frames[len(s.frames)-1]
	s.namePII = false
	if f.disp >= dKept {
		s.vdisp = f.disp
		return
	}
	d := f.disp
	if a := s.cfg.paths; a != nil {
		ps := &s.nfas[len(s.nfas)-1]
		f.next++
		if ps.empty() {
			s.vnfa = nfaSet{}
		} else {
			s.vnfa = a.step(ps, false, nameRef{index: f.next - 1})
			if s.vnfa.hits(&a.keepAcc) {
				s.vdisp = dKept
				return
			}
			if s.vnfa.hits(&a.selAcc) {
				d = dMasked
			}
		}
	}
	s.vdisp = d
}

// nameDecide sets the disposition of the value of the member named nm in
// the object on top.
func (s *Stream) nameDecide(nm nameRef) {
	f := &s.frames[len(s.frames)-1]
	if f.disp >= dKept {
		s.vdisp = f.disp
		return
	}
	d := f.disp
	if a := s.cfg.paths; a != nil {
		ps := &s.nfas[len(s.nfas)-1]
		if ps.empty() {
			s.vnfa = nfaSet{}
		} else {
			s.vnfa = a.step(ps, true, nm)
			if s.vnfa.hits(&a.keepAcc) {
				s.vdisp = dKept
				return
			}
			if s.vnfa.hits(&a.selAcc) {
				d = dMasked
			}
		}
	}
	if d == dPlain && s.cfg.names != nil {
		var hit bool
		if nm.ascii {
			hit = s.cfg.names.matchRaw(nm.raw)
		} else {
			hit = s.cfg.names.matchNorm(nm.norm, nm.trunc)
		}
		if hit {
			d = dMasked
		}
	}
	s.vdisp = d
}

// keepAlive reports whether a keep path may still match inside the value
// about to start.
func (s *Stream) keepAlive() bool {
	return s.cfg.paths != nil && s.vnfa.hits(&s.cfg.paths.keepAll)
}

// value starts the value whose first byte is p[i] and returns the index to
// continue at.
func (s *Stream) value(p []byte, i int) int {
	c := p[i]
	d := s.vdisp
	if s.cfg.remove {
		container := c == '{' || c == '['
		if s.pending {
			drop := s.pendDrop || s.namePII || s.pendTotal(i) > s.pendLimit() ||
				(d == dMasked && (!container || !s.keepAlive()))
			if drop {
				s.dropPending()
				s.fields++
				d = dDropped
			} else if !(c == '"' && d == dPlain && s.cfg.detect) {
				s.commit(p, i)
			}
		} else if len(s.frames) == 0 && d == dMasked && (!container || !s.keepAlive()) {
			// Removing the root would leave no JSON at all: write null.
			s.cut(p, i)
			s.emitStr("null")
			s.fields++
			d = dDropped
		}
	}
	switch c {
	case '{', '[':
		if len(s.frames) >= s.cfg.maxDepth {
			s.fail(i, "nesting too deep")
			return i
		}
		if d == dDropped {
			s.cut(p, i)
		}
		s.frames = append(s.frames, frame{array: c == '[', disp: d})
		if s.cfg.paths != nil {
			s.nfas = append(s.nfas, s.vnfa)
		}
		if c == '[' {
			s.st = stArrFirst
		} else {
			s.st = stObjFirst
		}
		i++
		if s.cfg.remove && d <= dMasked {
			// Hold the white space before the first child: it goes out with it.
			s.cut(p, i)
			s.span = i
			s.pending = true
		}
		return i
	case '"':
		// Whole ASCII strings inside the chunk, copied or masked: the
		// common cases, without the general string machinery.
		if d == dKept || (d == dPlain && !s.cfg.detect) {
			if k := asciiEnd(p, i+1); k >= 0 {
				s.endValue()
				return k + 1
			}
		} else if d == dMasked && s.cfg.strategy == StrategyMask {
			if k := asciiEnd(p, i+1); k >= 0 {
				s.cut(p, i)
				s.emitStr(`"[REDACTED]"`)
				s.fields++
				s.resume(k + 1)
				s.endValue()
				return k + 1
			}
		}
		return s.beginString(p, i, d)
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		s.beginScalar(p, i, d, "")
		s.numSt = nStart
		s.st = stNum
		return s.numRun(p, i)
	case 't', 'f', 'n':
		lit := "null"
		if c == 't' {
			lit = "true"
		} else if c == 'f' {
			lit = "false"
		}
		s.beginScalar(p, i, d, lit)
		s.lit, s.litPos = lit, 0
		s.st = stLit
		return s.litRun(p, i)
	}
	s.fail(i, "expected a value")
	return i
}

// closeContainer handles '}' or ']' at p[i].
func (s *Stream) closeContainer(p []byte, i int, array bool) int {
	f := s.frames[len(s.frames)-1]
	if f.array != array {
		s.fail(i, "mismatched bracket")
		return i
	}
	if s.pending {
		// Empty container (remove mode): the held white space goes out,
		// unless there is too much of it to hold.
		over := s.pendDrop || s.pendTotal(i) > s.pendLimit()
		s.pending, s.pendDrop = false, false
		if over {
			s.span = i
		} else if len(s.pend) > 0 {
			s.emit(s.pend)
		}
		s.pend = s.pend[:0]
	}
	s.frames = s.frames[:len(s.frames)-1]
	if s.cfg.paths != nil {
		s.nfas = s.nfas[:len(s.nfas)-1]
	}
	i++
	if f.disp == dDropped {
		s.resume(i)
	}
	s.endValue()
	return i
}

// endValue moves on after a complete value.
func (s *Stream) endValue() {
	if len(s.frames) == 0 {
		s.st = stTopAfter
		s.records++
		return
	}
	s.st = stAfter
}

// beginScalar prepares a number or literal: what to do with its bytes.
func (s *Stream) beginScalar(p []byte, i int, d disp, lit string) {
	switch d {
	case dPlain, dKept:
		s.act = actCopy
		return
	case dDropped:
		s.act = actSkip
		return
	}
	if lit == "null" {
		s.act = actCopy // null stays null
		return
	}
	s.cut(p, i)
	s.fields++
	s.act = actSkip
	switch s.cfg.strategy {
	case StrategyMask:
		s.emitStr(`"[REDACTED]"`)
	case StrategyNull:
		s.emitStr("null")
	case StrategyPartial:
		if lit != "" {
			s.emitStr(`"***"`) // a boolean's first character is its value
			return
		}
		s.act = actPartial
		s.startDec(partialCap)
	case StrategyHash:
		s.startHash()
		if lit != "" {
			if lit == "true" {
				s.hm.Write(litTrue)
			} else {
				s.hm.Write(litFalse)
			}
			s.emitToken()
			return
		}
		s.act = actHash
	case StrategyRemove:
		// dropped through the pending member; nothing to write
	}
}

// Number grammar states; numTab[state][class] gives the next state.
const (
	nStart uint8 = iota
	nMinus
	nZero
	nInt
	nDot
	nFrac
	nE
	nESign
	nExp
	nEnd // the number ended before this byte
	nErr
)

var numTerminal = [nErr + 1]bool{nZero: true, nInt: true, nFrac: true, nExp: true}

// byte classes: 0 other, 1 '0', 2 '1'-'9', 3 '.', 4 'e'/'E', 5 '+', 6 '-'
var numClass = func() (t [256]uint8) {
	t['0'] = 1
	for c := '1'; c <= '9'; c++ {
		t[c] = 2
	}
	t['.'], t['e'], t['E'], t['+'], t['-'] = 3, 4, 4, 5, 6
	return t
}()

var numTab = [nExp + 1][7]uint8{
	nStart: {nErr, nZero, nInt, nErr, nErr, nErr, nMinus},
	nMinus: {nErr, nZero, nInt, nErr, nErr, nErr, nErr},
	nZero:  {nEnd, nErr, nErr, nDot, nE, nEnd, nEnd},
	nInt:   {nEnd, nInt, nInt, nDot, nE, nEnd, nEnd},
	nDot:   {nErr, nFrac, nFrac, nErr, nErr, nErr, nErr},
	nFrac:  {nEnd, nFrac, nFrac, nEnd, nE, nEnd, nEnd},
	nE:     {nErr, nExp, nExp, nErr, nErr, nESign, nESign},
	nESign: {nErr, nExp, nExp, nErr, nErr, nErr, nErr},
	nExp:   {nEnd, nExp, nExp, nEnd, nEnd, nEnd, nEnd},
}

// numRun continues a number at p[i].
func (s *Stream) numRun(p []byte, i int) int {
	st := s.numSt
	j := i
	for j < len(p) {
		nx := numTab[st][numClass[p[j]]]
		if nx >= nEnd {
			if nx == nErr {
				s.fail(j, "invalid number")
				return j
			}
			break
		}
		st = nx
		j++
	}
	s.numSt = st
	switch s.act {
	case actHash:
		s.hm.Write(p[i:j])
	case actPartial:
		s.appendDec(p[i:j])
	}
	if j == len(p) {
		return j
	}
	s.endNumber(p, j)
	return j
}

// endNumber finishes a number that ended before p[j] (p is nil at Close).
func (s *Stream) endNumber(p []byte, j int) {
	switch s.act {
	case actHash:
		s.emitToken()
		s.resume(j)
	case actPartial:
		s.emitPartial()
		s.resume(j)
	case actSkip:
		s.resume(j)
	}
	s.endValue()
}

// litRun continues a literal at p[i].
func (s *Stream) litRun(p []byte, i int) int {
	for i < len(p) && s.litPos < len(s.lit) {
		if p[i] != s.lit[s.litPos] {
			s.fail(i, "invalid literal")
			return i
		}
		i++
		s.litPos++
	}
	if s.litPos == len(s.lit) {
		if s.act == actSkip {
			s.resume(i)
		}
		s.endValue()
	}
	return i
}
