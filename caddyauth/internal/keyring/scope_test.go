package keyring

import "testing"

func TestScopeGrants(t *testing.T) {
	cases := []struct {
		scope, perm string
		want        bool
	}{
		{"gifts:read", "gifts:read", true},
		{"gifts:read", "gifts:send", false},
		{"gifts:*", "gifts:send", true},
		{"*:read", "gifts:read", true},
		{"*:read", "budgets:spend", false},
		{"*:*", "budgets:spend", true},
		{"gift:read", "gifts:read", false},
		{"gifts:reader", "gifts:read", false},
	}
	for _, c := range cases {
		s, err := ParseScope(c.scope)
		if err != nil {
			t.Fatal(err)
		}
		p, err := ParsePermission(c.perm)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Grants(p); got != c.want {
			t.Errorf("%s grants %s = %v, want %v", c.scope, c.perm, got, c.want)
		}
	}
}

func TestParseScopeRejects(t *testing.T) {
	for _, s := range []string{"", "gifts", "Gifts:read", "gifts:read:x", "gifts:", ":read", "gi*:read", "read_only", "full_access", "gifts :read", "gifts:réad"} {
		if _, err := ParseScope(s); err == nil {
			t.Errorf("ParseScope(%q) accepted", s)
		}
	}
	for _, p := range []string{"*:read", "gifts:*", "*:*", "authenticated", "Gifts:read"} {
		if _, err := ParsePermission(p); err == nil {
			t.Errorf("ParsePermission(%q) accepted", p)
		}
	}
}
