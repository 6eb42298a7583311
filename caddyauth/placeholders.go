package caddyauth

import (
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"

	"github.com/scopegate/scopegate/caddyauth/internal/keyring"
)

// emptyAuthPlaceholders answers every http.auth.user.id and http.auth.key.*
// placeholder with "" on public routes and denied requests, so header_up or
// handle_errors never see a literal placeholder or a stale value. A request
// gets either this provider or the one of setAuthPlaceholders, never both
// (the replacer asks providers in order).
func emptyAuthPlaceholders(name string) (any, bool) {
	if name == "http.auth.user.id" || strings.HasPrefix(name, "http.auth.key.") {
		return "", true
	}
	return nil, false
}

// setAuthPlaceholders adds one provider over the cached key for an allowed
// request: the values are boxed once per key (or rule), so a lookup
// allocates nothing. The only allocation is the closure, plus the boxed
// account when a key valid for all accounts names one (a restricted key's
// accounts are boxed with the record).
func setAuthPlaceholders(repl *caddy.Replacer, k *keyring.Key, rule *compiledRule, account string) {
	accountValue := k.AccountValue(account)
	if accountValue == nil {
		accountValue = account
	}
	repl.Map(func(name string) (any, bool) {
		switch name {
		case "http.auth.user.id", "http.auth.key.id":
			return k.IDValue, true
		case "http.auth.key.name":
			return k.NameValue, true
		case "http.auth.key.scopes":
			return k.ScopesValue, true
		case "http.auth.key.account":
			return accountValue, true
		case "http.auth.key.pii":
			return k.PIIValue, true
		case "http.auth.key.permission":
			return rule.permValue, true
		}
		return nil, false
	})
}

func replacerOf(r *http.Request) *caddy.Replacer {
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	return repl
}
