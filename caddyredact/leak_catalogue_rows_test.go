package caddyredact_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// leakRows is the catalogue, keyed by the research notes' ids:
//
//   - RL1…RL24: the rows of shared/research/redact-leaks.md "Leak catalogue"
//     (its "#" column);
//   - PR-A1…PR-J3: shared/research/peers-redact.md §2, with its own ids;
//   - PA-G1…PA-G7: shared/research/peers-auth.md §4 G (its short list).
//
// cat is the peers-redact.md §2 letter the row belongs to (A encoding and
// transport, B framing/headers, C content type and routing, D streaming,
// E JSON semantics, F field names, G invalid input, H strategies and
// detectors, I opt-in, J side channels). Rows that fold into one another
// run the same scenarios (e.g. RL1 = PR-A1 = PA-G1).
func leakRows() []lrow {
	bearer := func(k string) []string { return []string{"Authorization", "Bearer " + lc.keys[k]} }
	return []lrow{
		// ---- redact-leaks.md ----
		{id: "RL1", cat: "A", what: "still-encoded upstream body", cases: encCases()},
		{id: "RL2", cat: "A", what: "Range / If-Range from the client", cases: rangeCases()},
		{id: "RL3", cat: "C", what: "file_server .json (ReadFrom)", cases: fileCases()},
		{id: "RL4", cat: "D", what: "upstream flushes", cases: flushCases()},
		{id: "RL5", cat: "B", what: "stale Content-Length", cases: lengthCases()},
		{id: "RL6", cat: "B", what: "validators and digests of the unmasked body; Vary", cases: validatorCases()},
		{id: "RL7", cat: "B", what: "masked and unmasked variants of one URL", cases: cacheCases(bearer)},
		{id: "RL8", cat: "C", what: "JSON media types, sniffing, NDJSON split lines", cases: typeCases()},
		{id: "RL9", cat: "B", what: "HEAD, 1xx, 101, 204, 304", cases: bodilessCases()},
		{id: "RL10", cat: "E", what: "escaped, cased, separated names", cases: append(escapedCases(), spellingCases()...)},
		{id: "RL11", cat: "E", what: "duplicate members", cases: dupeCases()},
		{id: "RL12", cat: "E", what: "matched value of every type", cases: typesCases()},
		{id: "RL13", cat: "E", what: "PII in free text", cases: []lcase{
			{name: "no-detect-passes", path: "/d/note", want: oPassed, secrets: []string{}, has: []string{"zorb.quix@hidden-mail.test"}},
			{name: "detect", path: "/detect/note", want: oMasked, has: []string{`"ok":true`}},
		}},
		{id: "RL14", cat: "G", what: "invalid JSON within max_buffer", cases: invalidCases()},
		{id: "RL15", cat: "G", what: "invalid JSON past max_buffer", cases: pastBufferCases()},
		{id: "RL16", cat: "G", what: "upstream closes mid-value", cases: truncCases()},
		{id: "RL17", cat: "E", what: "hostile sizes and depths", cases: hostileCases(),
			unit: "a 1 GB array: TestHugeBodyBoundedMemory streams 256 MiB end to end; internal/jsonmask TestBoundedMemory and TestDepth"},
		{id: "RL18", cat: "E", what: "UTF-8, surrogates, BOM", cases: utf8Cases()},
		{id: "RL19", cat: "E", what: "numbers copied byte for byte", cases: numberCases()},
		{id: "RL20", cat: "C", what: "redact and encode in every order", cases: encodeCases()},
		{id: "RL21", cat: "I", what: "expose_if only on the exact string true", cases: exposeCases()},
		{id: "RL22", cat: "C", what: "handle_errors pages", cases: errorPageCases()},
		{id: "RL23", cat: "C", what: "non-JSON types, upgrade, 206", cases: nonJSONCases()},
		{id: "RL24", cat: "B", what: "4xx/5xx JSON echoing PII", cases: errorStatusCases()},

		// ---- peers-redact.md §2 ----
		{id: "PR-A1", cat: "A", what: "gzip/deflate/zstd although Accept-Encoding was removed", cases: []lcase{
			masked("gzip", "/d/gzip"), masked("deflate", "/d/deflate"), masked("zstd", "/d/zstd"),
			{name: "gzip-streamed", path: "/d/gzip-chunked", want: oMasked, has: []string{lcBigEnd}},
			{name: "gzip-past-buffer", path: "/small/gzip-chunked", want: oMasked, has: []string{lcBigEnd}},
		}},
		{id: "PR-A2", cat: "A", what: "encoding names: case, x-gzip, stacked, identity, br, compress", cases: []lcase{
			masked("x-gzip", "/d/x-gzip"), masked("GZIP", "/d/GZIP"), masked("identity", "/d/identity"),
			refused("br", "/d/br"), refused("compress", "/d/compress"), refused("stacked", "/d/stacked"),
		}},
		{id: "PR-A3", cat: "A", what: "corrupt or truncated gzip", cases: []lcase{
			refused("corrupt", "/d/gzip-corrupt"), refused("trailer-cut", "/d/gzip-trailer"),
			{name: "cut-past-buffer", path: "/small/gzip-cutbig", want: failClosed},
			{name: "corrupt-chunked", path: "/d/gzip-chunkbad", want: failClosed},
			refused("gzip-text", "/d/gzip-nojson"),
		}},
		{id: "PR-A4", cat: "A", what: "decompression bomb (16 KiB → 16 MiB here)", cases: []lcase{
			{name: "bomb", path: "/d/gzip-bomb", want: oMasked, has: []string{`","email":"[REDACTED]","name":"[REDACTED]"}`}},
		}, unit: "memory stays flat: TestHugeBodyBoundedMemory (256 MiB through Caddy), internal/jsonmask TestBoundedMemory"},
		{id: "PR-A5", cat: "A", what: "1-byte chunks, splits inside escapes, names, numbers", cases: []lcase{
			{name: "one-byte-chunks", path: "/d/onebyte", want: oMasked, check: sameAs("/d/onebyte-once")},
		}, unit: "every split: internal/jsonmask TestSplitInvariance, FuzzNoLeak"},
		{id: "PR-A6", cat: "A", what: "upstream trailers (digest of the unmasked body, data)", cases: trailerCases()},
		{id: "PR-A7", cat: "A", what: "Range/If-Range stripped; a 206 anyway → 502", cases: append(rangeCases(), refused("206", "/d/206"))},
		{id: "PR-A8", cat: "A", what: "206 or multipart/byteranges on its own", cases: []lcase{
			refused("206", "/d/206"), refused("byteranges", "/d/byteranges"),
		}},
		{id: "PR-B1", cat: "B", what: "Content-Length after the body changed size", cases: lengthCases()},
		{id: "PR-B2", cat: "B", what: "length side channel (GET and HEAD)", cases: []lcase{
			{name: "get", path: "/d/doc", want: oMasked, check: func(t *testing.T, r *lres) {
				if r.header.Get("Content-Length") == fmt.Sprint(len(lcDoc)) {
					t.Errorf("%s: the unmasked body's Content-Length", r.proto)
				}
			}},
			headCase("head", "/d/doc"), headCase("head-file", "/files/people.json"),
		}},
		{id: "PR-B3", cat: "B", what: "validators and digests removed", cases: validatorCases()},
		{id: "PR-B4", cat: "B", what: "shared caches: private + Vary on masked and exposed", cases: cacheCases(bearer)},
		{id: "PR-B5", cat: "B", what: "If-None-Match learned elsewhere: not forwarded (no 304 oracle), masked 200", cases: []lcase{
			{name: "if-none-match", path: "/d/conditional", hdr: []string{"If-None-Match", fmt.Sprintf(`"unmasked-%d"`, len(lcDoc))}, want: oMasked},
			{name: "if-modified-since", path: "/d/conditional", hdr: []string{"If-Modified-Since", "Sun, 29 Nov 2026 00:00:00 GMT"}, want: oMasked},
		}},
		{id: "PR-B6", cat: "B", what: "HEAD, 204, 304, 103", cases: bodilessCases()},
		{id: "PR-B7", cat: "B", what: "101 upgrade refused", cases: upgradeCases()},
		{id: "PR-B8", cat: "B", what: "error bodies echoing input", cases: errorStatusCases()},
		{id: "PR-C1", cat: "C", what: "+json, parameters, upper case", cases: []lcase{
			masked("vnd", "/d/vnd"), {name: "problem", path: "/d/problem", want: oMasked, status: 422}, masked("upper", "/d/upper"),
		}},
		{id: "PR-C2", cat: "C", what: "JSON under another label, or none", cases: []lcase{
			masked("no-type-object", "/d/notype-obj"), masked("no-type-array", "/d/notype-arr"), masked("no-type-bom", "/d/notype-bom"),
			refused("no-type-text", "/d/notype-text"),
			// SPEC §6 sniffs only a missing type: a JSON body labelled
			// text/plain, text/html or octet-stream is refused (502), never
			// passed.
			refused("text-plain", "/d/text-json"), refused("text-html", "/d/html-json"), refused("octet-stream", "/d/octet-json"),
		}},
		{id: "PR-C3", cat: "C", what: "NDJSON, JSONL, json-seq framing", cases: framingCases()},
		{id: "PR-C4", cat: "C", what: "text/event-stream", cases: []lcase{
			refused("sse", "/d/sse"), refused("sse-flush", "/flush/sse"),
		}},
		{id: "PR-C5", cat: "C", what: "multipart bodies", cases: []lcase{refused("multipart", "/d/multipart")}},
		{id: "PR-C6", cat: "C", what: "file_server (ReadFrom)", cases: fileCases()},
		{id: "PR-C7", cat: "C", what: "handle_errors re-proxying an upstream error page", cases: errorPageCases()},
		{id: "PR-C8", cat: "C", what: "encode outside, inside, twice, missing", cases: encodeCases()},
		{id: "PR-D1", cat: "D", what: "flushes push only masked bytes; streaming keeps working", cases: flushCases(),
			unit: "a pending partial/hash value is never flushed half-done: internal/jsonmask TestTruncationNeverLeaks"},
		{id: "PR-D2", cat: "D", what: "past max_buffer, the same masker", cases: []lcase{
			{name: "straddle", path: "/small/straddle", want: oMasked, has: []string{`"email":"[REDACTED]"`, `"name":"[REDACTED]"}`}},
			{name: "big", path: "/small/big", want: oMasked, has: []string{lcBigEnd}},
		}},
		{id: "PR-D3", cat: "D", what: "a cap inside a value emits nothing of it", cases: []lcase{
			{name: "cut-in-value", path: "/small/cl-short-big", want: oAborted},
			{name: "long-secret", path: "/d/longsecret", want: oMasked, has: []string{`{"email":"[REDACTED]"}`}},
		}},
		{id: "PR-D4", cat: "D", what: "buffered and streamed paths agree", cases: []lcase{
			{name: "big", path: "/small/big", want: oMasked, check: sameAs("/d/big")},
			{name: "straddle", path: "/small/straddle", want: oMasked, check: sameAs("/d/straddle")},
		}},
		{id: "PR-D5", cat: "D", what: "invalid after commit → abort", cases: pastBufferCases()},
		{id: "PR-D6", cat: "D", what: "flush ticker and copy loop on one writer", cases: []lcase{
			{name: "ticker", path: "/ticker/big-slow", want: oMasked, check: sameAs("/d/big")},
		}, unit: "run under -race: go test -race -run 'TestLeakCatalogue/PR-D6' ./caddyredact/"},
		{id: "PR-E1", cat: "E", what: "escaped names", cases: escapedCases()},
		{id: "PR-E2", cat: "E", what: "duplicate members", cases: dupeCases()},
		{id: "PR-E3", cat: "E", what: "matched value of every type", cases: typesCases()},
		{id: "PR-E4", cat: "E", what: "PII as object keys", cases: []lcase{
			{name: "detect", path: "/detect/keys", want: oMasked, has: []string{`"since":2020`}},
			{name: "no-detect-passes", path: "/d/keys", want: oPassed, secrets: []string{}, has: []string{"zorb.quix@hidden-mail.test"}},
		}},
		{id: "PR-E5", cat: "E", what: "PII in an array under an unmatched name", cases: []lcase{
			{name: "detect", path: "/detect/cc", want: oMasked, has: []string{`"Hello"`}},
			{name: "no-detect-passes", path: "/d/cc", want: oPassed, secrets: []string{}, has: []string{"zorb.quix@hidden-mail.test"}},
		}},
		{id: "PR-E6", cat: "E", what: "hostile sizes and depths", cases: hostileCases(),
			unit: "per-value buffer caps for partial/hash/detect: internal/jsonmask TestLongValuesFailClosed"},
		{id: "PR-E7", cat: "E", what: "invalid UTF-8, lone surrogates, BOM", cases: utf8Cases()},
		{id: "PR-E8", cat: "E", what: "numbers byte for byte", cases: numberCases()},
		{id: "PR-E9", cat: "E", what: "whitespace preserved", cases: []lcase{
			{name: "crlf-pretty", path: "/d/whitespace", want: oMasked, check: exact("{\r\n  \"email\" :  \"[REDACTED]\" ,\r\n\t\"name\"\t:\"[REDACTED]\"\r\n}\r\n")},
		}},
		{id: "PR-E10", cat: "E", what: "top-level scalar and array of strings", cases: []lcase{
			{name: "scalar-detect", path: "/detect/topscalar", want: oMasked},
			{name: "array-detect", path: "/detect/toparray", want: oMasked},
			{name: "scalar-passes", path: "/d/topscalar", want: oPassed, secrets: []string{}, check: exact(`"zorb.quix@hidden-mail.test"`)},
			{name: "array-passes", path: "/d/toparray", want: oPassed, secrets: []string{}, check: exact(`["zorb.quix@hidden-mail.test","+1 (415) 555-0199"]`)},
		}},
		{id: "PR-F1", cat: "F", what: "spellings of one name", cases: spellingCases()},
		{id: "PR-F2", cat: "F", what: "names the preset matches and misses (SPEC §6 list)", cases: []lcase{
			{name: "preset", path: "/d/preset-misses", want: oMasked,
				has:   []string{`"phone2":"P2-visible"`, `"msisdn":"MSISDN-visible"`, `"tel":"TEL-visible"`, `"nickname":"NICK-visible"`, `"username":"USER-visible"`, `"dob":"DOB-visible"`, `"filename":"FILE-visible"`, `"hostname":"HOST-visible"`, `"companyName":"COMPANY-visible"`},
				check: countMasked(8)},
		}},
		{id: "PR-F3", cat: "F", what: "separator padding", cases: []lcase{
			{name: "padding", path: "/d/padding", want: oMasked, check: countMasked(2)},
		}},
		{id: "PR-F4", cat: "F", what: "Unicode folding (ſ, K) and full-width", cases: []lcase{
			{name: "fold", path: "/detect/fold", want: oMasked, secrets: []string{"SSN-SECRET", "KEY-SECRET"}, has: []string{`"FULLWIDTH-visible"`}, check: countMasked(4)},
		}},
		{id: "PR-F5", cat: "F", what: "names longer than any selector", cases: []lcase{
			{name: "long", path: "/d/longname", want: oMasked, has: []string{`"LONGNAME-visible"`, `email":"[REDACTED]"}`}},
		}},
		{id: "PR-F6", cat: "F", what: "keep only at its exact path", cases: []lcase{
			{name: "keep", path: "/keep/keepconflict", want: oMasked, secrets: []string{"Zorbulon", "Quixter"},
				check: exact(`{"company":{"name":"Acme Corp"},"employees":[{"name":"[REDACTED]"}],"name":"[REDACTED]"}`)},
		}},
		{id: "PR-G1", cat: "G", what: "invalid within max_buffer", cases: invalidCases()},
		{id: "PR-G2", cat: "G", what: "invalid past max_buffer", cases: pastBufferCases()},
		{id: "PR-G3", cat: "G", what: "upstream closes mid-value", cases: truncCases(),
			unit: "every byte offset: internal/jsonmask TestTruncationNeverLeaks"},
		{id: "PR-G4", cat: "G", what: "body shorter than its Content-Length", cases: []lcase{
			{name: "short", path: "/d/cl-short", want: failClosed},
			{name: "short-past-buffer", path: "/small/cl-short-big", want: oAborted},
		}},
		{id: "PR-G5", cat: "G", what: "trailing garbage, two documents", cases: []lcase{
			refused("trailing", "/d/trailing"), refused("two-documents", "/d/twodocs"),
		}},
		{id: "PR-H1", cat: "H", what: "partial on short values", cases: []lcase{
			{name: "short", path: "/partial/short", want: oMasked, secrets: []string{},
				has:    []string{`"email":"***@b.c"`, `"phone":"1***"`, `"name":"***"`, `"firstname":"Z***"`},
				hasNot: []string{`"a@b.c"`, `"123"`, `"Zo"`}},
		}},
		{id: "PR-H2", cat: "H", what: "keyed hash over the decoded value", cases: []lcase{
			{name: "hash", path: "/hash/hashsame", want: oMasked, check: hashTokens},
		}, unit: "hash without hash_key is a config error: caddyredact TestProvisionErrors"},
		{id: "PR-H3", cat: "H", what: "overlapping detector candidates", cases: []lcase{
			masked("detect", "/detect/overlap"),
			{name: "partial", path: "/partial/overlap", want: oMasked, secrets: []string{"zorb.quix", "(415) 555"}},
		}},
		{id: "PR-H4", cat: "H", what: "escaped PII in free text", cases: []lcase{
			{name: "detect", path: "/detect/escnote", want: oMasked, secrets: append([]string{`zorb.quix\u0040`, `555\u002D0199`}, lcSecrets...)},
		}},
		{id: "PR-I1", cat: "I", what: "expose_if exact true", cases: exposeCases()},
		{id: "PR-I2", cat: "I", what: "redact before scoped_auth: placeholder empty → masked", cases: []lcase{
			{name: "pii-key-wrong-order", path: "/authwrong/doc", hdr: bearer("pii"), want: oMasked},
		}},
		{id: "PR-I3", cat: "I", what: "exposed response and shared caches", cases: cacheCases(bearer)},
		{id: "PR-J1", cat: "J", what: "logs carry no body bytes", cases: []lcase{
			refused("invalid", "/d/invalid"), {name: "abort", path: "/small/invalid-big", want: oAborted},
			refused("non-json", "/d/text"),
		}, unit: "the logs of the whole run are checked by TestLeakCatalogue/PR-J1/logs"},
		{id: "PR-J2", cat: "J", what: "{http.redact.fields} is a count", cases: []lcase{
			{name: "access-log", path: "/d/doc?j2=1", want: oMasked, check: fieldsCountLogged},
		}},
		{id: "PR-J3", cat: "J", what: "fixed-length masks", cases: []lcase{
			{name: "partial-short", path: "/partial/len1", want: oMasked, secrets: []string{"Zorbulon"}, check: exact(`{"email":"a***@hidden-mail.test","name":"Z***"}`)},
			{name: "partial-long", path: "/partial/len2", want: oMasked, secrets: []string{"abcdefghijk", "Zorbulon"}, check: exact(`{"email":"a***@hidden-mail.test","name":"Z***"}`)},
			{name: "mask", path: "/d/len2", want: oMasked, secrets: []string{"abcdefghijk", "Zorbulon"}, check: exact(`{"email":"[REDACTED]","name":"[REDACTED]"}`)},
		}},

		// ---- peers-auth.md §4 G ----
		{id: "PA-G1", cat: "A", what: "encoded upstream ignoring Accept-Encoding removal", cases: []lcase{
			masked("gzip", "/d/gzip"), refused("br", "/d/br"),
		}},
		{id: "PA-G2", cat: "A", what: "Range stripped", cases: rangeCases()},
		{id: "PA-G3", cat: "E", what: `escaped key "em\u0061il"`, cases: escapedCases()},
		{id: "PA-G4", cat: "C", what: "NDJSON line split across reads", cases: []lcase{
			{name: "split", path: "/d/ndjson-split", want: oMasked, check: exact(`{"email":"[REDACTED]"}` + "\n" + `{"name":"[REDACTED]","phone":"[REDACTED]"}` + "\n")},
		}, unit: "every split: internal/jsonmask TestModes, TestSplitInvariance"},
		{id: "PA-G5", cat: "G", what: "invalid JSON under max_buffer → 502", cases: []lcase{refused("invalid", "/d/invalid")}},
		{id: "PA-G6", cat: "I", what: "pii:true key exposes; others masked", cases: []lcase{
			{name: "pii-key", path: "/auth/doc", hdr: bearer("pii"), want: oPassed, secrets: []string{}, has: []string{"zorb.quix@hidden-mail.test"}, check: privateAndVary},
			{name: "plain-key", path: "/auth/doc", hdr: bearer("plain"), want: oMasked},
			{name: "no-key", path: "/auth/doc", want: oDenied},
		}, unit: `"pii":"true" (a string) refuses the keys file: caddyauth TestBadKeysFileStopsProvision`},
		{id: "PA-G7", cat: "B", what: "HEAD/204/304 unchanged", cases: []lcase{
			headCase("head", "/d/doc"),
			{name: "204", path: "/d/204", want: oPassed, status: 204, check: bodiless},
			{name: "304", path: "/d/304", want: oPassed, status: 304, check: bodiless},
		}},
	}
}

