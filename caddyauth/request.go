package caddyauth

import (
	"net/url"
	"strings"
)

// Reasons a request is ambiguous (400 bad_request). They go into the denial
// log so an operator can tell why; the client only sees bad_request.
const (
	reasonMethod         = "method is not an upper-case token"
	reasonPathForm       = "request target is not an absolute path"
	reasonPathChar       = "path contains a control, non-ASCII, backslash, semicolon, percent, ? or # character (raw or encoded)"
	reasonEncodedSlash   = "path contains an encoded slash (%2F)"
	reasonDotSegment     = "path contains a dot segment"
	reasonEmptySegment   = "path contains //"
	reasonOverride       = "method or URL override header"
	reasonMethodParam    = "_method query parameter"
	reasonConnection     = "Connection header names a header"
	reasonKeyMulti       = "more than one key value"
	reasonKeyChars       = "whitespace, comma or control character in the key"
	reasonAccountMulti   = "more than one account value"
	reasonAccountChars   = "empty account, or whitespace, comma or control character in it"
	reasonQuerySeparator = "semicolon in the query"
)

// certForwardingHeaders carry a client certificate on behalf of a proxy in
// front. A client must never be able to send them.
var certForwardingHeaders = []string{
	"X-Forwarded-Client-Cert", "X-Forwarded-Tls-Client-Cert", "X-Forwarded-Tls-Client-Cert-Info",
	"X-Ssl-Client-Cert", "X-Client-Cert", "Ssl-Client-Verify", "X-Amzn-Mtls-Clientcert",
}

// checkMethod accepts only upper-case tokens: "post" must not reach an
// upstream that upper-cases it after the gateway matched no POST rule.
func checkMethod(m string) string {
	if !isUpperToken(m) {
		return reasonMethod
	}
	return ""
}

// checkURL applies the 400 catalogue to one view of the request target:
// the decoded path must be plain ASCII without dot or empty segments, and
// the raw path must not hide a slash in %2F. Everything else that could be
// read two ways (%25, %3F, %23, %3B, %5C, %00, ;, \) shows up in the
// decoded path as a character that is rejected there.
func checkURL(u *url.URL) string {
	if u.Opaque != "" {
		return reasonPathForm
	}
	p := u.Path
	if p == "" || p[0] != '/' {
		return reasonPathForm
	}
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case byteClass[c]&classPathBad != 0:
			return reasonPathChar
		case c == '/':
			if i+1 < len(p) && p[i+1] == '/' {
				return reasonEmptySegment
			}
			if isDotSegment(p[i+1:]) {
				return reasonDotSegment
			}
		}
	}
	if u.RawPath != "" && containsFold(u.RawPath, "%2f") {
		return reasonEncodedSlash
	}
	return ""
}

// isDotSegment reports whether rest (what follows a "/") starts with a
// "." or ".." segment.
func isDotSegment(rest string) bool {
	end := strings.IndexByte(rest, '/')
	if end < 0 {
		end = len(rest)
	}
	seg := rest[:end]
	return seg == "." || seg == ".."
}

// checkQuery rejects a _method parameter (any spelling of the name) in a
// raw query. Both "&" and ";" separate pairs here, as some frameworks split
// on either.
func checkQuery(rawQuery string) string {
	for q := rawQuery; q != ""; {
		var pair string
		if i := strings.IndexAny(q, "&;"); i >= 0 {
			pair, q = q[:i], q[i+1:]
		} else {
			pair, q = q, ""
		}
		name, _, _ := strings.Cut(pair, "=")
		if queryNameIs(name, "_method") {
			return reasonMethodParam
		}
	}
	return ""
}

// queryNameIs compares a raw query name, decoded, with want (lower case),
// ignoring ASCII case.
func queryNameIs(raw, want string) bool {
	if strings.ContainsAny(raw, "%+") {
		dec, err := url.QueryUnescape(raw)
		if err != nil {
			return true // undecodable: treat as a match, so the request is refused
		}
		raw = dec
	}
	return len(raw) == len(want) && hasPrefixFold(raw, want)
}

