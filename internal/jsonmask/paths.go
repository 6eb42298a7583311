package jsonmask

import (
	"fmt"
	"math/bits"
	"strconv"
	"strings"
)

// Path selectors are prefix-decidable: whether a value is selected depends
// only on the names and kinds of its ancestors, so the decision is known
// before the value's first byte and nothing has to be held back for it.
// Paths compile to one NFA over all Paths and Keep entries. A stream keeps
// the NFA state set of every open container; a step is a member name (after
// normalisation) or an array element.

// nfaSet is a set of NFA positions.
type nfaSet [maxPositions / 64]uint64

func (s *nfaSet) empty() bool { return s[0]|s[1]|s[2]|s[3] == 0 }

func (s *nfaSet) or(o *nfaSet) {
	s[0] |= o[0]
	s[1] |= o[1]
	s[2] |= o[2]
	s[3] |= o[3]
}

func (s *nfaSet) hits(o *nfaSet) bool {
	return s[0]&o[0]|s[1]&o[1]|s[2]&o[2]|s[3]&o[3] != 0
}

func (s *nfaSet) set(i int) { s[i>>6] |= 1 << (i & 63) }

type segKind uint8

const (
	segEnd       segKind = iota // accepting position, nothing follows
	segName                     // .name or ["name"]
	segAnyMember                // .*
	segAnyElem                  // [*]
	segAnyDepth                 // ** or .. : zero or more steps of any kind
	segIndex                    // [N]
)

type pathNFA struct {
	kind    []segKind // per position: the segment that leaves it
	name    []string  // normalised name for segName
	index   []int     // element index for segIndex
	closure []nfaSet  // epsilon closure of each position (itself included)
	start   nfaSet
	selAcc  nfaSet // accepting positions of Paths
	keepAcc nfaSet // accepting positions of Keep
	keepAll nfaSet // every position of a Keep path: "a keep may still match below"
}

type pathSeg struct {
	kind  segKind
	name  string
	index int
}

// parsePath parses one path expression; see Options.Paths.
func parsePath(p string) ([]pathSeg, error) {
	bad := func(msg string) error { return fmt.Errorf("jsonmask: bad path %q: %s", p, msg) }
	if !strings.HasPrefix(p, "$") {
		return nil, bad("must start with $")
	}
	var segs []pathSeg
	i := 1
	for i < len(p) {
		switch {
		case strings.HasPrefix(p[i:], ".."):
			segs = append(segs, pathSeg{kind: segAnyDepth})
			i += 2
			if i < len(p) && p[i] == '[' {
				continue
			}
			if i >= len(p) {
				return nil, bad("ends with ..")
			}
			n, err := parseDotName(p, i, bad)
			if err != nil {
				return nil, err
			}
			segs = append(segs, n.seg)
			i = n.end
		case p[i] == '.':
			n, err := parseDotName(p, i+1, bad)
			if err != nil {
				return nil, err
			}
			segs = append(segs, n.seg)
			i = n.end
		case p[i] == '[':
			if strings.HasPrefix(p[i:], "[*]") {
				segs = append(segs, pathSeg{kind: segAnyElem})
				i += 3
				continue
			}
			if i+1 < len(p) && (p[i+1] == '"' || p[i+1] == '\'') {
				q := p[i+1]
				var sb strings.Builder
				j := i + 2
				for ; j < len(p) && p[j] != q; j++ {
					if p[j] == '\\' && j+1 < len(p) {
						j++
					}
					sb.WriteByte(p[j])
				}
				if j+1 >= len(p) || p[j+1] != ']' {
					return nil, bad("unterminated quoted name")
				}
				seg, err := nameSeg(sb.String(), bad)
				if err != nil {
					return nil, err
				}
				segs = append(segs, seg)
				i = j + 2
				continue
			}
			if j := strings.IndexByte(p[i:], ']'); j > 1 {
				if n, err := strconv.Atoi(p[i+1 : i+j]); err == nil && n >= 0 && p[i+1] != '+' {
					segs = append(segs, pathSeg{kind: segIndex, index: n})
					i += j + 1
					continue
				}
			}
			return nil, bad("only [*], [N] and [\"name\"] are supported inside brackets (no negative indices, slices or filters)")
		default:
			return nil, bad(fmt.Sprintf("unexpected %q at offset %d", p[i], i))
		}
	}
	return segs, nil
}

type dotName struct {
	seg pathSeg
	end int
}