func masked(name, path string) lcase  { return lcase{name: name, path: path, want: oMasked} }
func refused(name, path string) lcase { return lcase{name: name, path: path, want: oRefused} }

func encCases() []lcase {
	return []lcase{
		masked("gzip", "/d/gzip"), masked("x-gzip", "/d/x-gzip"), masked("GZIP", "/d/GZIP"),
		masked("deflate", "/d/deflate"), masked("zstd", "/d/zstd"), masked("identity", "/d/identity"),
		refused("br", "/d/br"), refused("compress", "/d/compress"), refused("stacked", "/d/stacked"),
	}
}

func rangeCases() []lcase {
	noRange := func(t *testing.T, r *lres) {
		h := lcSeen("/ranged")
		if h == nil || h.Get("Range") != "" || h.Get("If-Range") != "" || h.Get("Accept-Encoding") != "identity" {
			t.Errorf("%s: upstream saw %v", r.proto, h)
		}
	}
	return []lcase{
		{name: "range", path: "/d/ranged", hdr: []string{"Range", "bytes=0-40", "If-Range", `"unmasked-1"`, "Accept-Encoding", "gzip, br"},
			want: oMasked, status: 200, has: []string{`"department":"Engineering"`, `"count":1}`}, check: noRange},
		{name: "range-file", path: "/files/people.json", hdr: []string{"Range", "bytes=0-40"}, want: oMasked, status: 200, has: []string{`"count":1}`}},
	}
}