// queryValues returns the values of the query parameter name, and whether
// it is given in an ambiguous form (repeated, as name[], or in a query
// containing ";"). It allocates only when a value needs decoding.
func queryValues(rawQuery, name string) (value string, found, ambiguous bool) {
	if strings.IndexByte(rawQuery, ';') >= 0 {
		return "", false, true
	}
	for q := rawQuery; q != ""; {
		var pair string
		if i := strings.IndexByte(q, '&'); i >= 0 {
			pair, q = q[:i], q[i+1:]
		} else {
			pair, q = q, ""
		}
		rawName, rawValue, _ := strings.Cut(pair, "=")
		nameDec := rawName
		if strings.ContainsAny(rawName, "%+") {
			var err error
			if nameDec, err = url.QueryUnescape(rawName); err != nil {
				return "", false, true
			}
		}
		if nameDec == name+"[]" || (len(nameDec) > len(name) && nameDec[:len(name)+1] == name+"[") {
			return "", false, true
		}
		if nameDec != name {
			continue
		}
		if found {
			return "", false, true
		}
		found = true
		value = rawValue
		if strings.ContainsAny(rawValue, "%+") {
			dec, err := url.QueryUnescape(rawValue)
			if err != nil {
				return "", false, true
			}
			value = dec
		}
	}
	return value, found, false
}

// checkConnection allows only the hop-by-hop tokens a client legitimately
// sends. Any other token names a header that the proxy would drop, and that
// could be a header the operator adds with header_up.
func checkConnection(values []string) string {
	for _, v := range values {
		for v != "" {
			var tok string
			if i := strings.IndexByte(v, ','); i >= 0 {
				tok, v = v[:i], v[i+1:]
			} else {
				tok, v = v, ""
			}
			tok = strings.Trim(tok, " \t")
			if tok == "" {
				continue
			}
			if !strings.EqualFold(tok, "close") && !strings.EqualFold(tok, "keep-alive") &&
				!strings.EqualFold(tok, "upgrade") && !strings.EqualFold(tok, "te") {
				return reasonConnection
			}
		}
	}
	return ""
}

// byteClass tables the per-byte tests of the request checks: one load per
// byte on the request path instead of a chain of comparisons.
var byteClass = func() (t [256]uint8) {
	for c := 0; c < 256; c++ {
		b := byte(c)
		if !((b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || (b >= '0' && b <= '9') || b == '-') {
			t[c] |= classNotHeaderName
		}
		if b < 0x20 || b >= 0x7f || b == '\\' || b == ';' || b == '%' || b == '?' || b == '#' {
			t[c] |= classPathBad
		}
	}
	return t
}()

const (
	classNotHeaderName = 1 << iota // not a letter, digit or "-"
	classPathBad                   // control, non-ASCII, \ ; % ? #: not in a decoded path
)

// isPlainHeaderName reports whether a header name has only letters, digits
// and "-". Others (X~Key~Id) are aliases that CGI-style upstreams fold onto
// real names.
func isPlainHeaderName(name string) bool {
	for i := 0; i < len(name); i++ {
		if byteClass[name[i]]&classNotHeaderName != 0 {
			return false
		}
	}
	return true
}

// foldedEqual reports whether a header name, folded the way CGI/WSGI/PHP
// style servers confuse names (letters and digits only, ASCII case ignored),
// equals folded. It does not allocate.
func foldedEqual(name, folded string) bool {
	j := 0
	for i := 0; i < len(name); i++ {
		c := lowerASCII(name[i])
		if !((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
			continue
		}
		if j >= len(folded) || folded[j] != c {
			return false
		}
		j++
	}
	return j == len(folded)
}

// foldHeaderName folds a header name as foldedEqual does.
func foldHeaderName(name string) string {
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		c := lowerASCII(name[i])
		if (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') {
			b.WriteByte(c)
		}
	}
	return b.String()
}
