package caddyauth

import (
	"net/http"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/scopegate/scopegate/caddyauth/internal/keyring"
)

// denial is what the denial log says about a refused request. It never
// holds the key, its hash or any part of the secret: only the public id,
// and only once the key string parsed with a valid checksum.
type denial struct {
	reason  string
	keyID   string
	rule    *compiledRule
	account string
	err     error
	// deniedCert is the fingerprint of the denylisted certificate (the
	// leaf, or a CA of its chain) that refused the request.
	deniedCert string
}

// deny counts, logs and answers a refused request. In shadow mode it only
// counts and logs (at WARN, "request would be denied"), strips what a
// passing request loses, and calls next with empty placeholders.
func (h *ScopedAuth) deny(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, o *outcome, d denial) error {
	if repl := replacerOf(r); repl != nil {
		repl.Map(emptyAuthPlaceholders)
	}
	msg, level := "request denied", zapcore.InfoLevel
	if h.Shadow {
		o.shadowCounter.Inc()
		msg, level = "request would be denied (shadow mode)", zapcore.WarnLevel
	} else {
		o.counter.Inc()
	}
	if c := h.logger.Check(level, msg); c != nil {
		fields := make([]zap.Field, 0, 10)
		fields = append(fields, zap.String("error", o.code), zap.Int("status", o.status))
		if d.reason != "" {
			fields = append(fields, zap.String("reason", d.reason))
		}
		fields = append(fields, zap.String("key_id", d.keyID))
		if d.rule != nil {
			fields = append(fields, zap.String("permission", d.rule.permString), zap.Int("rule", d.rule.index))
		}
		fields = append(fields, zap.String("account", d.account))
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			fields = append(fields,
				zap.String("client_cert_sha256", keyring.HexDigest(keyring.LeafSHA256(r.TLS.PeerCertificates[0]))),
				zap.Bool("client_cert_verified", verifiedChain(r) != nil))
		}
		if d.deniedCert != "" {
			fields = append(fields, zap.String("denied_cert_sha256", d.deniedCert))
		}
		ip, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
		fields = append(fields, zap.String("remote_ip", ip))
		if d.err != nil {
			fields = append(fields, zap.NamedError("store_error", d.err))
		}
		c.Write(fields...)
	}
	if h.Shadow {
		h.stripInbound(r, true)
		return next.ServeHTTP(w, r)
	}
	challenge := ""
	if o == insufficientScope && d.rule != nil {
		challenge = d.rule.challenge
	}
	return o.render(w, r, challenge)
}