func fileCases() []lcase {
	return []lcase{
		{name: "file", path: "/files/people.json", want: oMasked, has: []string{`"first_name":"[REDACTED]"`, `"department":"Engineering"`}},
		headCase("head", "/files/people.json"),
	}
}

func flushCases() []lcase {
	cs := []lcase{
		{name: "ndjson-flush-interval", path: "/flush/ndjson-flush", want: oMasked, check: ndjsonLines(4)},
		{name: "ndjson-default", path: "/d/ndjson-flush", want: oMasked, check: ndjsonLines(4)},
		refused("sse", "/flush/sse"),
	}
	cs = append(cs, lcase{name: "first-line-before-second", path: "/flush/sync", sync: true, want: oMasked,
		has: []string{`"sync":true`, `"email":"[REDACTED]"`, `"name":"[REDACTED]"`}})
	return cs
}

func lengthCases() []lcase {
	return []lcase{
		{name: "buffered", path: "/d/doc", want: oMasked, check: func(t *testing.T, r *lres) {
			if r.header.Get("Content-Length") != fmt.Sprint(len(r.body)) {
				t.Errorf("%s: Content-Length %q for a buffered %d-byte body", r.proto, r.header.Get("Content-Length"), len(r.body))
			}
		}},
		{name: "streamed", path: "/small/big", want: oMasked, check: func(t *testing.T, r *lres) {
			if cl := r.header.Get("Content-Length"); cl == fmt.Sprint(len(lcBig)) {
				t.Errorf("%s: the unmasked Content-Length %s while streaming", r.proto, cl)
			}
		}},
		{name: "short-body", path: "/d/cl-short", want: failClosed},
	}
}

