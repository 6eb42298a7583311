package main

import (
	"hash/crc32"
	"math/rand/v2"
)

// Key strings (SPEC section 2): sg_<id16 base32>_<secret43 base62><check6>,
// check = CRC-32 (IEEE) of everything before it in base62. The load makes
// its own unknown keys and wrong secrets with these, so they pass the
// checksum and reach the store lookup (a malformed key never does).
const (
	b32        = "abcdefghijklmnopqrstuvwxyz234567"
	b62        = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	keyLen     = 3 + 16 + 1 + 43 + 6
	checkStart = keyLen - 6
)

func keyID(key string) string {
	if len(key) < 19 {
		return key // a principal's id as printed by --no-secret
	}
	return key[3:19]
}

func checkOf(prefix string) string {
	var d [6]byte
	n := uint64(crc32.ChecksumIEEE([]byte(prefix)))
	for i := 5; i >= 0; i-- {
		d[i] = b62[n%62]
		n /= 62
	}
	return string(d[:])
}

// wellFormed reports whether key has the shape and checksum of a key.
func wellFormed(key string) bool {
	return len(key) == keyLen && key[:3] == "sg_" && key[19] == '_' && checkOf(key[:checkStart]) == key[checkStart:]
}

// keyWithSecret returns a well-formed key for id with a random secret:
// with a known id it is a wrong secret, with a random id an unknown key.
func keyWithSecret(rng *rand.Rand, id string) string {
	b := make([]byte, 0, keyLen)
	b = append(b, "sg_"...)
	b = append(b, id...)
	b = append(b, '_')
	for range 43 {
		b = append(b, b62[rng.IntN(62)])
	}
	return string(b) + checkOf(string(b))
}

func randomID(rng *rand.Rand) string {
	b := make([]byte, 16)
	for i := range b {
		b[i] = b32[rng.IntN(32)]
	}
	return string(b)
}

// badChecksum changes the last character of key, so its checksum fails.
func badChecksum(key string) string {
	last := key[len(key)-1]
	repl := byte('0')
	if last == '0' {
		repl = '1'
	}
	return key[:len(key)-1] + string(repl)
}
