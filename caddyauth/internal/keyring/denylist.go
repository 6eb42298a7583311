package keyring

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"
	"unsafe"
)

// DeniedCert is one entry of the client-certificate denylist, as stored in
// the keys file ("denied_certs") and in Redis (a field of
// RedisDenylistKey). It names a certificate either by the SHA-256 of its
// DER (leaf or CA: denying a CA's fingerprint cuts off everything it
// issued), or by its issuer's DN and serial number, as a CRL does.
type DeniedCert struct {
	// SHA256 is the lower-case hex SHA-256 of the certificate's DER, as
	// Caddy's {http.request.tls.client.fingerprint}.
	SHA256 string `json:"sha256,omitempty"`
	// Issuer is the issuer DN as Go's pkix.Name.String() writes it
	// ({http.request.tls.client.issuer}); only with Serial.
	Issuer string `json:"issuer,omitempty"`
	// Serial is the serial number in lower-case hex without leading zeros
	// (math/big's Text(16)); only with Issuer.
	Serial string `json:"serial,omitempty"`
	// Reason is free text for the operator.
	Reason string `json:"reason,omitempty"`
	// AddedAt is when the entry was added.
	AddedAt *time.Time `json:"added_at,omitempty"`
}

// The two kinds of denylist entry ids (DeniedCert.ID).
const (
	denyIDSHA256 = "sha256:"
	denyIDSerial = "serial:"
)

// serialKey identifies a certificate by issuer and serial number: the
// SHA-256 of the issuer DN string (so that the Redis field, which holds
// that digest rather than the DN, is enough to rebuild the key) and the
// serial in canonical hex.
type serialKey struct {
	issuer [32]byte
	serial string
}

// CheckDN refuses DN strings that Go's pkix.Name.String() never produces,
// so that an entry or a binding written in another form (OpenSSL's
// /C=…/CN=…, spaces after commas) fails loudly instead of never matching.
func CheckDN(dn string) error {
	const hint = "write it exactly as Go's pkix.Name.String() does (as Caddy's {http.request.tls.client.subject} and .issuer show it), e.g. CN=Acme Client CA,O=Acme"
	switch {
	case dn == "":
		return errors.New("empty DN")
	case !utf8.ValidString(dn), strings.ContainsFunc(dn, func(r rune) bool { return r < ' ' || r == 0x7f }):
		return errors.New("control characters and invalid UTF-8 are not allowed in a DN")
	case strings.HasPrefix(dn, "/"):
		return fmt.Errorf("%q looks like OpenSSL's /C=…/CN=… form: %s", dn, hint)
	case !strings.Contains(dn, "="), strings.TrimSpace(dn) != dn:
		return fmt.Errorf("%q: %s", dn, hint)
	}
	escaped := false
	for i := 0; i < len(dn); i++ {
		switch {
		case escaped:
			escaped = false
		case dn[i] == '\\':
			escaped = true
		case (dn[i] == ',' || dn[i] == '+') && i+1 < len(dn) && dn[i+1] == ' ':
			return fmt.Errorf("%q has a space after a separator: %s", dn, hint)
		}
	}
	return nil
}

// CanonicalSerial renders a certificate serial number as entries hold it.
// Negative serials (which Go's parser refuses by default) have no
// canonical form.
func CanonicalSerial(n *big.Int) (string, bool) {
	if n == nil || n.Sign() < 0 {
		return "", false
	}
	return n.Text(16), true
}

func validSerial(s string) bool {
	if s == "" || (len(s) > 1 && s[0] == '0') {
		return false
	}
	return isLowerHex(s)
}

// Check validates an entry: exactly one of sha256 and issuer+serial, in
// canonical form, and a reason without control characters.
func (e *DeniedCert) Check() error {
	switch {
	case e.SHA256 != "" && (e.Issuer != "" || e.Serial != ""):
		return errors.New("give either sha256 or issuer and serial, not both")
	case e.SHA256 != "":
		if len(e.SHA256) != 64 || !isLowerHex(e.SHA256) {
			return fmt.Errorf("sha256 %q: want 64 lower-case hex digits (SHA-256 of the certificate's DER)", e.SHA256)
		}
	case e.Issuer != "" || e.Serial != "":
		if e.Issuer == "" || e.Serial == "" {
			return errors.New("issuer and serial go together")
		}
		if err := CheckDN(e.Issuer); err != nil {
			return fmt.Errorf("issuer: %w", err)
		}
		if !validSerial(e.Serial) {
			return fmt.Errorf("serial %q: want lower-case hex without leading zeros", e.Serial)
		}
	default:
		return errors.New("names no certificate: give sha256, or issuer and serial")
	}
	if !utf8.ValidString(e.Reason) || strings.ContainsFunc(e.Reason, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return errors.New("reason: control characters and invalid UTF-8 are not allowed")
	}
	return nil
}

