package jsonmask

import (
	"unicode"
	"unicode/utf8"
)

// Name normalisation (SPEC section 6 "Field names"): escapes decoded,
// Unicode simple case folding, and `_ - .` and spaces removed. As a
// fail-closed extension, every Unicode white space and format character
// (zero-width space, soft hyphen, BOM...) is removed too, so "em\u200bail"
// cannot slip past a field rule.
//
// Folded runes are canonicalised so that all members of a simple-fold orbit
// normalise to the same bytes: an orbit that contains an ASCII letter maps to
// that letter in lower case (so U+017F "ſ" is "s" and U+212A KELVIN SIGN is
// "k"); any other orbit maps to its smallest rune.

// normASCII maps an ASCII byte to its normalised form: 0 for a separator
// that is dropped, the lower-case letter for A-Z, the byte itself otherwise.
// Bytes >= 0x80 map to themselves (handled rune-wise by the slow path).
var normASCII = func() (t [256]byte) {
	for i := range t {
		t[i] = byte(i)
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = byte(c + 'a' - 'A')
	}
	for _, c := range "_-. \t\n\r\f\v" {
		t[c] = 0
	}
	return t
}()

// foldRune returns the canonical simple-fold representative of r, or -1 if
// r is removed by normalisation.
func foldRune(r rune) rune {
	if r < utf8.RuneSelf {
		if b := normASCII[r]; b != 0 {
			return rune(b)
		}
		if r == 0 {
			return 0
		}
		return -1
	}
	if unicode.IsSpace(r) || unicode.Is(unicode.Cf, r) {
		return -1
	}
	min := r
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		if f < utf8.RuneSelf {
			return rune(normASCII[f])
		}
		if f < min {
			min = f
		}
	}
	return min
}

// appendNormRune appends the normalised form of r to b.
func appendNormRune(b []byte, r rune) []byte {
	f := foldRune(r)
	if f < 0 {
		return b
	}
	if f < utf8.RuneSelf {
		return append(b, byte(f))
	}
	return utf8.AppendRune(b, f)
}

// normalizeString normalises a configured name (no JSON escapes).
func normalizeString(s string) string {
	var b []byte
	for _, r := range s {
		b = appendNormRune(b, r)
	}
	return string(b)
}

// nameMatcher is a trie over reversed normalised patterns, so one backward
// walk over a member name answers both "ends with one of the suffixes" and
// "is exactly one of the names". Most names leave the trie after one or two
// bytes. Each node has a 256-entry transition row that already folds ASCII
// case and skips separators, so the fast path does one load per byte.
type nameMatcher struct {
	trans []uint16 // node<<8 | byte -> next node; 0: no match; hitBit: a suffix matched
	exact []bool   // per node: an exact name ends here
	// A compact copy for the ASCII fast path (rows of 128, uint8 node ids,
	// about 16 KiB for the pii preset, so it stays in L1); nil when the trie
	// has more than 255 nodes.
	ascii      []uint8
	asciiExact []bool
}

const (
	hitBit   = 0x8000
	rootNode = 1
)

type nameBuilder struct {
	pats []string
	suf  []bool
}

func (nb *nameBuilder) add(p string, suffix bool) {
	nb.pats = append(nb.pats, p)
	nb.suf = append(nb.suf, suffix)
}

