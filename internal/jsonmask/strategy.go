package jsonmask

import (
	"bytes"
	"unicode/utf8"
)

// Replacement text. Masks have a fixed length where the SPEC allows it, so
// the output length does not reveal the value's length.
const (
	kindUnknown uint8 = iota // classify the value (partial on a field)
	kindEmail
	kindPhone
)

const hexDigits = "0123456789abcdef"

// appendToken appends "tok_" and the first 16 hex digits of an HMAC sum.
func appendToken(b, sum []byte) []byte {
	b = append(b, "tok_"...)
	for _, x := range sum[:8] {
		b = append(b, hexDigits[x>>4], hexDigits[x&15])
	}
	return b
}

// appendPartial appends the partial form of the decoded value v (without
// quotes, JSON-escaped). truncated says v holds only the value's first
// bytes (it was too long to be an email or a phone number).
//
//   - email (has an '@' with text on both sides): first character, "***@",
//     domain; a one-character local part is hidden entirely;
//   - phone (only digits and + ( ) - . / space, at least 7 digits): every
//     digit but the last four becomes '*', punctuation stays;
//   - anything else: first character and "***"; a one-character value
//     becomes "***".
func appendPartial(b, v []byte, truncated bool, kind uint8) []byte {
	if !truncated {
		if kind == kindEmail || kind == kindUnknown {
			if at := bytes.LastIndexByte(v, '@'); at > 0 && at < len(v)-1 {
				local := v[:at]
				if utf8.RuneCount(local) >= 2 {
					_, n := utf8.DecodeRune(local)
					b = appendEscaped(b, local[:n])
				}
				b = append(b, "***@"...)
				return appendEscaped(b, v[at+1:])
			}
		}
		if kind == kindPhone || (kind == kindUnknown && isPhoneText(v)) {
			return appendPhoneMask(b, v)
		}
	}
	if truncated || utf8.RuneCount(v) >= 2 {
		_, n := utf8.DecodeRune(v)
		b = appendEscaped(b, v[:n])
	}
	return append(b, "***"...)
}

var phoneChar = func() (t [256]bool) {
	for _, c := range "0123456789+()-. /" {
		t[c] = true
	}
	return t
}()

// isPhoneText reports whether v is made only of phone characters and has
// at least 7 digits.
func isPhoneText(v []byte) bool {
	digits := 0
	for _, c := range v {
		if !phoneChar[c] {
			return false
		}
		if c >= '0' && c <= '9' {
			digits++
		}
	}
	return digits >= 7
}

// appendPhoneMask keeps punctuation and the last four digits.
func appendPhoneMask(b, v []byte) []byte {
	digits := 0
	for _, c := range v {
		if c >= '0' && c <= '9' {
			digits++
		}
	}
	seen := 0
	for _, c := range v {
		if c >= '0' && c <= '9' {
			seen++
			if seen <= digits-4 {
				c = '*'
			}
		}
		b = append(b, c)
	}
	return b
}

// appendEscaped appends decoded text as JSON string content.
func appendEscaped(b, v []byte) []byte {
	for _, c := range v {
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&15])
		default:
			b = append(b, c)
		}
	}
	return b
}

// appendReplacement appends the replacement of a detected substring v
// (decoded) inside a string.
func (s *Stream) appendReplacement(b, v []byte, kind uint8) []byte {
	switch s.cfg.strategy {
	case StrategyPartial:
		return appendPartial(b, v, false, kind)
	case StrategyHash:
		s.startHash()
		s.hm.Write(v)
		s.sum = s.hm.Sum(s.sum[:0])
		return appendToken(b, s.sum)
	}
	return append(b, "[REDACTED]"...)
}

// rawToken returns the raw and decoded lengths of the token at raw[i]
// (one character: plain byte, UTF-8 sequence, escape or surrogate pair),
// matching how the decoder fed the sinks.
func rawToken(raw []byte, i int) (rl, dl int) {
	c := raw[i]
	if c < utf8.RuneSelf && c != '\\' {
		return 1, 1
	}
	if c != '\\' {
		n := utf8Len(c)
		return n, n
	}
	if raw[i+1] != 'u' {
		return 2, 1
	}
	r := hex4(raw[i+2 : i+6])
	if r >= 0xD800 && r < 0xDC00 && i+12 <= len(raw) && raw[i+6] == '\\' && raw[i+7] == 'u' {
		if lo := hex4(raw[i+8 : i+12]); lo >= 0xDC00 && lo < 0xE000 {
			return 12, 4
		}
	}
	if r >= 0xD800 && r < 0xE000 {
		return 6, 3 // lone surrogate: U+FFFD
	}
	return 6, utf8.RuneLen(r)
}

func hex4(h []byte) rune {
	var r rune
	for _, c := range h[:4] {
		r = r<<4 | rune(unhex[c])
	}
	return r
}

// appendDetected appends a whole string (quotes included) with the
// detected spans of its decoded form replaced, copying every other
// character in its original raw spelling.
func (s *Stream) appendDetected(b, raw, dec []byte, spans []span) []byte {
	b = append(b, '"')
	ri, di := 0, 0
	for _, sp := range spans {
		for di < sp.a && ri < len(raw) {
			rl, dl := rawToken(raw, ri)
			b = append(b, raw[ri:ri+rl]...)
			ri += rl
			di += dl
		}
		b = s.appendReplacement(b, dec[sp.a:sp.b], sp.kind)
		for di < sp.b && ri < len(raw) {
			rl, dl := rawToken(raw, ri)
			ri += rl
			di += dl
		}
	}
	b = append(b, raw[ri:]...)
	return append(b, '"')
}