func parseDotName(p string, i int, bad func(string) error) (dotName, error) {
	if strings.HasPrefix(p[i:], "**") {
		return dotName{pathSeg{kind: segAnyDepth}, i + 2}, nil
	}
	if strings.HasPrefix(p[i:], "*") {
		return dotName{pathSeg{kind: segAnyMember}, i + 1}, nil
	}
	j := i
	for j < len(p) && p[j] != '.' && p[j] != '[' {
		switch c := p[j]; {
		case c == ']' || c == '*' || c == '"' || c == '\'':
			return dotName{}, bad(fmt.Sprintf("unexpected %q in a name (quote it: [\"...\"])", c))
		case c < 0x20 || c == 0x7f:
			return dotName{}, bad("control character in a name")
		}
		j++
	}
	seg, err := nameSeg(p[i:j], bad)
	return dotName{seg, j}, err
}

func nameSeg(raw string, bad func(string) error) (pathSeg, error) {
	n := normalizeString(raw)
	if n == "" {
		return pathSeg{}, bad("empty name")
	}
	if len(n) > maxPatternLen {
		return pathSeg{}, bad(fmt.Sprintf("name longer than %d bytes", maxPatternLen))
	}
	return pathSeg{kind: segName, name: n}, nil
}

func compilePaths(sel, keep []string) (*pathNFA, error) {
	a := &pathNFA{}
	add := func(p string, isKeep bool) error {
		segs, err := parsePath(p)
		if err != nil {
			return err
		}
		base := len(a.kind)
		if base+len(segs)+1 > maxPositions {
			return fmt.Errorf("jsonmask: paths too complex (more than %d steps in all)", maxPositions)
		}
		for _, s := range segs {
			a.kind = append(a.kind, s.kind)
			a.name = append(a.name, s.name)
			a.index = append(a.index, s.index)
		}
		a.kind = append(a.kind, segEnd)
		a.name = append(a.name, "")
		a.index = append(a.index, 0)
		a.start.set(base)
		end := base + len(segs)
		if isKeep {
			a.keepAcc.set(end)
			for k := base; k <= end; k++ {
				a.keepAll.set(k)
			}
		} else {
			a.selAcc.set(end)
		}
		return nil
	}
	for _, p := range sel {
		if err := add(p, false); err != nil {
			return nil, err
		}
	}
	for _, p := range keep {
		if err := add(p, true); err != nil {
			return nil, err
		}
	}
	a.closure = make([]nfaSet, len(a.kind))
	for i := len(a.kind) - 1; i >= 0; i-- {
		a.closure[i].set(i)
		if a.kind[i] == segAnyDepth {
			a.closure[i].or(&a.closure[i+1])
		}
	}
	var st nfaSet
	a.forEach(&a.start, func(i int) { st.or(&a.closure[i]) })
	a.start = st
	return a, nil
}

func (a *pathNFA) forEach(s *nfaSet, f func(int)) {
	for w, x := range s {
		for x != 0 {
			b := bits.TrailingZeros64(x)
			x &= x - 1
			f(w*64 + b)
		}
	}
}

// nameRef is a member name for a path step: either pure-ASCII raw string
// content without escapes (ascii), or a normalised name whose front may
// have been cut off (trunc).
type nameRef struct {
	index int // array element index (steps that are not members)
	ascii bool
	raw   []byte
	norm  []byte
	trunc bool
}

func (nm *nameRef) equals(n string) bool {
	if nm.ascii {
		return eqRawNorm(nm.raw, n)
	}
	return !nm.trunc && string(nm.norm) == n
}

// step advances s over one step: a member named nm, or an array element.
func (a *pathNFA) step(s *nfaSet, member bool, nm nameRef) nfaSet {
	var out nfaSet
	for w, x := range s {
		for x != 0 {
			b := bits.TrailingZeros64(x)
			x &= x - 1
			i := w*64 + b
			switch a.kind[i] {
			case segAnyDepth:
				out.or(&a.closure[i])
			case segAnyMember:
				if member {
					out.or(&a.closure[i+1])
				}
			case segAnyElem:
				if !member {
					out.or(&a.closure[i+1])
				}
			case segIndex:
				if !member && nm.index == a.index[i] {
					out.or(&a.closure[i+1])
				}
			case segName:
				if member && nm.equals(a.name[i]) {
					out.or(&a.closure[i+1])
				}
			}
		}
	}
	return out
}
