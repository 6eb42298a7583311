package main

import (
	"fmt"
	"net/http"
	"strings"
	"time"
)

// expKind is what a request should get.
type expKind int

const (
	expAllow  expKind = iota // the allow outcome of the plan
	expDeny                  // the deny outcome of the plan
	expEither                // in transition: either, each still checked in full
)

// verifyKind is how an allowed body is checked.
type verifyKind int

const (
	vMasked verifyKind = iota // valid JSON, no PII marker, [REDACTED], every record
	vExact                    // byte-for-byte the upstream's body (unmasked)
	vHealth                   // {"status":"ok"}
	vPost                     // masked, and the request body arrived whole
)

// plan is one request and everything needed to judge its answer: the allow
// outcome (status, body check, the key id the upstream must see), the deny
// outcome (status, error code), and which of them is expected.
type plan struct {
	caseName, class string
	method, path    string // path as sent: raw escapes and query kept
	body            []byte
	hdr             [][2]string
	cert            int
	key             string // sent as Authorization: Bearer <key>; "" = none

	allowStatus int
	verify      verifyKind
	verifyPath  string // key of the upstream body to compare with
	checkKeyID  bool
	keyID       string // X-Key-Id the upstream must see (checkKeyID)

	denyStatus int
	denyCode   string

	// needsStore: the decision needs a store lookup, so on the Redis site
	// during the outage 503 store_unavailable is also accepted.
	needsStore bool
	static     expKind
	resolve    func(start, end time.Time) expKind // dynamic expectation; nil = static
}

func (p *plan) expected(start, end time.Time) expKind {
	if p.resolve != nil {
		return p.resolve(start, end)
	}
	return p.static
}

// loadCase is one row of the load table.
type loadCase struct {
	name, class string
	weight      int
	build       func(w *worker, s *site) *plan // nil plan: no candidate now, use the first case
}

// allowPlan: a GET with key k that should pass and be checked by v against
// the upstream body at vpath.
func allowPlan(s *site, k, path, vpath string, cert int, v verifyKind, account string) *plan {
	p := &plan{method: http.MethodGet, path: path, cert: cert, key: s.keys[k], allowStatus: http.StatusOK,
		verify: v, verifyPath: vpath, checkKeyID: true, keyID: keyID(s.keys[k]), needsStore: true, static: expAllow}
	if account != "" {
		p.hdr = append(p.hdr, [2]string{"X-Account-ID", account})
	}
	return p
}

// denyPlan: a request that must be refused with status and code.
func denyPlan(method, path, key string, cert int, status int, code string, needsStore bool, hdr ...[2]string) *plan {
	return &plan{method: method, path: path, key: key, cert: cert, hdr: hdr,
		denyStatus: status, denyCode: code, needsStore: needsStore, static: expDeny}
}

var bigPaths = []string{"/v1/big/cl", "/v1/big/chunked", "/v1/big/gzip"}

// ambiguous requests: each must get 400 bad_request before anything else
// is looked at (a valid, unrestricted key is sent with each, so a bypass
// would show as an allow).
var ambiguous = []func(p *plan){
	func(p *plan) { p.path = "/v1/gifts/..%2Femployees" },
	func(p *plan) { p.path = "/v1//gifts" },
	func(p *plan) { p.path = "/v1/gifts;jsessionid=1" },
	func(p *plan) { p.path = "/v1/gifts/%2e%2e/employees" },
	func(p *plan) { p.path = "/v1/gifts/../employees" },
	func(p *plan) { p.path = "/v1/gifts/%5Cx" },
	func(p *plan) { p.path = "/v1/gifts?_method=DELETE" },
	func(p *plan) { p.hdr = append(p.hdr, [2]string{"X-HTTP-Method-Override", "POST"}) },
	func(p *plan) { p.hdr = append(p.hdr, [2]string{"X-Original-URL", "/v1/employees"}) },
	func(p *plan) {
		p.hdr = append(p.hdr, [2]string{"X-Account-ID", "acme-us"}, [2]string{"X-Account-ID", "acme-eu"})
	},
	func(p *plan) { p.hdr = append(p.hdr, [2]string{"X-Account-ID", "acme-us,acme-eu"}) },
	func(p *plan) { p.hdr = append(p.hdr, [2]string{"Authorization", "Bearer " + p.key}) }, // the key twice
	func(p *plan) { p.method = "get" },
}

