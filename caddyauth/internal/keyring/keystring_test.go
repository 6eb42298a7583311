package keyring

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"hash/crc32"
	"strings"
	"testing"
)

func TestNewKeyParses(t *testing.T) {
	for range 200 {
		id, err := NewID()
		if err != nil {
			t.Fatal(err)
		}
		k, err := NewKey(id)
		if err != nil {
			t.Fatal(err)
		}
		if len(k) != KeyLen || !strings.HasPrefix(k, "sg_"+id+"_") {
			t.Fatalf("bad shape %q", k)
		}
		got, ok := ParseKey(k)
		if !ok || got != id {
			t.Fatalf("ParseKey(%q) = %q, %v", k, got, ok)
		}
	}
}

// TestChecksumKnownValue pins the checksum encoding of SPEC section 2: the
// CRC-32 (IEEE) of everything before it as 6 base62 digits, most
// significant first, zero padded, digits 0-9A-Za-z.
func TestChecksumKnownValue(t *testing.T) {
	body := "sg_abcdefghijklmnop_" + strings.Repeat("A", secretLen)
	crc := crc32.ChecksumIEEE([]byte(body))
	var digits []byte
	for n := uint64(crc); len(digits) < 6; n /= 62 {
		digits = append([]byte{base62Alphabet[n%62]}, digits...)
	}
	key := body + string(digits)
	if id, ok := ParseKey(key); !ok || id != "abcdefghijklmnop" {
		t.Fatalf("known-good key rejected: %q", key)
	}
	// The smallest checksums are zero padded.
	var c [checkLen]byte
	encodeCheck(&c, 61)
	if string(c[:]) != "00000z" {
		t.Fatalf("encodeCheck(61) = %q", c)
	}
	encodeCheck(&c, 0xFFFFFFFF)
	if string(c[:]) != "4gfFC3" {
		t.Fatalf("encodeCheck(max) = %q", c)
	}
}

func TestParseKeyRejects(t *testing.T) {
	id, _ := NewID()
	good, _ := NewKey(id)
	flip := func(i int) string {
		b := []byte(good)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}
	cases := map[string]string{
		"empty":            "",
		"short":            good[:len(good)-1],
		"long":             good + "0",
		"prefix":           "SG_" + good[3:],
		"separator":        good[:19] + "-" + good[20:],
		"upper id":         good[:3] + strings.ToUpper(good[3:19]) + good[19:],
		"id digit 1":       good[:3] + "1" + good[4:],
		"secret symbol":    good[:25] + "+" + good[26:],
		"checksum flipped": flip(KeyLen - 1),
		"secret flipped":   flip(30),
		"id flipped":       flip(5),
		"whitespace":       " " + good[1:],
	}
	for name, k := range cases {
		if _, ok := ParseKey(k); ok {
			t.Errorf("%s: ParseKey(%q) accepted", name, k)
		}
	}
}

func TestParseKeyNoAllocs(t *testing.T) {
	id, _ := NewID()
	k, _ := NewKey(id)
	bad := k[:len(k)-1] + "x"
	if n := testing.AllocsPerRun(100, func() { ParseKey(k); ParseKey(bad); HashKey(k) }); n != 0 {
		t.Fatalf("ParseKey/HashKey allocate %v times", n)
	}
}

func TestHashRoundTrip(t *testing.T) {
	sum := HashKey("sg_x")
	got, err := ParseHash(FormatHash(sum))
	if err != nil || got != sum {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "sha256:", "sha256:" + strings.Repeat("A", 64), "md5:" + strings.Repeat("a", 64), "sha256:" + strings.Repeat("a", 63)} {
		if _, err := ParseHash(bad); err == nil {
			t.Errorf("ParseHash(%q) accepted", bad)
		}
	}
}

func FuzzParseKey(f *testing.F) {
	id, _ := NewID()
	k, _ := NewKey(id)
	f.Add(k)
	f.Add("")
	f.Add("sg_")
	f.Add(k[:len(k)-1] + "0")
	f.Fuzz(func(t *testing.T, s string) {
		id, ok := ParseKey(s)
		if !ok {
			return
		}
		// Whatever parses is exactly the documented shape, and its id
		// is a valid id that round-trips through NewKey's format.
		if len(s) != KeyLen || !ValidID(id) || s[3:19] != id {
			t.Fatalf("ParseKey accepted %q (id %q)", s, id)
		}
		var c [checkLen]byte
		encodeCheck(&c, crc32.ChecksumIEEE([]byte(s[:checkStart])))
		if string(c[:]) != s[checkStart:] {
			t.Fatalf("checksum not verified for %q", s)
		}
	})
}

func TestParseFileRejectsNullRecord(t *testing.T) {
	if _, _, err := ParseFile([]byte(`{"keys":[null]}`)); err == nil || !strings.Contains(err.Error(), "null") {
		t.Fatalf("got %v", err)
	}
}

// FuzzParseFile: the keys-file parser never panics, and what it accepts
// survives a round trip through the CLI's writer format.
func FuzzParseFile(f *testing.F) {
	id, _ := NewID()
	k, _ := NewKey(id)
	f.Add(`{"keys":[{"id":"` + id + `","hash":"` + FormatHash(HashKey(k)) + `","scopes":["*:read"],"accounts":["acme-us"],"pii":false,"disabled":false,"version":1}]}`)
	f.Add(`{"keys":[{"id":"aaaaaaaaaaaaaaaa","scopes":[],"client_cert":{"uri":["spiffe://a/b"],"issuer_spki_sha256":["` + strings.Repeat("ab", 32) + `"]},"version":2}]}`)
	f.Add(`{"keys":[],"denied_certs":[{"sha256":"` + strings.Repeat("0f", 32) + `","reason":"stolen","added_at":"2026-11-29T10:00:00Z"},{"issuer":"CN=Acme Client CA,O=Acme","serial":"a1b2c"}]}`)
	f.Add(`{"keys":[],"denied_certs":[{"issuer":"/CN=x","serial":"00a1"},{"sha256":"AB"}]}`)
	f.Add(`{"keys":[null]}`)
	f.Add(`{"keys":[]}`)
	f.Fuzz(func(t *testing.T, data string) {
		file, set, err := ParseFile([]byte(data))
		if err != nil {
			return
		}
		if set.Len() != len(file.Keys) {
			t.Fatalf("%d records, %d keys", len(file.Keys), set.Len())
		}
		if set.Denylist().Len() != len(file.DeniedCerts) {
			t.Fatalf("%d denylist entries, %d in the set", len(file.DeniedCerts), set.Denylist().Len())
		}
		out, err := json.Marshal(file)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := ParseFile(out); err != nil {
			t.Fatalf("re-encoded file refused: %v\n%s", err, out)
		}
	})
}

func TestDigestsOfCachesByPointer(t *testing.T) {
	c := &x509.Certificate{Raw: []byte("leaf"), RawSubjectPublicKeyInfo: []byte("spki")}
	if LeafSHA256(c) != sha256.Sum256([]byte("leaf")) || SPKISHA256(c) != sha256.Sum256([]byte("spki")) {
		t.Fatal("wrong digests")
	}
	// Another certificate object with other bytes never gets c's digests.
	c2 := &x509.Certificate{Raw: []byte("other"), RawSubjectPublicKeyInfo: []byte("spki2")}
	if LeafSHA256(c2) != sha256.Sum256([]byte("other")) {
		t.Fatal("wrong digests for a second certificate")
	}
	if n := testing.AllocsPerRun(100, func() { LeafSHA256(c) }); n != 0 {
		t.Fatalf("a cached lookup allocates %v times", n)
	}
}
