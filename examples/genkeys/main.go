// Command genkeys writes the demo keys file (examples/keys.json) and, because
// this is a demo, the plaintext keys next to it (examples/demo-keys.txt, one
// name=key per line, so `. examples/demo-keys.txt` loads them into a shell).
//
//	go run ./examples/genkeys
//	go run ./examples/genkeys -certs bench/out/certs -keys bench/out/keys.json -txt bench/out/keys.txt
//
// It reads ca.pem and hris.pem from -certs (run examples/gencerts first) to
// pin the hris client certificate and its issuer. Every run makes new secrets.
//
// The key format and record shape follow SPEC section 2. They are written
// here rather than with caddyauth/internal/keyring because Go's internal rule
// keeps that package out of reach of examples/; `caddy scoped-key new` does
// the same job for real deployments.
package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"hash/crc32"
	"math/big"
	"os"
	"path/filepath"
	"strings"

	"github.com/scopegate/scopegate/internal/testpki"
)

// record mirrors the keys-file record (SPEC section 2); the store decodes
// strictly, so only its field names may appear.
type record struct {
	ID         string    `json:"id"`
	Name       string    `json:"name,omitempty"`
	Hash       string    `json:"hash,omitempty"`
	Scopes     []string  `json:"scopes"`
	Accounts   []string  `json:"accounts"`
	PII        bool      `json:"pii"`
	ClientCert *certBind `json:"client_cert,omitempty"`
	Disabled   bool      `json:"disabled"`
	Version    int64     `json:"version"`
}

type certBind struct {
	SHA256           []string `json:"sha256,omitempty"`
	SPKISHA256       []string `json:"spki_sha256,omitempty"`
	URI              []string `json:"uri,omitempty"`
	Subject          string   `json:"subject,omitempty"`
	IssuerSPKISHA256 []string `json:"issuer_spki_sha256,omitempty"`
}

// demo describes one demo key. A demo without a shell name is a certificate
// principal (no secret).
type demo struct {
	shellName string
	rec       record
}

func main() {
	certs := flag.String("certs", "examples/certs", "directory with ca.pem and hris.pem")
	keysPath := flag.String("keys", "examples/keys.json", "keys file to write")
	txtPath := flag.String("txt", "examples/demo-keys.txt", "plaintext demo keys to write (name=key)")
	flag.Parse()
	if err := run(*certs, *keysPath, *txtPath); err != nil {
		fmt.Fprintln(os.Stderr, "genkeys:", err)
		os.Exit(1)
	}
}

func run(certDir, keysPath, txtPath string) error {
	ca, err := testpki.ReadCertFile(filepath.Join(certDir, "ca.pem"))
	if err != nil {
		return err
	}
	hris, err := testpki.ReadCertFile(filepath.Join(certDir, "hris.pem"))
	if err != nil {
		return err
	}
	if len(hris.URIs) != 1 {
		return fmt.Errorf("hris.pem: want exactly one URI SAN, have %d", len(hris.URIs))
	}
	all := []string{"*"}
	demos := []demo{
		{"readonly_us", record{Name: "Read-only, account acme-us", Scopes: []string{"*:read"}, Accounts: []string{"acme-us"}}},
		{"admin", record{Name: "Full access", Scopes: []string{"*:*"}, Accounts: all}},
		{"pii_reader", record{Name: "Read-only with PII", Scopes: []string{"*:read"}, Accounts: all, PII: true}},
		{"hris", record{Name: "HRIS sync (bound to the hris client certificate)",
			Scopes: []string{"employees:read", "gifts:read"}, Accounts: all,
			ClientCert: &certBind{SHA256: []string{testpki.LeafSHA256Hex(hris)}}}},
		{"", record{Name: "HRIS service principal (certificate only)",
			Scopes: []string{"employees:read", "gifts:read"}, Accounts: all,
			ClientCert: &certBind{
				URI:              []string{hris.URIs[0].String()},
				IssuerSPKISHA256: []string{testpki.SPKISHA256Hex(ca)},
			}}},
	}

	var txt strings.Builder
	txt.WriteString("# scopegate demo keys (plaintext, demo only). Load with: . " + txtPath + "\n")
	var file struct {
		Keys []record `json:"keys"`
	}
	for _, d := range demos {
		rec := d.rec
		if rec.ID, err = newID(); err != nil {
			return err
		}
		rec.Version = 1
		if d.shellName != "" {
			key, err := newKey(rec.ID)
			if err != nil {
				return err
			}
			sum := sha256.Sum256([]byte(key))
			rec.Hash = "sha256:" + hex.EncodeToString(sum[:])
			fmt.Fprintf(&txt, "%s=%s\n", d.shellName, key)
		} else {
			fmt.Fprintf(&txt, "# certificate principal %s: %s\n", rec.ID, rec.Name)
		}
		file.Keys = append(file.Keys, rec)
	}
	data, err := json.MarshalIndent(file, "", "  ")
	if err != nil {
		return err
	}
	if err := testpki.WriteFile(keysPath, append(data, '\n'), 0o600); err != nil {
		return err
	}
	if err := testpki.WriteFile(txtPath, []byte(txt.String()), 0o600); err != nil {
		return err
	}
	fmt.Printf("wrote %s (%d records) and %s\n", keysPath, len(file.Keys), txtPath)
	return nil
}

const (
	base32Alphabet = "abcdefghijklmnopqrstuvwxyz234567"
	base62Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

// newID returns 16 random characters of lower-case RFC 4648 base32.
func newID() (string, error) {
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	for i := range raw {
		raw[i] = base32Alphabet[raw[i]&31]
	}
	return string(raw[:]), nil
}

// newKey returns sg_<id>_<secret><check>: 43 random base62 characters, then
// the CRC-32 (IEEE) of everything before it as 6 base62 digits.
func newKey(id string) (string, error) {
	b := []byte("sg_" + id + "_")
	for range 43 {
		n, err := rand.Int(rand.Reader, big.NewInt(62))
		if err != nil {
			return "", err
		}
		b = append(b, base62Alphabet[n.Int64()])
	}
	crc := uint64(crc32.ChecksumIEEE(b))
	var check [6]byte
	for i := len(check) - 1; i >= 0; i-- {
		check[i] = base62Alphabet[crc%62]
		crc /= 62
	}
	return string(append(b, check[:]...)), nil
}