// cases is the load table. Weights are relative; the first case is the
// fallback when a dynamic case has no candidate.
var cases = []loadCase{
	// allowed, masked
	{"gifts_masked", "allow_masked", 10, func(w *worker, s *site) *plan {
		p := allowPlan(s, "ro_us", "/v1/gifts", "/v1/gifts", w.rng.IntN(2)*certAlpha, vMasked, "acme-us")
		p.hdr = append(p.hdr, [2]string{"X-Key-Id", "forged"}) // strip_headers: the upstream sees the real id
		return p
	}},
	{"employees_bound", "allow_masked", 7, func(w *worker, s *site) *plan {
		return allowPlan(s, "bound", "/v1/employees", "/v1/employees", certAlpha, vMasked, "")
	}},
	{"principal", "allow_masked", 4, func(w *worker, s *site) *plan {
		p := allowPlan(s, "principal", "/v1/gifts", "/v1/gifts", certGamma, vMasked, "acme-eu")
		p.key, p.keyID = "", s.keys["principal"]
		return p
	}},
	{"me_masked", "allow_masked", 2, func(w *worker, s *site) *plan {
		return allowPlan(s, "bound", "/v1/me", "/v1/me", certAlpha, vMasked, "")
	}},
	{"post_gift", "allow_masked", 5, func(w *worker, s *site) *plan {
		p := allowPlan(s, "writer", "/v1/gifts", "POST /v1/gifts", w.rng.IntN(2)*certBeta, vPost, "acme-eu")
		p.method, p.allowStatus, p.body = http.MethodPost, http.StatusCreated, w.smallPost
		return p
	}},
	// allowed, unmasked (the key has "pii": true)
	{"gifts_pii", "allow_unmasked", 5, func(w *worker, s *site) *plan {
		return allowPlan(s, "pii", "/v1/gifts", "/v1/gifts", certNone, vExact, "acme-eu")
	}},
	{"employees_pii", "allow_unmasked", 4, func(w *worker, s *site) *plan {
		return allowPlan(s, "pii", "/v1/employees", "/v1/employees", certBeta, vExact, "")
	}},
	// large bodies
	{"big_masked", "large_masked", 3, func(w *worker, s *site) *plan {
		path := bigPaths[w.rng.IntN(len(bigPaths))]
		return allowPlan(s, "bound", path, path, certAlpha, vMasked, "")
	}},
	{"big_pii", "large_unmasked", 2, func(w *worker, s *site) *plan {
		path := bigPaths[w.rng.IntN(len(bigPaths))]
		return allowPlan(s, "pii", path, path, certNone, vExact, "acme-us")
	}},
	{"post_gift_large", "large_masked", 1, func(w *worker, s *site) *plan {
		p := allowPlan(s, "writer", "/v1/gifts", "POST /v1/gifts", certNone, vPost, "acme-us")
		p.method, p.allowStatus, p.body = http.MethodPost, http.StatusCreated, w.largePost
		return p
	}},
	// public: no key needed; a key sent anyway is ignored and stripped
	{"public", "public", 2, func(w *worker, s *site) *plan {
		p := &plan{method: http.MethodGet, path: "/healthz", cert: w.rng.IntN(numCerts), allowStatus: http.StatusOK,
			verify: vHealth, verifyPath: "/healthz", checkKeyID: true, keyID: "", static: expAllow,
			hdr: [][2]string{{"X-Key-Id", "forged"}}}
		if w.rng.IntN(2) == 0 {
			p.key = "not-a-key"
		}
		return p
	}},
	// 401
	{"bad_checksum", "invalid_401", 3, func(w *worker, s *site) *plan {
		return denyPlan(http.MethodGet, "/v1/gifts", badChecksum(s.keys["ro_us"]), certNone, 401, "invalid_key", false,
			[2]string{"X-Account-ID", "acme-us"})
	}},
	{"garbage_key", "invalid_401", 1, func(w *worker, s *site) *plan {
		return denyPlan(http.MethodGet, "/v1/gifts", "sg_nope", certNone, 401, "invalid_key", false)
	}},
	{"unknown_key", "invalid_401", 3, func(w *worker, s *site) *plan {
		return denyPlan(http.MethodGet, "/v1/gifts", keyWithSecret(w.rng, randomID(w.rng)), certNone, 401, "invalid_key", true,
			[2]string{"X-Account-ID", "acme-us"})
	}},
	{"wrong_secret", "invalid_401", 3, func(w *worker, s *site) *plan {
		return denyPlan(http.MethodGet, "/v1/gifts", keyWithSecret(w.rng, keyID(s.keys["pii"])), certNone, 401, "invalid_key", true)
	}},
	{"revoked", "invalid_401", 3, func(w *worker, s *site) *plan {
		return denyPlan(http.MethodGet, "/v1/gifts", s.keys["revoked"], certNone, 401, "invalid_key", true)
	}},
	{"missing_key", "invalid_401", 2, func(w *worker, s *site) *plan {
		// With the alpha certificate the gateway looks for a certificate
		// principal (there is none for alpha): a store lookup.
		cert := w.rng.IntN(2) * certAlpha
		return denyPlan(http.MethodGet, "/v1/gifts", "", cert, 401, "missing_key", cert != certNone)
	}},
	// 403
	{"wrong_scope", "forbidden_403", 3, func(w *worker, s *site) *plan {
		p := denyPlan(http.MethodPost, "/v1/gifts", s.keys["ro_us"], certNone, 403, "insufficient_scope", true,
			[2]string{"X-Account-ID", "acme-us"})
		p.body = w.smallPost
		return p
	}},
	{"wrong_account", "forbidden_403", 3, func(w *worker, s *site) *plan {
		return denyPlan(http.MethodGet, "/v1/gifts", s.keys["ro_us"], certNone, 403, "account_forbidden", true,
			[2]string{"X-Account-ID", "acme-eu"})
	}},
	{"no_account", "forbidden_403", 1, func(w *worker, s *site) *plan {
		return denyPlan(http.MethodGet, "/v1/me", s.keys["ro_us"], certNone, 403, "account_forbidden", true)
	}},
	{"cert_mismatch", "forbidden_403", 3, func(w *worker, s *site) *plan {
		return denyPlan(http.MethodGet, "/v1/employees", s.keys["bound"], certBeta, 403, "client_certificate_mismatch", true)
	}},
	{"cert_missing", "forbidden_403", 2, func(w *worker, s *site) *plan {
		return denyPlan(http.MethodGet, "/v1/employees", s.keys["bound"], certNone, 403, "client_certificate_required", true)
	}},
	{"principal_scope", "forbidden_403", 1, func(w *worker, s *site) *plan {
		p := denyPlan(http.MethodPost, "/v1/gifts", "", certGamma, 403, "insufficient_scope", true)
		p.body = w.smallPost
		return p
	}},
	{"no_rule", "forbidden_403", 2, func(w *worker, s *site) *plan {
		return denyPlan(http.MethodGet, "/v2/gifts", s.keys["pii"], certNone, 403, "no_matching_rule", false)
	}},
	// 400
	{"ambiguous", "ambiguous_400", 4, func(w *worker, s *site) *plan {
		p := denyPlan(http.MethodGet, "/v1/gifts", s.keys["pii"], certNone, 400, "bad_request", false)
		ambiguous[w.rng.IntN(len(ambiguous))](p)
		return p
	}},
	// the rule that config generation 2 adds
	{"extra_rule", "extra_rule", 2, func(w *worker, s *site) *plan {
		p := allowPlan(s, "ro_us", "/v1/extra/gifts", "/v1/extra/gifts", certNone, vMasked, "acme-us")
		p.denyStatus, p.denyCode = 403, "no_matching_rule"
		p.resolve = w.e.ruleExpected
		return p
	}},
	// keys made, revoked and rotated during the run
	{"churn_active", "churn_active", 6, func(w *worker, s *site) *plan { return w.churnPlan(s, pickActive) }},
	{"churn_revoked", "churn_revoked", 3, func(w *worker, s *site) *plan { return w.churnPlan(s, pickRevoked) }},
	{"churn_transition", "churn_transition", 2, func(w *worker, s *site) *plan { return w.churnPlan(s, pickTransition) }},
}