func validatorCases() []lcase {
	return []lcase{
		masked("json", "/d/doc"), masked("gzip", "/d/gzip"), masked("streamed", "/small/big"),
		{name: "encode", path: "/encout/big", hdr: []string{"Accept-Encoding", "gzip"}, want: oMasked},
	}
}

func cacheCases(bearer func(string) []string) []lcase {
	return []lcase{
		{name: "exposed", path: "/expose/doc?expose=true", want: oPassed, secrets: []string{}, has: []string{"zorb.quix@hidden-mail.test"}, check: privateAndVary},
		{name: "masked", path: "/expose/doc", want: oMasked},
		{name: "pii-key", path: "/auth/doc", hdr: bearer("pii"), want: oPassed, secrets: []string{}, has: []string{"zorb.quix@hidden-mail.test"}, check: privateAndVary},
		{name: "plain-key", path: "/auth/doc", hdr: bearer("plain"), want: oMasked},
		{name: "upstream-public", path: "/d/public", want: oMasked},
	}
}

func typeCases() []lcase {
	return append([]lcase{
		masked("vnd-charset", "/d/vnd"),
		{name: "problem", path: "/d/problem", want: oMasked, status: 422},
		masked("no-type-object", "/d/notype-obj"), masked("no-type-array", "/d/notype-arr"),
		{name: "ndjson-split", path: "/d/ndjson-split", want: oMasked, check: ndjsonLines(2)},
	}, framingCases()...)
}

