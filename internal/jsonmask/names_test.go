package jsonmask

import (
	"math/rand"
	"strings"
	"testing"
)

func refMatch(name string, exact, suffix []string) bool {
	n := normalizeString(name)
	for _, s := range suffix {
		if strings.HasSuffix(n, s) {
			return true
		}
	}
	for _, e := range exact {
		if n == e {
			return true
		}
	}
	return false
}

// TestNameMatcher compares the trie (compact ASCII table and the wide
// table used with many fields) with a plain reference on random names.
func TestNameMatcher(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	word := func() string {
		parts := []string{"e", "mail", "Email", "_", "-", ".", " ", "phone", "name", "first", "x", "Number", "s", "ad", "dress", "K", "mobile", "tele"}
		var b strings.Builder
		for k := r.Intn(5); k >= 0; k-- {
			b.WriteString(parts[r.Intn(len(parts))])
		}
		return b.String()
	}
	many := []string{}
	for i := 0; i < 300; i++ {
		many = append(many, "f"+strings.Repeat("q", i%7)+string(rune('a'+i%26))+string(rune('a'+i/26)))
	}
	for _, fields := range [][]string{nil, {"ssn", "*_token"}, many} {
		cfg := MustCompile(Options{Fields: fields})
		exact, suffix := append([]string{}, piiExact...), append([]string{}, piiSuffixes...)
		for _, f := range fields {
			if strings.HasPrefix(f, "*") {
				suffix = append(suffix, normalizeString(f[1:]))
			} else {
				exact = append(exact, normalizeString(f))
			}
		}
		if (cfg.names.ascii == nil) != (len(fields) == len(many)) {
			t.Fatalf("compact table presence wrong for %d fields", len(fields))
		}
		for i := 0; i < 20000; i++ {
			n := word()
			if i%3 == 0 && len(fields) > 0 {
				n = fields[r.Intn(len(fields))]
				n = strings.TrimPrefix(n, "*")
				if r.Intn(2) == 0 {
					n = "x_" + n
				}
			}
			want := refMatch(n, exact, suffix)
			if got := cfg.names.matchRaw([]byte(n)); got != want {
				t.Fatalf("matchRaw(%q) = %v, want %v", n, got, want)
			}
			if got := cfg.names.matchNorm([]byte(normalizeString(n)), false); got != want {
				t.Fatalf("matchNorm(%q) = %v, want %v", n, got, want)
			}
		}
	}
}

func TestFold(t *testing.T) {
	for in, want := range map[string]string{"ſsn": "ssn", "\u212Aey": "key", "E-Mail Address": "emailaddress",
		"Σσς": normalizeString("σσσ"), "e\u200bmail": "email", "ÉMILE": normalizeString("émile")} {
		if got := normalizeString(in); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}
