package keyring

import (
	"fmt"
	"strings"
)

// Scope is a parsed "resource:action" grant; "*" in a part matches any value.
type Scope struct{ Resource, Action string }

// Presets expanded when a key is created (SPEC section 2).
var Presets = map[string]string{"read_only": "*:read", "full_access": "*:*"}

// ParseScope reads a stored scope: lower case, one colon, each part a name or
// "*". Presets are expanded by the CLI, not accepted in stored records, so
// what is stored is what is enforced.
func ParseScope(s string) (Scope, error) {
	res, act, ok := strings.Cut(s, ":")
	if !ok || !validScopePart(res, true) || !validScopePart(act, true) {
		if p, isPreset := Presets[s]; isPreset {
			return Scope{}, fmt.Errorf("scope %q is a preset: store %q", s, p)
		}
		return Scope{}, fmt.Errorf("scope %q: want resource:action in lower case (a-z, 0-9, _ . -), either part may be *", s)
	}
	return Scope{res, act}, nil
}

// ParsePermission reads a rule's permission: a concrete resource:action.
func ParsePermission(s string) (Scope, error) {
	res, act, ok := strings.Cut(s, ":")
	if !ok || !validScopePart(res, false) || !validScopePart(act, false) {
		return Scope{}, fmt.Errorf("permission %q: want a concrete resource:action in lower case (no wildcard), or authenticated, or public", s)
	}
	return Scope{res, act}, nil
}

// Grants reports whether the scope covers the concrete permission p.
func (s Scope) Grants(p Scope) bool {
	return (s.Resource == "*" || s.Resource == p.Resource) && (s.Action == "*" || s.Action == p.Action)
}

func (s Scope) String() string { return s.Resource + ":" + s.Action }

func validScopePart(p string, wildcard bool) bool {
	if p == "*" {
		return wildcard
	}
	if p == "" {
		return false
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}