func framingCases() []lcase {
	return []lcase{
		{name: "ndjson-blank-line", path: "/d/ndjson", want: oMasked, check: exact(`{"email":"[REDACTED]"}` + "\n\n" + `{"name":"[REDACTED]"}` + "\n")},
		{name: "jsonl-crlf", path: "/d/jsonl", want: oMasked, check: exact(`{"email":"[REDACTED]"}` + "\r\n" + `{"name":"[REDACTED]"}`)},
		{name: "json-seq", path: "/d/seq", want: oMasked, check: exact("\x1e" + `{"email":"[REDACTED]"}` + "\n\x1e" + `{"name":"[REDACTED]"}` + "\n")},
	}
}

func bodilessCases() []lcase {
	return append([]lcase{
		headCase("head", "/d/doc"),
		{name: "103-then-200", path: "/d/hints", want: oMasked, status: 200},
		{name: "204", path: "/d/204", want: oPassed, status: 204, check: bodiless},
		{name: "304", path: "/d/304", want: oPassed, status: 304, check: bodiless},
	}, upgradeCases()...)
}

func upgradeCases() []lcase {
	return []lcase{
		{name: "websocket", path: "/d/ws", hdr: []string{"Connection", "Upgrade", "Upgrade", "websocket", "Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="},
			protos: []string{"h1"}, naWhy: "HTTP/2 and HTTP/3 have no Upgrade (RFC 9113 §8.2.2, RFC 9114 §4.2)", want: oRefused,
			check: func(t *testing.T, r *lres) {
				if lcSeen("/ws") != nil {
					t.Errorf("the upgrade reached the upstream")
				}
			}},
	}
}