func (nb *nameBuilder) build() *nameMatcher {
	if len(nb.pats) == 0 {
		return nil
	}
	// Plain trie first.
	type node struct {
		child  map[byte]int
		suffix bool
		exact  bool
	}
	nodes := []node{{}, {child: map[byte]int{}}} // 0 unused, 1 root
	for k, p := range nb.pats {
		cur := rootNode
		for i := len(p) - 1; i >= 0; i-- {
			nx, ok := nodes[cur].child[p[i]]
			if !ok {
				nx = len(nodes)
				nodes = append(nodes, node{child: map[byte]int{}})
				nodes[cur].child[p[i]] = nx
			}
			cur = nx
		}
		if nb.suf[k] {
			nodes[cur].suffix = true
		} else {
			nodes[cur].exact = true
		}
	}
	m := &nameMatcher{trans: make([]uint16, len(nodes)<<8), exact: make([]bool, len(nodes))}
	for id := rootNode; id < len(nodes); id++ {
		m.exact[id] = nodes[id].exact
		row := m.trans[id<<8 : (id+1)<<8]
		for b := 0; b < 256; b++ {
			nb := byte(b)
			if b < 0x80 {
				nb = normASCII[b]
				if nb == 0 && b != 0 {
					row[b] = uint16(id) // separator: stay
					continue
				}
			}
			if nx, ok := nodes[id].child[nb]; ok {
				v := uint16(nx)
				if nodes[nx].suffix {
					v |= hitBit
				}
				row[b] = v
			}
		}
	}
	// Compact ASCII table: ids 1..127 for nodes that need a row, ids
	// 128..255 for suffix-terminal nodes (the walk stops there, so they need
	// no row and the hit is the id's high bit).
	ids := make([]int, len(nodes))
	rows, hits := 1, 128
	for id := rootNode; id < len(nodes); id++ {
		if nodes[id].suffix && id != rootNode {
			ids[id] = hits
			hits++
		} else {
			rows++
			ids[id] = rows - 1
		}
	}
	if rows <= 128 && hits <= 256 {
		m.ascii = make([]uint8, rows<<7)
		m.asciiExact = make([]bool, rows)
		for id := rootNode; id < len(nodes); id++ {
			if ids[id] >= 128 {
				continue
			}
			m.asciiExact[ids[id]] = nodes[id].exact
			for b := 0; b < 0x80; b++ {
				nb := normASCII[b]
				if nb == 0 && b != 0 {
					m.ascii[ids[id]<<7|b] = uint8(ids[id]) // separator: stay
					continue
				}
				if nx, ok := nodes[id].child[nb]; ok {
					m.ascii[ids[id]<<7|b] = uint8(ids[nx])
				}
			}
		}
	}
	return m
}

// mayMatch is matchRaw's first step, cheap enough to inline: false when
// the last byte of the pure-ASCII raw name already leaves the trie (most
// names of a document).
func (m *nameMatcher) mayMatch(raw []byte) bool {
	return m.ascii == nil || len(raw) == 0 || m.ascii[rootNode<<7|int(raw[len(raw)-1]&0x7f)] != 0
}

// matchRaw matches a member name given as raw JSON string content that is
// pure ASCII without escapes (the fast path): normalisation happens in the
// transition table, nothing is copied.
func (m *nameMatcher) matchRaw(raw []byte) bool {
	if t := m.ascii; t != nil {
		node := uint8(rootNode)
		for k := len(raw) - 1; k >= 0; k-- {
			node = t[int(node&0x7f)<<7|int(raw[k]&0x7f)]
			if node >= 0x80 {
				return true
			}
			if node == 0 {
				return false
			}
		}
		return m.asciiExact[node&0x7f]
	}
	node := uint16(rootNode)
	t := m.trans
	for k := len(raw) - 1; k >= 0; k-- {
		node = t[int(node)<<8|int(raw[k])]
		if node == 0 {
			return false
		}
		if node&hitBit != 0 {
			return true
		}
	}
	return m.exact[node]
}

// matchNorm matches an already normalised name. truncated says the front
// of the name was cut off (only suffixes can match then). Normalised bytes
// are never separators, so the same table applies.
func (m *nameMatcher) matchNorm(n []byte, truncated bool) bool {
	node := uint16(rootNode)
	t := m.trans
	for k := len(n) - 1; k >= 0; k-- {
		node = t[int(node)<<8|int(n[k])]
		if node == 0 {
			return false
		}
		if node&hitBit != 0 {
			return true
		}
	}
	return !truncated && m.exact[node]
}

// eqRawNorm reports whether pure-ASCII raw name content normalises to n.
func eqRawNorm(raw []byte, n string) bool {
	j := 0
	for _, c := range raw {
		b := normASCII[c]
		if b == 0 {
			continue
		}
		if j >= len(n) || n[j] != b {
			return false
		}
		j++
	}
	return j == len(n)
}
