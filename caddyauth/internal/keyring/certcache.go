package keyring

import (
	"crypto/sha256"
	"crypto/x509"
	"sync/atomic"
	"unsafe"
)

// A TLS connection's peer certificates are parsed once per connection, so
// every request on a keep-alive connection presents the same
// *x509.Certificate. Remembering its digests by pointer saves hashing the
// certificate's DER on every request. The table is fixed-size and
// lock-free: a slot holds the most recent certificate that hashed to it.
const certCacheSlots = 1024

type certDigests struct {
	cert       *x509.Certificate
	leaf, spki [32]byte
}

var certCache [certCacheSlots]atomic.Pointer[certDigests]

// digestsOf returns the leaf and SPKI SHA-256 of c, computed at most once
// per certificate while it stays in the table.
func digestsOf(c *x509.Certificate) *certDigests {
	p := uintptr(unsafe.Pointer(c))
	slot := &certCache[(p>>4^p>>14)%certCacheSlots]
	if d := slot.Load(); d != nil && d.cert == c {
		return d
	}
	d := &certDigests{cert: c, leaf: sha256.Sum256(c.Raw), spki: sha256.Sum256(c.RawSubjectPublicKeyInfo)}
	slot.Store(d)
	return d
}
