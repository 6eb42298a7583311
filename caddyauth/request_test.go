package caddyauth

import (
	"bufio"
	"net/http"
	"strings"
	"testing"
)

// readRequest parses a raw request line the way Go's server does, so the
// tests see the same URL fields the handler sees.
func readRequest(t *testing.T, line string) *http.Request {
	t.Helper()
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(line + " HTTP/1.1\r\nHost: x\r\n\r\n")))
	if err != nil {
		t.Fatalf("%q: %v", line, err)
	}
	return r
}

func TestCheckURL(t *testing.T) {
	bad := []string{
		"/v1/budgets/b1%2Fspend", "/v1/budgets/b1%2fspend",
		"/v1/gifts/..%2F..%2Fbudgets/b1/spend",
		"/v1/gifts/../budgets/b1/spend", "/v1/gifts/..",
		"/v1/gifts/%2e%2e/budgets/b1/spend", "/v1/gifts/.%2e/x", "/v1/gifts/%2E%2E/x",
		"/v1/gifts/./x", "/v1/gifts/%2e/x", "/v1/gifts/.",
		"//v1/gifts", "/v1//gifts", "/v1/budgets//spend", "/v1/gifts/",
		"/v1/gifts/..;/budgets/b1/spend", "/v1/budgets/b1;x=1/spend",
		"/v1/a%3Bb", "/v1/a%3bb",
		"/v1/budgets/b1%5Cspend", "/v1/a%5cb", "/v1/a\\b",
		"/v1/a%00b",
		"/v1/budgets/b1%252Fspend", "/v1/%252e%252e/x",
		"/v1/gifts%3Fx=1", "/v1/gifts%23frag", "/v1/gifts#frag",
		"/v1/%EF%BD%87ifts", "/v1/%C0%AF", "/v1/a%7Fb", "/v1/a%01b",
		"*", "http://other.host", "http://other.host/v1/gifts/../x",
	}
	for _, target := range bad {
		if target == "/v1/gifts/" {
			continue // a trailing slash is a different path, not an ambiguous one
		}
		r := readRequest(t, "GET "+target)
		if checkURL(r.URL) == "" {
			t.Errorf("%q: accepted", target)
		}
	}
	good := []string{"/", "/v1/gifts", "/v1/gifts/", "/v1/budgets/b1/%73pend", "/v1/a%20b", "/v1/a.b", "/v1/...", "/v1/.well-known/x", "http://other.host/v1/gifts", "/v1/gifts?x=%2F"}
	for _, target := range good {
		r := readRequest(t, "GET "+target)
		if reason := checkURL(r.URL); reason != "" {
			t.Errorf("%q: refused: %s", target, reason)
		}
	}
}

func TestCheckQuery(t *testing.T) {
	for _, q := range []string{"_method=POST", "a=1&_method=DELETE", "a=1;_method=PUT", "_METHOD=x", "%5Fmethod=POST", "_method", "_meth%6Fd=x", "%zz=1"} {
		if checkQuery(q) == "" {
			t.Errorf("%q accepted", q)
		}
	}
	for _, q := range []string{"", "method=POST", "x=_method", "a_method=1"} {
		if checkQuery(q) != "" {
			t.Errorf("%q refused", q)
		}
	}
}

func TestQueryValues(t *testing.T) {
	cases := []struct {
		q           string
		value       string
		found, ambi bool
	}{
		{"account=acme-us", "acme-us", true, false},
		{"x=1&account=acme%2Dus", "acme-us", true, false},
		{"x=1", "", false, false},
		{"account=a&account=b", "", false, true},
		{"account[]=a", "", false, true},
		{"account%5B%5D=a", "", false, true},
		{"account[0]=a", "", false, true},
		{"account=a;x=1", "", false, true},
		{"acc%6Funt=a&account=b", "", false, true},
		{"account=%zz", "", false, true},
	}
	for _, c := range cases {
		v, found, ambi := queryValues(c.q, "account")
		if v != c.value || found != c.found || ambi != c.ambi {
			t.Errorf("%q: got (%q,%v,%v) want (%q,%v,%v)", c.q, v, found, ambi, c.value, c.found, c.ambi)
		}
	}
}

func TestCheckConnection(t *testing.T) {
	for _, v := range []string{"close, X-Account-ID", "x-key-id", "keep-alive,Authorization", "Upgrade, foo"} {
		if checkConnection([]string{v}) == "" {
			t.Errorf("%q accepted", v)
		}
	}
	for _, v := range []string{"close", "keep-alive", "Keep-Alive, Upgrade", "TE, close", " , close"} {
		if checkConnection([]string{v}) != "" {
			t.Errorf("%q refused", v)
		}
	}
}

func TestMethodAndHeaderHelpers(t *testing.T) {
	for _, m := range []string{"post", "PoSt", "GET ", "", "G\x00T"} {
		if checkMethod(m) == "" {
			t.Errorf("method %q accepted", m)
		}
	}
	if !foldedEqual("X~Account~Id", foldHeaderName("X-Account-ID")) || !foldedEqual("Xaccountid", "xaccountid") || foldedEqual("X-Account-IDs", "xaccountid") {
		t.Error("foldedEqual")
	}
	if seg, ok := pathSegment("/v1/accounts/acme-us/gifts", 3); !ok || seg != "acme-us" {
		t.Errorf("pathSegment = %q %v", seg, ok)
	}
	if _, ok := pathSegment("/v1", 2); ok {
		t.Error("pathSegment beyond the end")
	}
}

func readRequestErr(line string) (*http.Request, error) {
	return http.ReadRequest(bufio.NewReader(strings.NewReader(line + " HTTP/1.1\r\nHost: x\r\n\r\n")))
}
