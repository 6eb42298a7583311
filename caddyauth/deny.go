package caddyauth

import (
	"errors"
	"net/http"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
)

// outcome is one row of the SPEC's outcome table, prepared once: status,
// error code, challenge, the error value handed to handle_errors, and the
// JSON body written when there are no error routes.
type outcome struct {
	status    int
	code      string
	challenge string
	err       error
	body      []byte
	counter   prometheus.Counter
	// shadowCounter counts the same outcome when shadow mode let the
	// request through (result="shadow_<code>").
	shadowCounter prometheus.Counter
}

const (
	challengeMissing = `Bearer realm="scoped_auth"`
	challengeInvalid = `Bearer realm="scoped_auth", error="invalid_token"`
)

func newOutcome(status int, code, challenge string) *outcome {
	return &outcome{
		status:    status,
		code:      code,
		challenge: challenge,
		err:       errors.New(code),
		body:      []byte(`{"error":"` + code + `"}`),
	}
}

// The denials. Unknown key, wrong secret, expired, not yet valid and
// disabled all share invalidKey, so a client cannot tell them apart.
var (
	missingKey        = newOutcome(http.StatusUnauthorized, "missing_key", challengeMissing)
	invalidKey        = newOutcome(http.StatusUnauthorized, "invalid_key", challengeInvalid)
	certRequired      = newOutcome(http.StatusForbidden, "client_certificate_required", "")
	certMismatch      = newOutcome(http.StatusForbidden, "client_certificate_mismatch", "")
	certRevoked       = newOutcome(http.StatusForbidden, "client_certificate_revoked", "") // on the denylist
	insufficientScope = newOutcome(http.StatusForbidden, "insufficient_scope", "")         // challenge is per rule
	accountForbidden  = newOutcome(http.StatusForbidden, "account_forbidden", "")
	noMatchingRule    = newOutcome(http.StatusForbidden, "no_matching_rule", "")
	badRequest        = newOutcome(http.StatusBadRequest, "bad_request", "")
	tooEarly          = newOutcome(http.StatusTooEarly, "too_early", "")
	storeUnavailable  = newOutcome(http.StatusServiceUnavailable, "store_unavailable", "")
	allOutcomes       = []*outcome{missingKey, invalidKey, certRequired, certMismatch, insufficientScope, accountForbidden, noMatchingRule, badRequest, tooEarly, storeUnavailable, certRevoked}
	allowedCounter    prometheus.Counter
	publicCounter     prometheus.Counter
)

// bindCounters resolves the per-result counters once, so counting a request
// is one atomic add. Called from initMetrics.
func bindCounters() {
	for _, o := range allOutcomes {
		o.counter = authRequestsTotal.WithLabelValues(o.code)
		o.shadowCounter = authRequestsTotal.WithLabelValues("shadow_" + o.code)
	}
	allowedCounter = authRequestsTotal.WithLabelValues("allowed")
	publicCounter = authRequestsTotal.WithLabelValues("public")
}

// render answers a denial. With handle_errors routes on the server it
// returns a caddyhttp.Error whose message is the code, so {err.status_code}
// and {err.message} work there; otherwise it writes the JSON body itself.
// The challenge header goes on w either way and survives into handle_errors.
func (o *outcome) render(w http.ResponseWriter, r *http.Request, challenge string) error {
	if challenge == "" {
		challenge = o.challenge
	}
	if challenge != "" {
		w.Header().Set("Www-Authenticate", challenge)
	}
	if srv, ok := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); ok && srv != nil && srv.Errors != nil && len(srv.Errors.Routes) > 0 {
		return caddyhttp.Error(o.status, o.err)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(o.status)
	_, _ = w.Write(o.body)
	return nil
}
