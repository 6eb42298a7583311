package keyring

import (
	"crypto/subtle"
	"slices"
	"time"
)

// Key is a validated record prepared for the request path: parsed hashes,
// scopes and pins, and the placeholder strings built once, so checking a
// request against it allocates nothing.
type Key struct {
	Record

	// ScopesJoined is the scopes comma-joined, as stored ({http.auth.key.scopes}).
	ScopesJoined string
	// PIIString is "true" or "false" ({http.auth.key.pii}).
	PIIString string
	// Boxed placeholder values, made once per record so that placeholder
	// lookups on the request path do not allocate.
	IDValue, NameValue, ScopesValue, PIIValue any

	hash, prevHash   [32]byte
	hasHash, hasPrev bool
	prevExpires      time.Time
	scopes           []Scope
	allAccounts      bool
	accounts         []string
	accountValues    []any // accounts, boxed once for the account placeholder
	binding          *Binding
	notBefore        time.Time
	expiresAt        time.Time
}

// CheckSecret compares the digest of a presented key with the current
// secret and, during a rotation's grace period, the previous one. Both
// comparisons always run, in constant time.
func (k *Key) CheckSecret(sum *[32]byte, now time.Time) (ok, previous bool) {
	cur := subtle.ConstantTimeCompare(sum[:], k.hash[:]) & boolInt(k.hasHash)
	prev := subtle.ConstantTimeCompare(sum[:], k.prevHash[:]) & boolInt(k.hasPrev && now.Before(k.prevExpires))
	return cur|prev == 1, cur == 0 && prev == 1
}

// NeedsClock reports whether checking this key depends on the time (a
// validity window or a rotation grace period): if not, the caller can skip
// reading the clock.
func (k *Key) NeedsClock() bool {
	return k.hasPrev || !k.notBefore.IsZero() || !k.expiresAt.IsZero()
}

// ValidAt reports whether the key is enabled and inside its validity window.
func (k *Key) ValidAt(now time.Time) bool {
	if k.Disabled {
		return false
	}
	if !k.notBefore.IsZero() && now.Before(k.notBefore) {
		return false
	}
	if !k.expiresAt.IsZero() && !now.Before(k.expiresAt) {
		return false
	}
	return true
}

// Grants reports whether any of the key's scopes covers the permission.
func (k *Key) Grants(p Scope) bool {
	for _, s := range k.scopes {
		if s.Grants(p) {
			return true
		}
	}
	return false
}

// AllAccounts reports whether the key may act on every account.
func (k *Key) AllAccounts() bool { return k.allAccounts }

// AllowsAccount reports whether the key may act on the named account (exact,
// case-sensitive). An empty name is allowed only for unrestricted keys.
func (k *Key) AllowsAccount(account string) bool {
	if k.allAccounts {
		return true
	}
	return account != "" && slices.Contains(k.accounts, account)
}

// AccountValue returns the listed account equal to account, boxed once per
// record, or nil when the key does not list it (an unrestricted key).
func (k *Key) AccountValue(account string) any {
	for i, a := range k.accounts {
		if a == account {
			return k.accountValues[i]
		}
	}
	return nil
}

// Binding returns the key's certificate binding, or nil when it has none.
func (k *Key) Binding() *Binding { return k.binding }

// IsPrincipal reports whether the key is a certificate principal (no secret).
func (k *Key) IsPrincipal() bool { return !k.hasHash }

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