func headCase(name, path string) lcase {
	return lcase{name: name, path: path, method: "HEAD", want: oPassed, status: 200, check: bodiless}
}

// bodiless: HEAD, 204, 304: no body, no Content-Length of the unmasked
// body, and none of its validators or digests.
func bodiless(t *testing.T, r *lres) {
	t.Helper()
	if len(r.body) != 0 {
		t.Errorf("%s: a body was invented: %q", r.proto, r.body)
	}
	if cl := r.header.Get("Content-Length"); cl != "" && cl != "0" {
		t.Errorf("%s: Content-Length %s of the unmasked body", r.proto, cl)
	}
	for _, h := range unmaskedValidators {
		if v := r.header.Get(h); v != "" {
			t.Errorf("%s: %s %q of the unmasked body on a %d", r.proto, h, v, r.status)
		}
	}
}

func noBody(t *testing.T, r *lres) {
	t.Helper()
	if len(r.body) != 0 {
		t.Errorf("%s: a body was invented: %q", r.proto, r.body)
	}
}

func escapedCases() []lcase {
	return []lcase{{name: "escaped", path: "/d/escaped", want: oMasked, check: countMasked(5)}}
}

func spellingCases() []lcase {
	return []lcase{{name: "spellings", path: "/d/spellings", want: oMasked, check: countMasked(17)}}
}

func dupeCases() []lcase {
	return []lcase{{name: "dupes", path: "/d/dupes", want: oMasked, check: exact(`{"email":"[REDACTED]","email":"[REDACTED]","x":{"name":"[REDACTED]","name":"[REDACTED]"}}`)}}
}

func typesCases() []lcase {
	return []lcase{{name: "types", path: "/d/types", want: oMasked, secrets: append([]string{"15550199"}, lcSecrets...),
		check: exact(`{"phone":"[REDACTED]","mobile":"[REDACTED]","name":{"first":"[REDACTED]","last":"[REDACTED]","n":["[REDACTED]","[REDACTED]"]},"names":["[REDACTED]","[REDACTED]"],"email":null,"home_phone":"[REDACTED]","fullname":"[REDACTED]","phones":[{"x":"[REDACTED]"}]}`)}}
}

func invalidCases() []lcase {
	return []lcase{
		refused("framed", "/d/invalid"),
		// Without a Content-Length, reverse_proxy flushes after every read,
		// which ends the buffer phase (SPEC §6): refused or aborted.
		{name: "chunked", path: "/d/invalid-chunked", want: failClosed},
	}
}

func pastBufferCases() []lcase {
	return []lcase{{name: "past-buffer", path: "/small/invalid-big", want: oAborted}}
}

