package caddyauth

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// TestRuleMatchesLikeCaddy checks our allocation-free matcher against
// Caddy's own path matcher on the paths the request checks let through
// (no "//", no dot segments, ASCII).
func TestRuleMatchesLikeCaddy(t *testing.T) {
	patterns := []string{
		"*", "/v1/gifts", "/v1/gifts*", "/v1/gifts/*", "*.json", "*/spend*", "/v1/budgets/*/spend",
		"/v1/*/x*", "/V1/Gifts", "/v1/*", "/", "/v1/*/*", "/a*b/c",
	}
	paths := []string{
		"/", "/v1/gifts", "/V1/GIFTS", "/v1/gifts/", "/v1/gifts/1", "/v1/giftsadmin", "/v1/budgets/b1/spend",
		"/v1/budgets/b1/SPEND", "/v1/budgets/b1/b2/spend", "/x.json", "/v1/a/xyz",
		"/v1/a/b/xyz", "/v1", "/v1/", "/axxb/c", "/ab/c", "/a/b/c", "/v1/budgets/spend",
	}
	for _, p := range patterns {
		cr, err := compileRule(0, Rule{Path: p, Permission: "public"})
		if err != nil {
			t.Fatal(err)
		}
		for _, path := range paths {
			r := httptest.NewRequest(http.MethodGet, "http://x"+path, nil)
			repl := caddy.NewReplacer()
			r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl))
			m := caddyhttp.MatchPath{p}
			if err := m.Provision(caddy.Context{}); err != nil {
				t.Fatal(err)
			}
			want, _ := m.MatchWithError(r)
			if got := cr.matches(http.MethodGet, path); got != want {
				t.Errorf("pattern %q path %q: got %v, Caddy says %v", p, path, got, want)
			}
		}
	}
}

func TestRuleMethods(t *testing.T) {
	cr, err := compileRule(0, Rule{Methods: []string{"GET"}, Path: "/v1/gifts", Permission: "gifts:read"})
	if err != nil {
		t.Fatal(err)
	}
	for m, want := range map[string]bool{"GET": true, "HEAD": false, "POST": false, "get": false} {
		if got := cr.matches(m, "/v1/gifts"); got != want {
			t.Errorf("%s: got %v want %v", m, got, want)
		}
	}
}

func TestCompileRuleRejects(t *testing.T) {
	bad := []Rule{
		{Path: "/v1/%2e", Permission: "public"},
		{Path: "/v1/gifts", Permission: "gifts:*"},
		{Path: "/v1/gifts", Permission: "*:*"},
		{Path: "/v1/gifts", Permission: "Gifts:read"},
		{Path: "/v1/gifts", Permission: ""},
		{Path: "v1/gifts", Permission: "public"},
		{Path: "", Permission: "public"},
		{Path: "/v1/{x}", Permission: "public"},
		{Path: "/v1/[a]", Permission: "public"},
		{Path: "/v1/a?", Permission: "public"},
		{Path: "/v1/a b", Permission: "public"},
		{Methods: []string{"get"}, Path: "/", Permission: "public"},
		{Methods: []string{"GET HEAD"}, Path: "/", Permission: "public"},
		{Methods: []string{""}, Path: "/", Permission: "public"},
	}
	for _, r := range bad {
		if _, err := compileRule(0, r); err == nil {
			t.Errorf("compileRule(%+v) accepted", r)
		}
	}
}

func TestShadows(t *testing.T) {
	rule := func(methods []string, p string) *compiledRule {
		cr, err := compileRule(0, Rule{Methods: methods, Path: p, Permission: "public"})
		if err != nil {
			t.Fatal(err)
		}
		return cr
	}
	get, post, any := []string{"GET"}, []string{"POST"}, []string(nil)
	cases := []struct {
		earlier, later *compiledRule
		want           bool
	}{
		{rule(any, "*"), rule(get, "/x"), true},
		{rule(any, "/v1/*"), rule(post, "/v1/gifts"), true},
		{rule(any, "/v1/*"), rule(post, "/v1/budgets/*/spend"), true},
		{rule(get, "/v1/*"), rule(post, "/v1/gifts"), false},
		{rule(get, "/v1/*"), rule(any, "/v1/gifts"), false},
		{rule(any, "/v1/gifts"), rule(any, "/V1/GIFTS"), true},
		{rule(any, "/v1/gifts"), rule(any, "/v1/gifts*"), false},
		{rule(any, "*.json"), rule(any, "/a/b.json"), true},
		{rule(any, "/v1/gifts/*"), rule(any, "/v1/gifts"), false},
		{rule([]string{"GET", "POST"}, "/a*"), rule(post, "/ab"), true},
	}
	for i, c := range cases {
		if got := c.earlier.shadows(c.later); got != c.want {
			t.Errorf("case %d (%s vs %s): got %v want %v", i, c.earlier.src.Path, c.later.src.Path, got, c.want)
		}
	}
}
