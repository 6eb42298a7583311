package caddyauth

import (
	"fmt"
	"slices"
	"strings"

	"github.com/scopegate/scopegate/caddyauth/internal/keyring"
)

// Rule maps requests to the permission they need. Rules are tried in order;
// the first whose methods and path match decides. A request no rule matches
// is denied.
type Rule struct {
	// Methods the rule applies to, upper case, e.g. ["GET", "HEAD"]. Empty
	// or ["*"] means any method. GET does not imply HEAD.
	Methods []string `json:"methods,omitempty"`

	// Path is a pattern with the semantics of Caddy's path matcher:
	// case-insensitive; "*" alone matches everything; "/a*" is a prefix,
	// "*.json" a suffix, "*x*" a substring; otherwise "*" matches within
	// one segment. It is matched against r.URL.Path as it is when
	// scoped_auth runs (after rewrite/uri). Placeholders, "%", "?", "[",
	// "]" and "\" are not allowed.
	Path string `json:"path"`

	// Permission is a concrete lower-case "resource:action", or
	// "authenticated" (any valid key or certificate principal), or
	// "public" (no key needed).
	Permission string `json:"permission"`
}

const (
	permAuthenticated = "authenticated"
	permPublic        = "public"
)

type patternKind uint8

const (
	patternAny patternKind = iota
	patternExact
	patternPrefix
	patternSuffix
	patternContains
	patternGlob // "*" matches within a segment, as path.Match
)

// compiledRule is a Rule ready for the request path.
type compiledRule struct {
	index      int // 1-based, for messages
	src        Rule
	anyMethod  bool
	methods    []string
	kind       patternKind
	pattern    string // lower case; for prefix/suffix/contains without the stars
	public     bool
	authOnly   bool // "authenticated"
	perm       keyring.Scope
	permString string
	permValue  any    // boxed, for the permission placeholder
	challenge  string // WWW-Authenticate for insufficient_scope
}

func compileRule(i int, r Rule) (*compiledRule, error) {
	cr := &compiledRule{index: i + 1, src: r, permString: r.Permission}
	if len(r.Methods) == 0 || (len(r.Methods) == 1 && r.Methods[0] == "*") {
		cr.anyMethod = true
	} else {
		for _, m := range r.Methods {
			if !isUpperToken(m) {
				return nil, fmt.Errorf("rule %d: method %q: want an upper-case method token (GET, POST, …) or *", i+1, m)
			}
		}
		cr.methods = r.Methods
	}
	if err := checkPattern(r.Path); err != nil {
		return nil, fmt.Errorf("rule %d: %v", i+1, err)
	}
	cr.kind, cr.pattern = classifyPattern(strings.ToLower(r.Path))
	switch r.Permission {
	case permPublic:
		cr.public = true
	case permAuthenticated:
		cr.authOnly = true
	default:
		p, err := keyring.ParsePermission(r.Permission)
		if err != nil {
			return nil, fmt.Errorf("rule %d: %v", i+1, err)
		}
		cr.perm = p
		cr.challenge = `Bearer realm="scoped_auth", error="insufficient_scope", scope="` + r.Permission + `"`
	}
	cr.permValue = r.Permission
	return cr, nil
}

// checkPattern rejects what the rule matcher does not support, and "%"
// above all: Caddy compares such patterns in escaped space, which is how
// CVE-2026-27587 bypassed path rules.
func checkPattern(p string) error {
	if p == "" {
		return fmt.Errorf("empty path pattern")
	}
	if p[0] != '/' && p[0] != '*' {
		return fmt.Errorf("path pattern %q must start with / or *", p)
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '%':
			return fmt.Errorf("path pattern %q contains %%: patterns are matched against the decoded path; write the character itself", p)
		case c == '?' || c == '[' || c == ']' || c == '\\' || c == '{' || c == '}':
			return fmt.Errorf("path pattern %q contains %q, which scoped_auth rules do not support (only * is a wildcard)", p, c)
		case c <= ' ' || c >= 0x7f:
			return fmt.Errorf("path pattern %q contains a space, control or non-ASCII character", p)
		}
	}
	return nil
}

