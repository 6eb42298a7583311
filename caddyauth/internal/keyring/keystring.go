// Package keyring holds what scoped_auth knows about API keys: the key string
// format, the key record, its compiled form used on the hot path, and the
// stores that hold records (the keys file; Redis in a later file).
package keyring

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"math/big"
	"unsafe"
)

// Key string layout (SPEC section 2): sg_<id>_<secret><check>.
const (
	keyPrefix   = "sg_"
	IDLen       = 16 // lower-case RFC 4648 base32
	secretLen   = 43 // base62, 43*log2(62) ≈ 256.1 bits
	checkLen    = 6  // CRC-32 (IEEE) of everything before it, base62
	KeyLen      = len(keyPrefix) + IDLen + 1 + secretLen + checkLen
	idStart     = len(keyPrefix)
	secretStart = idStart + IDLen + 1
	checkStart  = secretStart + secretLen
)

const (
	base32Alphabet = "abcdefghijklmnopqrstuvwxyz234567"
	base62Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

// ParseKey checks the shape and checksum of a presented key string and
// returns its public id. It does not allocate (the id is a substring), so a
// flood of malformed keys is rejected before any store is asked.
func ParseKey(s string) (id string, ok bool) {
	if len(s) != KeyLen || s[:idStart] != keyPrefix || s[secretStart-1] != '_' {
		return "", false
	}
	for i := idStart; i < secretStart-1; i++ {
		if !isBase32(s[i]) {
			return "", false
		}
	}
	for i := secretStart; i < KeyLen; i++ {
		if !isBase62(s[i]) {
			return "", false
		}
	}
	var want [checkLen]byte
	encodeCheck(&want, crc32.ChecksumIEEE(bytesOf(s[:checkStart])))
	if string(want[:]) != s[checkStart:] {
		return "", false
	}
	return s[idStart : secretStart-1], true
}

// ValidID reports whether id has the shape of a key id.
func ValidID(id string) bool {
	if len(id) != IDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if !isBase32(id[i]) {
			return false
		}
	}
	return true
}

// NewID returns a random key id.
func NewID() (string, error) {
	var raw [IDLen]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	for i := range raw {
		raw[i] = base32Alphabet[raw[i]&31] // 256 is a multiple of 32: no bias
	}
	return string(raw[:]), nil
}

// NewKey returns a fresh key string for id, with a secret drawn from
// crypto/rand.
func NewKey(id string) (string, error) {
	if !ValidID(id) {
		return "", errors.New("invalid key id")
	}
	buf := make([]byte, 0, KeyLen)
	buf = append(buf, keyPrefix...)
	buf = append(buf, id...)
	buf = append(buf, '_')
	max := big.NewInt(62)
	for range secretLen {
		n, err := rand.Int(rand.Reader, max) // uniform: no modulo bias
		if err != nil {
			return "", err
		}
		buf = append(buf, base62Alphabet[n.Int64()])
	}
	var check [checkLen]byte
	encodeCheck(&check, crc32.ChecksumIEEE(buf))
	buf = append(buf, check[:]...)
	return string(buf), nil
}

// HashKey returns the SHA-256 of the whole key string, the value stored
// (hex, with the "sha256:" prefix) in a record's hash.
func HashKey(key string) [32]byte { return sha256.Sum256(bytesOf(key)) }

// FormatHash renders a digest as a record's hash field.
func FormatHash(sum [32]byte) string { return "sha256:" + hex.EncodeToString(sum[:]) }

// ParseHash reads a record's hash field.
func ParseHash(s string) ([32]byte, error) {
	var sum [32]byte
	const prefix = "sha256:"
	if len(s) != len(prefix)+64 || s[:len(prefix)] != prefix {
		return sum, errors.New(`hash must be "sha256:" followed by 64 lower-case hex digits`)
	}
	if !isLowerHex(s[len(prefix):]) {
		return sum, errors.New(`hash must be "sha256:" followed by 64 lower-case hex digits`)
	}
	_, err := hex.Decode(sum[:], []byte(s[len(prefix):]))
	return sum, err
}

func encodeCheck(dst *[checkLen]byte, v uint32) {
	n := uint64(v)
	for i := checkLen - 1; i >= 0; i-- {
		dst[i] = base62Alphabet[n%62]
		n /= 62
	}
}

// charClass marks the bytes of each alphabet: one table lookup per byte
// of a presented key.
var charClass = func() (t [256]uint8) {
	for i := 0; i < len(base32Alphabet); i++ {
		t[base32Alphabet[i]] |= classBase32
	}
	for i := 0; i < len(base62Alphabet); i++ {
		t[base62Alphabet[i]] |= classBase62
	}
	return t
}()

const (
	classBase32 = 1 << iota
	classBase62
)

func isBase32(c byte) bool { return charClass[c]&classBase32 != 0 }

func isBase62(c byte) bool { return charClass[c]&classBase62 != 0 }

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) {
			return false
		}
	}
	return true
}

// bytesOf views s as bytes without copying. Only for read-only callers that
// do not keep the slice (crc32, sha256): it keeps the request path free of
// allocations.
func bytesOf(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }
