package keyring

import (
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net/url"
	"slices"
)

// Binding is a compiled CertBinding.
type Binding struct {
	leaf, spki, issuer [][32]byte
	uris               []string
	subject            string
}

// Pin types, as used in principal indexes and Redis keys
// (scopegate:cert:<pin-type>:<value>).
const (
	PinSHA256  = "sha256"
	PinSPKI    = "spki_sha256"
	PinURI     = "uri"
	PinSubject = "subject"
)

func compileBinding(c *CertBinding) (*Binding, error) {
	b := &Binding{subject: c.Subject}
	var err error
	if b.leaf, err = parseDigests("sha256", c.SHA256); err != nil {
		return nil, err
	}
	if b.spki, err = parseDigests("spki_sha256", c.SPKISHA256); err != nil {
		return nil, err
	}
	if b.issuer, err = parseDigests("issuer_spki_sha256", c.IssuerSPKISHA256); err != nil {
		return nil, err
	}
	for _, u := range c.URI {
		parsed, perr := url.Parse(u)
		if perr != nil || parsed.Scheme == "" || parsed.String() != u {
			return nil, fmt.Errorf("uri %q: want an absolute URI written as Go prints it (e.g. spiffe://trust.domain/path)", u)
		}
		b.uris = append(b.uris, u)
	}
	if len(b.leaf) == 0 && len(b.spki) == 0 && len(b.uris) == 0 && b.subject == "" {
		return nil, fmt.Errorf("issuer_spki_sha256 never binds on its own: add sha256, spki_sha256, uri or subject")
	}
	return b, nil
}

func parseDigests(field string, in []string) ([][32]byte, error) {
	out := make([][32]byte, 0, len(in))
	for _, s := range in {
		var d [32]byte
		if len(s) != 64 || !isLowerHex(s) {
			return nil, fmt.Errorf("%s %q: want 64 lower-case hex digits (SHA-256)", field, s)
		}
		if _, err := hex.Decode(d[:], []byte(s)); err != nil {
			return nil, fmt.Errorf("%s %q: %v", field, s, err)
		}
		out = append(out, d)
	}
	return out, nil
}

// LeafSHA256 is the pin of a certificate's DER, as Caddy's
// {http.request.tls.client.fingerprint} (lower-case hex).
func LeafSHA256(c *x509.Certificate) [32]byte { return digestsOf(c).leaf }

// SPKISHA256 is the RFC 7469 pin: SHA-256 of the SubjectPublicKeyInfo.
func SPKISHA256(c *x509.Certificate) [32]byte { return digestsOf(c).spki }

// HexDigest renders a digest as the lower-case hex used in records.
func HexDigest(d [32]byte) string { return hex.EncodeToString(d[:]) }

// Matches reports whether a verified chain (leaf first, as in
// tls.ConnectionState.VerifiedChains[0]) satisfies the binding.
func (b *Binding) Matches(chain []*x509.Certificate) bool {
	if b == nil || len(chain) == 0 {
		return false
	}
	leaf := chain[0]
	if len(b.issuer) > 0 {
		if len(chain) < 2 || !slices.Contains(b.issuer, SPKISHA256(chain[1])) {
			return false
		}
	}
	if len(b.leaf) > 0 && slices.Contains(b.leaf, LeafSHA256(leaf)) {
		return true
	}
	if len(b.spki) > 0 && slices.Contains(b.spki, SPKISHA256(leaf)) {
		return true
	}
	// A certificate with several URI SANs never matches a URI binding
	// (SPIFFE X509-SVID: exactly one URI SAN).
	if len(b.uris) > 0 && len(leaf.URIs) == 1 {
		u := leaf.URIs[0].String()
		for _, want := range b.uris {
			if u == want {
				return true
			}
		}
	}
	if b.subject != "" && leaf.Subject.String() == b.subject {
		return true
	}
	return false
}

// PrincipalPins lists the index entries under which a principal matching
// this leaf could be filed, strongest pin first.
func PrincipalPins(leaf *x509.Certificate) [][2]string {
	pins := [][2]string{
		{PinSHA256, HexDigest(LeafSHA256(leaf))},
		{PinSPKI, HexDigest(SPKISHA256(leaf))},
	}
	if len(leaf.URIs) == 1 {
		pins = append(pins, [2]string{PinURI, leaf.URIs[0].String()})
	}
	if s := leaf.Subject.String(); s != "" {
		pins = append(pins, [2]string{PinSubject, s})
	}
	return pins
}

// indexPins lists the index entries a principal record is filed under.
func (b *Binding) indexPins() [][2]string {
	var pins [][2]string
	for _, d := range b.leaf {
		pins = append(pins, [2]string{PinSHA256, HexDigest(d)})
	}
	for _, d := range b.spki {
		pins = append(pins, [2]string{PinSPKI, HexDigest(d)})
	}
	for _, u := range b.uris {
		pins = append(pins, [2]string{PinURI, u})
	}
	if b.subject != "" {
		pins = append(pins, [2]string{PinSubject, b.subject})
	}
	return pins
}

// IndexPins lists the index entries a principal record is filed under.
func (k *Key) IndexPins() [][2]string {
	if k.binding == nil {
		return nil
	}
	return k.binding.indexPins()
}

// PinKey joins a pin into one map key.
func PinKey(pin [2]string) string { return pin[0] + ":" + pin[1] }
