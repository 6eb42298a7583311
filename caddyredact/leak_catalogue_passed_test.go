package caddyredact_test

import (
	"testing"
)

// TestLeakCataloguePassedUnchanged is the other side of PR-A6 and of the
// bodiless rows: what redact passes unchanged (SPEC §6: expose_if "true",
// pass_types) keeps the upstream's trailers, and a HEAD of a pass_types
// body keeps its validators. Only masked (or refused) bodies lose them.
// A 304 carries no Content-Type (net/http's server drops it), so redact
// cannot tell it from one of a masked body: it loses them too (fail
// closed; harmless, a 304 only refreshes what the client has cached).
func TestLeakCataloguePassedUnchanged(t *testing.T) {
	setup(t)
	// Paths of their own: the catalogue rows share lc.handlers.
	lc.mu.Lock()
	lc.handlers["/passed-csv-trailers"] = ub{ct: "text/csv", body: []byte("a,b\n1,2\n"), chunk: 4,
		trailer: []string{"Content-Digest", "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:", "X-Rows", "1"}}.serve
	lc.handlers["/passed-csv"] = ub{ct: "text/csv", body: []byte("a,b\n1,2\n")}.serve
	lc.handlers["/passed-csv-304"] = ub{ct: "text/csv", status: 304}.serve
	lc.mu.Unlock()

	trailers := func(want ...string) func(t *testing.T, r *lres) {
		return func(t *testing.T, r *lres) {
			t.Helper()
			for i := 0; i+1 < len(want); i += 2 {
				if got := r.trailer.Get(want[i]); got != want[i+1] {
					t.Errorf("%s: trailer %s %q, want %q", r.proto, want[i], got, want[i+1])
				}
			}
		}
	}
	validators := func(t *testing.T, r *lres) {
		t.Helper()
		for _, h := range []string{"Etag", "Last-Modified", "Content-Digest"} {
			if r.header.Get(h) == "" {
				t.Errorf("%s: %s of a pass_types body dropped", r.proto, h)
			}
		}
	}
	digest := "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
	for _, c := range []lcase{
		{name: "exposed-trailers", path: "/expose/trailers?expose=true", want: oPassed, secrets: []string{},
			check: trailers("Content-Digest", digest, "X-Rows", "1")},
		{name: "exposed-pii-trailer", path: "/expose/trailer-pii?expose=true", want: oPassed, secrets: []string{},
			check: trailers("X-Debug-Email", "zorb.quix@hidden-mail.test")},
		{name: "pass_types-trailers", path: "/pass/passed-csv-trailers", want: oPassed, secrets: []string{},
			check: trailers("Content-Digest", digest, "X-Rows", "1")},
		{name: "pass_types-head", path: "/pass/passed-csv", method: "HEAD", want: oPassed, status: 200, secrets: []string{}, check: validators},
		{name: "pass_types-304", path: "/pass/passed-csv-304", want: oPassed, status: 304, secrets: []string{}, check: bodiless},
	} {
		for _, p := range lcProtos {
			t.Run(c.name+"/"+p, func(t *testing.T) { lcRun(t, p, c) })
		}
	}
}
