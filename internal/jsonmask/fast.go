package jsonmask

// members is the hot loop for the most common shape of API JSON: compact
// object members `"name":value,` inside one chunk, where the value is an
// ASCII string without escapes, a number or a literal, and the policy has
// no paths, no detectors and strategy mask or null. p[i] is the opening
// quote of a member name in the object on top of the stack. Anything else
// (white space, containers, escapes, the end of the chunk, errors) is handed
// back to the general state machine with the state it expects, so both
// produce the same bytes; the split tests check that.
func (s *Stream) members(p []byte, i int) int {
	n := len(p)
	d0 := s.frames[len(s.frames)-1].disp
	names := s.cfg.names
	repl := `"[REDACTED]"`
	if s.cfg.strategy == StrategyNull {
		repl = "null"
	}
	for {
		k := asciiEnd(p, i+1)
		if k < 0 {
			return s.beginName(p, i) // escapes, non-ASCII or split: general path
		}
		d := d0
		if d == dPlain && names != nil && names.matchRaw(p[i+1:k]) {
			d = dMasked
		}
		s.vdisp = d
		j := k + 1
		if j >= n || p[j] != ':' {
			s.st = stColon
			return j
		}
		j++
		s.st = stValue
		if j >= n {
			return j
		}
		switch c := p[j]; c {
		case '"':
			e := asciiEnd(p, j+1)
			if e < 0 {
				return j
			}
			if d == dMasked {
				s.cut(p, j)
				s.emitStr(repl)
				s.fields++
				s.resume(e + 1)
			}
			j = e + 1
		case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
			if d == dMasked {
				return j
			}
			st, e := nStart, j
			for e < n {
				nx := numTab[st][numClass[p[e]]]
				if nx >= nEnd {
					if nx == nErr {
						return j
					}
					break
				}
				st = nx
				e++
			}
			if e == n || !numTerminal[st] {
				return j
			}
			j = e
		case 't', 'f', 'n':
			if d == dMasked {
				return j
			}
			lit := "null"
			if c == 't' {
				lit = "true"
			} else if c == 'f' {
				lit = "false"
			}
			if j+len(lit) > n || string(p[j:j+len(lit)]) != lit {
				return j
			}
			j += len(lit)
		default:
			return j
		}
		s.st = stAfter
		if j+1 < n && p[j] == ',' && p[j+1] == '"' {
			i = j + 1
			continue
		}
		return j
	}
}