func truncCases() []lcase {
	return []lcase{
		{name: "framed", path: "/d/cl-short", want: failClosed},
		{name: "chunked", path: "/d/trunc-chunked", want: failClosed},
		{name: "past-buffer", path: "/small/cl-short-big", want: oAborted},
	}
}

func hostileCases() []lcase {
	return []lcase{
		refused("deep-100000", "/d/deep"),
		{name: "8MiB-string", path: "/d/longstring", want: oMasked, has: []string{`","email":"[REDACTED]","n":1e400}`}},
		{name: "2.6MB-secret", path: "/d/longsecret", want: oMasked, check: exact(`{"email":"[REDACTED]"}`)},
		masked("next-request", "/d/doc"),
	}
}

func utf8Cases() []lcase {
	return []lcase{
		// jsonmask's decisions (internal/jsonmask/doc.go, SECURITY.md):
		// invalid UTF-8 is invalid JSON (RFC 8259 §8.1) → 502; escaped
		// surrogates, lone or paired, are valid JSON and copied as they
		// are; a leading BOM is accepted and dropped.
		refused("invalid-utf8", "/d/utf8-invalid"),
		{name: "surrogates", path: "/d/utf8-surrogates", want: oMasked,
			check: exact(`{"s":"\ud83d\ude00","lone":"\ud800","rev":"\ude00\ud83d","name":"[REDACTED]","\ud800email":"[REDACTED]","note":"caf\u00e9 ü"}`)},
		{name: "bom-sniffed", path: "/d/notype-bom", want: oMasked, check: func(t *testing.T, r *lres) {
			if bytes.HasPrefix(r.plain, []byte("\xEF\xBB\xBF")) || !bytes.HasPrefix(r.plain, []byte(" \n{")) {
				t.Errorf("%s: the BOM was kept: %.20q", r.proto, r.plain)
			}
		}},
		{name: "bom-typed", path: "/d/json-bom", want: oMasked},
		masked("next-request", "/d/doc"),
	}
}

func numberCases() []lcase {
	return []lcase{{name: "numbers", path: "/d/numbers", want: oMasked,
		check: exact(`{"a":123456789012345678901234567890,"b":-0,"c":1e400,"d":-1.5E-07,"e":9007199254740993,"f":0.1000000000000000055511151231257827,"email":"[REDACTED]"}`)}}
}

func encodeCases() []lcase {
	gz := []string{"Accept-Encoding", "gzip"}
	isGzip := func(t *testing.T, r *lres) {
		if r.header.Get("Content-Encoding") != "gzip" {
			t.Errorf("%s: Content-Encoding %q, want gzip", r.proto, r.header.Get("Content-Encoding"))
		}
	}
	last := []string{lcBigEnd}
	return []lcase{
		{name: "encode-outside", path: "/encout/big", hdr: gz, want: oMasked, has: last, check: isGzip},
		{name: "encode-outside-plain-client", path: "/encout/big", want: oMasked, has: last},
		{name: "encode-inside", path: "/encin/big", hdr: gz, want: oMasked, has: last},
		{name: "encode-twice", path: "/enctwice/big", hdr: gz, want: oMasked, has: last, check: isGzip},
		{name: "encode-missing-upstream-gzip", path: "/d/gzip", hdr: gz, want: oMasked},
	}
}

func exposeCases() []lcase {
	cs := []lcase{
		{name: "true", path: "/expose/doc?expose=true", want: oPassed, secrets: []string{}, has: []string{"zorb.quix@hidden-mail.test"}, check: privateAndVary},
		masked("unknown-placeholder", "/expunknown/doc"),
		masked("absent", "/expose/doc"),
	}
	for _, v := range []string{"True", "TRUE", "1", "%20true", "true%20", "yes", "", "true,true", "%22true%22"} {
		cs = append(cs, masked("expose="+v, "/expose/doc?expose="+v))
	}
	return cs
}

func errorPageCases() []lcase {
	return []lcase{{name: "handle_errors", path: "/err/x", want: oMasked, status: 500, has: []string{`"error":"upstream failure"`, `"email":"[REDACTED]"`}}}
}

func nonJSONCases() []lcase {
	return append([]lcase{
		refused("csv", "/d/csv"), refused("text", "/d/text"), refused("xml", "/d/xml"), refused("206", "/d/206"),
		{name: "csv-in-pass_types", path: "/pass/csv", want: oPassed, secrets: []string{}, has: []string{"zorb.quix@hidden-mail.test"}},
		refused("text-not-in-pass_types", "/pass/text"),
		masked("json-on-pass-route", "/pass/doc"),
		{name: "empty-text", path: "/d/empty-text", want: oPassed, check: noBody},
		{name: "empty-json", path: "/d/empty-json", want: oMasked},
	}, upgradeCases()...)
}

