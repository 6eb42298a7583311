package keyring

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Record is a key as stored (SPEC section 2): the same JSON in the keys file
// and in Redis. It never holds a plaintext key.
type Record struct {
	ID                string       `json:"id"`
	Name              string       `json:"name,omitempty"`
	Hash              string       `json:"hash,omitempty"`
	Scopes            []string     `json:"scopes"`
	Accounts          []string     `json:"accounts"`
	PII               bool         `json:"pii"`
	ClientCert        *CertBinding `json:"client_cert,omitempty"`
	NotBefore         *time.Time   `json:"not_before,omitempty"`
	ExpiresAt         *time.Time   `json:"expires_at,omitempty"`
	Disabled          bool         `json:"disabled"`
	PreviousHash      string       `json:"previous_hash,omitempty"`
	PreviousExpiresAt *time.Time   `json:"previous_expires_at,omitempty"`
	Version           int64        `json:"version"`
}

// CertBinding pins a key (or a certificate principal) to the caller's
// verified TLS client certificate. Any listed pin may match; the issuer pin
// only narrows the others.
type CertBinding struct {
	SHA256           []string `json:"sha256,omitempty"`
	SPKISHA256       []string `json:"spki_sha256,omitempty"`
	URI              []string `json:"uri,omitempty"`
	Subject          string   `json:"subject,omitempty"`
	IssuerSPKISHA256 []string `json:"issuer_spki_sha256,omitempty"`
}

// Empty reports whether the binding pins nothing.
func (b *CertBinding) Empty() bool {
	return b == nil || (len(b.SHA256) == 0 && len(b.SPKISHA256) == 0 && len(b.URI) == 0 &&
		b.Subject == "" && len(b.IssuerSPKISHA256) == 0)
}

// IsPrincipal reports whether the record is a certificate principal: no
// secret, identified by its certificate alone.
func (r *Record) IsPrincipal() bool { return r.Hash == "" && !r.ClientCert.Empty() }

// DecodeRecord reads one record strictly: unknown fields are an error (a
// misspelt "acounts" must not silently mean "all accounts"), and so is
// anything after the object.
func DecodeRecord(data []byte) (*Record, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var rec Record
	if err := dec.Decode(&rec); err != nil {
		return nil, fmt.Errorf("decoding key record: %w", err)
	}
	if dec.More() {
		return nil, errors.New("decoding key record: unexpected data after the record")
	}
	return &rec, nil
}

// Warnings lists what is allowed but risky in a record, for caddy validate.
func (r *Record) Warnings() []string {
	var w []string
	if b := r.ClientCert; b != nil && len(b.IssuerSPKISHA256) == 0 {
		if b.Subject != "" {
			w = append(w, "key "+r.ID+": subject binding without issuer_spki_sha256: any trusted CA can issue a certificate with this subject")
		}
		if len(b.URI) > 0 {
			w = append(w, "key "+r.ID+": URI binding without issuer_spki_sha256: any trusted CA can issue a certificate with this URI")
		}
	}
	return w
}

// Compile validates a record and prepares it for the hot path.
func Compile(r *Record) (*Key, error) {
	if !ValidID(r.ID) {
		return nil, fmt.Errorf("key %q: id must be 16 characters of lower-case base32 (a-z, 2-7)", r.ID)
	}
	k := &Key{Record: *r, PIIString: "false"}
	if r.PII {
		k.PIIString = "true"
	}
	fail := func(format string, args ...any) (*Key, error) {
		return nil, fmt.Errorf("key %s: "+format, append([]any{r.ID}, args...)...)
	}
	if r.Hash != "" {
		sum, err := ParseHash(r.Hash)
		if err != nil {
			return fail("%v", err)
		}
		k.hash, k.hasHash = sum, true
	} else if r.ClientCert.Empty() {
		return fail("has neither a hash nor a client_cert binding")
	}
	if r.PreviousHash != "" {
		if r.Hash == "" {
			return fail("previous_hash without hash")
		}
		sum, err := ParseHash(r.PreviousHash)
		if err != nil {
			return fail("previous_hash: %v", err)
		}
		if r.PreviousExpiresAt == nil {
			return fail("previous_hash needs previous_expires_at")
		}
		k.prevHash, k.hasPrev, k.prevExpires = sum, true, *r.PreviousExpiresAt
	}
	for _, s := range r.Scopes {
		sc, err := ParseScope(s)
		if err != nil {
			return fail("%v", err)
		}
		k.scopes = append(k.scopes, sc)
	}
	k.ScopesJoined = strings.Join(r.Scopes, ",")
	switch {
	case r.Accounts == nil || (len(r.Accounts) == 1 && r.Accounts[0] == "*"):
		k.allAccounts = true
	default:
		for _, a := range r.Accounts {
			if a == "" || a == "*" || !CleanValue(a) {
				return fail("account %q: accounts are exact ids without whitespace, commas or control characters (use [\"*\"] alone for all)", a)
			}
		}
		k.accounts = slices.Clone(r.Accounts)
		for _, a := range k.accounts {
			k.accountValues = append(k.accountValues, a)
		}
	}
	if r.ClientCert != nil && !r.ClientCert.Empty() {
		b, err := compileBinding(r.ClientCert)
		if err != nil {
			return fail("client_cert: %v", err)
		}
		k.binding = b
	}
	if r.NotBefore != nil {
		k.notBefore = *r.NotBefore
	}
	if r.ExpiresAt != nil {
		k.expiresAt = *r.ExpiresAt
	}
	k.IDValue, k.NameValue, k.ScopesValue, k.PIIValue = k.ID, k.Name, k.ScopesJoined, k.PIIString
	if r.Version < 0 {
		return fail("version must not be negative")
	}
	return k, nil
}

// CleanValue reports whether s has no whitespace, comma or control
// character: the test for an account in a record and for a key or account
// presented in a request.
func CleanValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if valueBad[s[i]] {
			return false
		}
	}
	return true
}

// valueBad marks the bytes CleanValue refuses: one table load per byte on
// the request path.
var valueBad = func() (t [256]bool) {
	for c := 0; c < 256; c++ {
		t[c] = c <= ' ' || c == ',' || c == 0x7f
	}
	return t
}()