func caseByName(name string) *loadCase {
	for i := range cases {
		if cases[i].name == name {
			return &cases[i]
		}
	}
	panic("no case " + name)
}

// churnPlan: GET /v1/gifts for acme-us with a churned key: churn keys are
// read_only for acme-us, some with --pii.
func (w *worker) churnPlan(s *site, mode pickMode) *plan {
	k := s.churn.pick(w.rng, mode, time.Now(), s.settle)
	if k == nil {
		return nil
	}
	v, vpath := vMasked, "/v1/gifts"
	if k.pii {
		v = vExact
	}
	p := &plan{method: http.MethodGet, path: "/v1/gifts", key: k.key, cert: certNone,
		hdr:         [][2]string{{"X-Account-ID", "acme-us"}},
		allowStatus: http.StatusOK, verify: v, verifyPath: vpath, checkKeyID: true, keyID: k.id,
		denyStatus: 401, denyCode: "invalid_key", needsStore: true}
	p.resolve = func(start, end time.Time) expKind { return s.churn.expectAt(k, start, end, s.settle) }
	return p
}

func (p *plan) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s cert=%s", p.method, p.path, certNames[p.cert])
	if p.key != "" {
		fmt.Fprintf(&b, " key=%s…", p.key[:min(len(p.key), 8)])
	}
	return b.String()
}