// ID is the entry's canonical id: "sha256:<hex>" or
// "serial:<hex SHA-256 of the issuer DN>:<serial>". Two entries with the
// same id deny the same certificates; in Redis it is the field name.
// Only meaningful for an entry that passed Check.
func (e *DeniedCert) ID() string {
	if e.SHA256 != "" {
		return denyIDSHA256 + e.SHA256
	}
	return denyIDSerial + IssuerDigest(e.Issuer) + ":" + e.Serial
}

// IssuerDigest is the lower-case hex SHA-256 of an issuer DN string, as in
// serial entry ids.
func IssuerDigest(dn string) string {
	sum := sha256.Sum256([]byte(dn))
	return hex.EncodeToString(sum[:])
}

// DecodeDeniedCert reads one entry strictly (unknown fields and trailing
// data are errors) and checks it.
func DecodeDeniedCert(data []byte) (*DeniedCert, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var e DeniedCert
	if err := dec.Decode(&e); err != nil {
		return nil, fmt.Errorf("decoding denylist entry: %w", err)
	}
	if dec.More() {
		return nil, errors.New("decoding denylist entry: unexpected data after the entry")
	}
	if err := e.Check(); err != nil {
		return nil, err
	}
	return &e, nil
}

// matcher is what an entry id compiles to.
type matcher struct {
	bySHA256 bool
	sha      [32]byte
	serial   serialKey
}

// parseDenyID compiles an entry id (a Redis field name).
func parseDenyID(id string) (matcher, error) {
	switch {
	case strings.HasPrefix(id, denyIDSHA256):
		h := id[len(denyIDSHA256):]
		if len(h) != 64 || !isLowerHex(h) {
			break
		}
		var m matcher
		m.bySHA256 = true
		_, _ = hex.Decode(m.sha[:], []byte(h))
		return m, nil
	case strings.HasPrefix(id, denyIDSerial):
		rest := id[len(denyIDSerial):]
		issuer, serial, ok := strings.Cut(rest, ":")
		if !ok || len(issuer) != 64 || !isLowerHex(issuer) || !validSerial(serial) {
			break
		}
		var m matcher
		_, _ = hex.Decode(m.serial.issuer[:], []byte(issuer))
		m.serial.serial = serial
		return m, nil
	}
	return matcher{}, fmt.Errorf("%q is not a denylist entry id (sha256:<hex> or serial:<issuer sha256>:<serial>)", id)
}

// Denylist is an immutable, indexed set of denied certificates. The zero
// of a *Denylist (nil) denies nothing.
type Denylist struct {
	entries  []*DeniedCert
	bySHA256 map[[32]byte]struct{}
	bySerial map[serialKey]struct{}
	// Version is the store's denylist version (Redis; 0 for a keys file).
	Version int64
}

// NewDenylist compiles entries (checked, no duplicates). The error names
// the entry by its index.
func NewDenylist(entries []*DeniedCert) (*Denylist, error) {
	d := &Denylist{bySHA256: map[[32]byte]struct{}{}, bySerial: map[serialKey]struct{}{}}
	seen := make(map[string]bool, len(entries))
	for i, e := range entries {
		if e == nil {
			return nil, fmt.Errorf("denied_certs[%d]: null is not an entry", i)
		}
		if err := e.Check(); err != nil {
			return nil, fmt.Errorf("denied_certs[%d]: %w", i, err)
		}
		id := e.ID()
		if seen[id] {
			return nil, fmt.Errorf("denied_certs[%d]: duplicate entry %s", i, id)
		}
		seen[id] = true
		m, err := parseDenyID(id)
		if err != nil {
			return nil, fmt.Errorf("denied_certs[%d]: %w", i, err)
		}
		d.add(m)
		d.entries = append(d.entries, e)
	}
	return d, nil
}

