package jsonmask

import "bytes"

// Detectors find emails and phone numbers inside decoded string content
// with hand-written scanners (no regular expressions on the hot path).
// They are heuristics tuned to fail towards masking:
//
//   - email: around each '@', the longest run of local-part characters
//     (letters, digits, !#$%&'*+/=?^_`{|}~.- and any non-ASCII) on the left
//     and domain characters (letters, digits, '-', '.', non-ASCII) on the
//     right; the domain needs two or more non-empty labels and a top-level
//     label of at least two letters.
//   - phone: an optional '+', then digits with at most two separators
//     (space - . ( ) /) in a row, 7 to 15 digits, not glued to a word on
//     either side (so IDs like A1234567 or UUID groups stay); a date
//     (2024-01-15, 15/01/2024), a dotted quad (IPv4) and a decimal number
//     with a single '.' are not phones.

type span struct {
	a, b int
	kind uint8
}

var emailLocal, emailDomain, wordByte [256]bool

func init() {
	for c := 0; c < 256; c++ {
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		emailLocal[c] = alnum || c >= 0x80
		emailDomain[c] = alnum || c >= 0x80 || c == '-' || c == '.'
		wordByte[c] = alnum || c == '_' || c >= 0x80
	}
	for _, c := range "!#$%&'*+/=?^_`{|}~.-" {
		emailLocal[c] = true
	}
}

// findPII returns the union of detector matches in b, in order, in a
// buffer owned by s.
func (s *Stream) findPII(b []byte) []span {
	out := s.spans[:0]
	if s.cfg.detEmail {
		out = findEmails(b, out)
	}
	if s.cfg.detPhone {
		n := len(out)
		out = findPhones(b, out)
		if n > 0 && len(out) > n {
			out = mergeSpans(out)
		}
	}
	s.spans = out
	return out
}

func findEmails(b []byte, out []span) []span {
	off := 0
	for off < len(b) {
		k := bytes.IndexByte(b[off:], '@')
		if k < 0 {
			break
		}
		at := off + k
		l := at
		for l > 0 && emailLocal[b[l-1]] {
			l--
		}
		for l < at && b[l] == '.' {
			l++
		}
		r := at + 1
		for r < len(b) && emailDomain[b[r]] {
			r++
		}
		for r > at+1 && (b[r-1] == '.' || b[r-1] == '-') {
			r--
		}
		if l < at && validDomain(b[at+1:r]) {
			out = append(out, span{l, r, kindEmail})
			off = r
		} else {
			off = at + 1
		}
	}
	return out
}

func validDomain(d []byte) bool {
	labels, start := 0, 0
	for i := 0; i <= len(d); i++ {
		if i == len(d) || d[i] == '.' {
			if i == start {
				return false // empty label
			}
			labels++
			if i == len(d) {
				tld := d[start:i]
				if len(tld) < 2 {
					return false
				}
				for _, c := range tld {
					if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80) {
						return false
					}
				}
			}
			start = i + 1
		}
	}
	return labels >= 2
}

var phoneSep = func() (t [256]bool) {
	for _, c := range " -.()/" {
		t[c] = true
	}
	return t
}()

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func findPhones(b []byte, out []span) []span {
	n := len(b)
	for i := 0; i < n; {
		c := b[i]
		if !(isDigit(c) || c == '+' || c == '(') {
			i++
			continue
		}
		if gluedLeft(b, i) {
			// Inside a word or an identifier: skip the rest of it.
			i++
			for i < n && (wordByte[b[i]] || b[i] == '-' || b[i] == '.') {
				i++
			}
			continue
		}
		start, j := i, i
		digits, sepRun, end := 0, 0, i
		for j < n {
			c := b[j]
			switch {
			case isDigit(c):
				digits++
				sepRun = 0
				end = j + 1
			case c == '+' && j == start:
			case phoneSep[c]:
				sepRun++
			default:
				sepRun = 3
			}
			if sepRun > 2 {
				break
			}
			j++
		}
		if digits >= 7 && digits <= 15 && !gluedRight(b, end) && !notPhone(b[start:end]) {
			out = append(out, span{start, end, kindPhone})
		}
		if j <= i {
			j = i + 1
		}
		i = j
	}
	return out
}

// gluedLeft reports whether b[i] continues a word (letters or digits before
// it, possibly through one '-' or '.').
func gluedLeft(b []byte, i int) bool {
	if i == 0 {
		return false
	}
	p := b[i-1]
	if wordByte[p] {
		return true
	}
	return (p == '-' || p == '.') && i >= 2 && wordByte[b[i-2]]
}

func gluedRight(b []byte, e int) bool {
	if e >= len(b) {
		return false
	}
	c := b[e]
	if wordByte[c] {
		return true
	}
	return (c == '-' || c == '.') && e+1 < len(b) && wordByte[b[e+1]]
}

// notPhone rejects digit groups that look like dates, IPv4 addresses or a
// decimal number.
func notPhone(v []byte) bool {
	var groups [8]int
	var seps [8]byte
	ng, cur, other := 0, 0, false
	for _, c := range v {
		if isDigit(c) {
			cur++
			continue
		}
		if cur > 0 {
			if ng == len(groups) {
				return false
			}
			groups[ng] = cur
			seps[ng] = c
			ng++
			cur = 0
		}
		if c != '-' && c != '.' && c != '/' {
			other = true
		}
	}
	if ng < len(groups) && cur > 0 {
		groups[ng] = cur
		ng++
	}
	if other || v[0] == '+' || v[0] == '(' {
		return false
	}
	same := ng < 2 || seps[0] == seps[1]
	switch {
	case ng == 2 && seps[0] == '.':
		return true // 1234567.89
	case ng == 3 && same && (groups[0] == 4 && groups[1] <= 2 && groups[2] <= 2 ||
		groups[0] <= 2 && groups[1] <= 2 && groups[2] == 4):
		return true // dates
	case ng == 4 && seps[0] == '.' && seps[1] == '.' && seps[2] == '.' &&
		groups[0] <= 3 && groups[1] <= 3 && groups[2] <= 3 && groups[3] <= 3:
		return true // IPv4
	}
	return false
}

// mergeSpans sorts spans by start and merges overlapping ones; a merged
// span of two kinds is classified again by partial.
func mergeSpans(sp []span) []span {
	for i := 1; i < len(sp); i++ {
		for j := i; j > 0 && sp[j].a < sp[j-1].a; j-- {
			sp[j], sp[j-1] = sp[j-1], sp[j]
		}
	}
	out := sp[:1]
	for _, x := range sp[1:] {
		last := &out[len(out)-1]
		if x.a < last.b {
			if x.b > last.b {
				last.b = x.b
			}
			if x.kind != last.kind {
				last.kind = kindUnknown
			}
			continue
		}
		out = append(out, x)
	}
	return out
}