// classifyPattern follows caddyhttp.MatchPath's fast paths.
func classifyPattern(p string) (patternKind, string) {
	stars := strings.Count(p, "*")
	switch {
	case p == "*":
		return patternAny, ""
	case stars == 2 && p[0] == '*' && p[len(p)-1] == '*':
		return patternContains, p[1 : len(p)-1]
	case stars == 1 && p[0] == '*':
		return patternSuffix, p[1:]
	case stars == 1 && p[len(p)-1] == '*':
		return patternPrefix, p[:len(p)-1]
	case stars == 0:
		return patternExact, p
	default:
		return patternGlob, p
	}
}

func (cr *compiledRule) matches(method, path string) bool {
	if !cr.anyMethod && !slices.Contains(cr.methods, method) {
		return false
	}
	switch cr.kind {
	case patternAny:
		return true
	case patternExact:
		return len(path) == len(cr.pattern) && hasPrefixFold(path, cr.pattern)
	case patternPrefix:
		return hasPrefixFold(path, cr.pattern)
	case patternSuffix:
		return len(path) >= len(cr.pattern) && hasPrefixFold(path[len(path)-len(cr.pattern):], cr.pattern)
	case patternContains:
		return containsFold(path, cr.pattern)
	default:
		return globMatchFold(cr.pattern, path)
	}
}

// The request path reaching the matcher is ASCII (the request checks reject
// anything else), so byte-wise folding is exact and allocation-free.
func lowerASCII(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// hasPrefixFold reports whether s starts with the lower-case prefix.
func hasPrefixFold(s, prefix string) bool {
	if len(s) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		if lowerASCII(s[i]) != prefix[i] {
			return false
		}
	}
	return true
}

func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if hasPrefixFold(s[i:], sub) {
			return true
		}
	}
	return false
}

// globMatchFold is path.Match restricted to "*": the pattern and the path
// must have the same number of segments, and "*" matches any run of
// characters within one segment.
func globMatchFold(pattern, path string) bool {
	for {
		pi := strings.IndexByte(pattern, '/')
		si := strings.IndexByte(path, '/')
		if (pi < 0) != (si < 0) {
			return false
		}
		if pi < 0 {
			return segmentMatchFold(pattern, path)
		}
		if !segmentMatchFold(pattern[:pi], path[:si]) {
			return false
		}
		pattern, path = pattern[pi+1:], path[si+1:]
	}
}

// segmentMatchFold matches one segment against a pattern whose only
// metacharacter is "*", with the usual linear backtracking.
func segmentMatchFold(p, s string) bool {
	pi, si := 0, 0
	star, mark := -1, 0
	for si < len(s) {
		switch {
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, si
			pi++
		case pi < len(p) && p[pi] == lowerASCII(s[si]):
			pi++
			si++
		case star >= 0:
			pi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// shadows reports whether every request matched by later is matched by
// cr, so later can never decide anything. It recognises the common cases
// (same pattern, "*", covering prefixes and suffixes); it never claims a
// shadow that is not one.
func (cr *compiledRule) shadows(later *compiledRule) bool {
	if !cr.anyMethod {
		if later.anyMethod {
			return false
		}
		for _, m := range later.methods {
			if !slices.Contains(cr.methods, m) {
				return false
			}
		}
	}
	switch cr.kind {
	case patternAny:
		return true
	case patternPrefix:
		lit := later.pattern
		if later.kind == patternGlob {
			lit = lit[:strings.IndexByte(lit, '*')]
		}
		switch later.kind {
		case patternExact, patternPrefix, patternGlob:
			return strings.HasPrefix(lit, cr.pattern)
		}
	case patternSuffix:
		switch later.kind {
		case patternExact, patternSuffix:
			return strings.HasSuffix(later.pattern, cr.pattern)
		}
	case patternContains:
		switch later.kind {
		case patternExact, patternPrefix, patternSuffix, patternContains:
			return strings.Contains(later.pattern, cr.pattern)
		}
	}
	return cr.kind == later.kind && cr.pattern == later.pattern
}

// isUpperToken reports whether s is an RFC 9110 token with no lower-case
// letter: the only method spelling scoped_auth accepts.
func isUpperToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