func (d *Denylist) add(m matcher) {
	if m.bySHA256 {
		d.bySHA256[m.sha] = struct{}{}
	} else {
		d.bySerial[m.serial] = struct{}{}
	}
}

// Len is the number of entries.
func (d *Denylist) Len() int {
	if d == nil {
		return 0
	}
	return len(d.bySHA256) + len(d.bySerial)
}

// Entries returns the entries (not to be modified).
func (d *Denylist) Entries() []*DeniedCert {
	if d == nil {
		return nil
	}
	return d.entries
}

// Denied returns the first certificate of the verified chains (every
// certificate of every chain: leaf, intermediates and root) that an entry
// names, or nil. It allocates nothing, and does nothing for an empty list.
func (d *Denylist) Denied(chains [][]*x509.Certificate) *x509.Certificate {
	if d == nil || (len(d.bySHA256) == 0 && len(d.bySerial) == 0) {
		return nil
	}
	for _, chain := range chains {
		for _, c := range chain {
			if c == nil {
				continue
			}
			if len(d.bySHA256) > 0 {
				if _, ok := d.bySHA256[digestsOf(c).leaf]; ok {
					return c
				}
			}
			if len(d.bySerial) > 0 {
				if k := serialOf(c); k != nil {
					if _, ok := d.bySerial[*k]; ok {
						return c
					}
				}
			}
		}
	}
	return nil
}

// emptyDenylist denies nothing; it is what a keys file without entries has.
var emptyDenylist = &Denylist{}

// DenylistSource is a store that also holds the client-certificate
// denylist (every store of this package).
type DenylistSource interface {
	// Denylist returns the denylist in force. nil means it has never been
	// loaded (the Redis store before its first successful read): a request
	// with a verified certificate must then be refused, since the
	// certificate may be on it.
	Denylist() *Denylist
}

// The issuer+serial key of a certificate is cached by pointer like its
// digests (certcache.go): computing it allocates (Issuer.String,
// SerialNumber.Text), a lookup in the table does not.
type certSerial struct {
	cert *x509.Certificate
	key  *serialKey // nil: no canonical serial
}

var serialCache [certCacheSlots]atomic.Pointer[certSerial]

func serialOf(c *x509.Certificate) *serialKey {
	p := uintptr(unsafe.Pointer(c))
	slot := &serialCache[(p>>4^p>>14)%certCacheSlots]
	if s := slot.Load(); s != nil && s.cert == c {
		return s.key
	}
	s := &certSerial{cert: c}
	if serial, ok := CanonicalSerial(c.SerialNumber); ok {
		s.key = &serialKey{issuer: sha256.Sum256([]byte(c.Issuer.String())), serial: serial}
	}
	slot.Store(s)
	return s.key
}

// storedDenylist compiles what Redis holds (field = entry id, value =
// entry JSON). The field decides what is denied, so an entry whose value
// is unreadable or disagrees with its field still denies what its field
// names (fail closed); such entries are returned as problems. A field that
// is not an entry id names nothing and is a problem too.
func storedDenylist(fields map[string]string, version int64) (*Denylist, []error) {
	d := &Denylist{bySHA256: map[[32]byte]struct{}{}, bySerial: map[serialKey]struct{}{}, Version: version}
	var problems []error
	for _, id := range slices.Sorted(maps.Keys(fields)) {
		m, err := parseDenyID(id)
		if err != nil {
			problems = append(problems, fmt.Errorf("%s field %w; ignored", RedisDenylistKey, err))
			continue
		}
		d.add(m)
		e, err := DecodeDeniedCert([]byte(fields[id]))
		switch {
		case err != nil:
			problems = append(problems, fmt.Errorf("%s field %s: %w; denied by its field alone", RedisDenylistKey, id, err))
		case e.ID() != id:
			// Both are denied: the field and what the value names.
			problems = append(problems, fmt.Errorf("%s field %s: the entry's id is %s; both are denied", RedisDenylistKey, id, e.ID()))
			if m2, err := parseDenyID(e.ID()); err == nil {
				d.add(m2)
			}
		default:
			d.entries = append(d.entries, e)
		}
	}
	return d, problems
}