func errorStatusCases() []lcase {
	return []lcase{
		{name: "500", path: "/d/error500", want: oMasked, status: 500},
		{name: "422-problem", path: "/d/problem", want: oMasked, status: 422, has: []string{`"email":"[REDACTED]"`}},
		{name: "400-echo-detect", path: "/detect/error400echo", want: oMasked, status: 400, has: []string{`"field":"email"`}},
		// Without detect, free text is not masked (SPEC §6; SECURITY.md).
		{name: "400-echo-no-detect", path: "/d/error400echo", want: oPassed, status: 400, secrets: []string{}, has: []string{"zorb.quix@hidden-mail.test"}},
	}
}

func trailerCases() []lcase {
	noTrailers := func(t *testing.T, r *lres) {
		for _, h := range []string{"Content-Digest", "Digest", "Repr-Digest", "X-Rows", "X-Debug-Email"} {
			if v := r.trailer.Get(h); v != "" {
				t.Errorf("%s: upstream trailer %s %q forwarded on a masked response", r.proto, h, v)
			}
		}
		if v := r.header.Get("Trailer"); v != "" {
			t.Errorf("%s: upstream trailers announced: %q", r.proto, v)
		}
	}
	return []lcase{
		{name: "digest-trailer", path: "/d/trailers", want: oMasked, check: noTrailers},
		{name: "pii-trailer", path: "/d/trailer-pii", want: oMasked, check: noTrailers},
	}
}

// Checks.

func exact(want string) func(t *testing.T, r *lres) {
	return func(t *testing.T, r *lres) {
		t.Helper()
		if string(r.plain) != want {
			t.Errorf("%s: body\n  %q\nwant\n  %q", r.proto, r.plain, want)
		}
	}
}

func countMasked(n int) func(t *testing.T, r *lres) {
	return func(t *testing.T, r *lres) {
		t.Helper()
		if got := bytes.Count(r.plain, []byte(`"[REDACTED]"`)); got != n {
			t.Errorf("%s: %d values masked, want %d: %.400q", r.proto, got, n, r.plain)
		}
	}
}

// sameAs: the body equals the masked body of another path, fetched on the
// same protocol (one masker, however the input is split or buffered).
func sameAs(path string) func(t *testing.T, r *lres) {
	return func(t *testing.T, r *lres) {
		t.Helper()
		ref := lcDo(t, r.proto, lcase{path: path})
		if ref.err != nil || ref.status != 200 {
			t.Fatalf("%s: reference %s: %d %v", r.proto, path, ref.status, ref.err)
		}
		if !bytes.Equal(r.plain, ref.plain) {
			t.Errorf("%s: %d bytes differ from %s's %d bytes: %.200q vs %.200q", r.proto, len(r.plain), path, len(ref.plain), r.plain, ref.plain)
		}
	}
}

func ndjsonLines(n int) func(t *testing.T, r *lres) {
	return func(t *testing.T, r *lres) {
		t.Helper()
		sc := bufio.NewScanner(bytes.NewReader(r.plain))
		got := 0
		for sc.Scan() {
			if len(bytes.TrimSpace(sc.Bytes())) == 0 {
				continue
			}
			got++
			if !json.Valid(sc.Bytes()) {
				t.Errorf("%s: line %d is not JSON: %q", r.proto, got, sc.Bytes())
			}
		}
		if got != n {
			t.Errorf("%s: %d records, want %d: %q", r.proto, got, n, r.plain)
		}
	}
}

// privateAndVary: an exposed (unmasked) response is one caller's: a
// shared cache must neither store it for others nor serve it to them.
// (Its validators describe the body it carries, so they may stay.)
func privateAndVary(t *testing.T, r *lres) {
	t.Helper()
	if r.header.Get("Cache-Control") != "private" && r.header.Get("Cache-Control") != "private, no-store" {
		t.Errorf("%s: Cache-Control %q, want private", r.proto, r.header.Get("Cache-Control"))
	}
	if !slices.ContainsFunc(r.header.Values("Vary"), func(v string) bool { return strings.Contains(v, "Authorization") }) {
		t.Errorf("%s: Vary %q lacks Authorization", r.proto, r.header.Values("Vary"))
	}
}

var tokRE = regexp.MustCompile(`"(email|contactEmail|phone|home_phone)":"(tok_[0-9a-f]{16})"`)

func hashTokens(t *testing.T, r *lres) {
	t.Helper()
	toks := map[string]string{}
	for _, m := range tokRE.FindAllStringSubmatch(string(r.plain), -1) {
		toks[m[1]] = m[2]
	}
	if len(toks) != 4 || toks["email"] != toks["contactEmail"] || toks["phone"] != toks["home_phone"] || toks["email"] == toks["phone"] {
		t.Errorf("%s: tokens %v from %q", r.proto, toks, r.plain)
	}
}

var fieldsRE = regexp.MustCompile(`"uri":"/d/doc\?j2=1".*"redact_fields":(\d+)[,}]`)

// fieldsCountLogged: the access log line of the request carries
// {http.redact.fields} as a number (it is written after the response, so
// the log is read until the line appears).
func fieldsCountLogged(t *testing.T, r *lres) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(lc.access)
		if m := fieldsRE.FindSubmatch(b); m != nil {
			if string(m[1]) != "4" {
				t.Errorf("redact_fields %s, want 4", m[1])
			}
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("no access log line with redact_fields for /d/doc?j2=1")
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
