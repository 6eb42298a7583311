// Command gencerts writes the demo PKI used by Caddyfile.example and the
// benchmark: a CA, a server certificate for localhost and 127.0.0.1, and two
// client certificates from the same CA, all valid for about 20 years.
//
//	go run ./examples/gencerts                  # writes examples/certs/
//	go run ./examples/gencerts -out bench/out/certs
//
// Re-running replaces every file (new keys): run examples/genkeys afterwards,
// since keys.json pins the hris certificate and the CA.
//
// Files (".pem" names only; caddytest rewrites paths ending in .crt/.key):
//
//	ca.pem                        demo CA (trust_pool of the site; curl --cacert)
//	server.pem, server-key.pem    localhost, 127.0.0.1
//	hris.pem, hris-key.pem        CN=hris,O=Acme Demo  URI spiffe://acme.test/hris
//	other.pem, other-key.pem      CN=other,O=Acme Demo URI spiffe://acme.test/other
//
// This is demo material: the private keys are public. Never trust ca.pem
// outside the demo.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/scopegate/scopegate/internal/testpki"
)

const life = 20 * 365 * 24 * time.Hour

func main() {
	out := flag.String("out", "examples/certs", "output directory")
	flag.Parse()
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "gencerts:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	valid := testpki.ValidFor(life)
	org := testpki.Org("Acme Demo")
	ca, err := testpki.NewCA("scopegate demo CA", valid, org)
	if err != nil {
		return err
	}
	server, err := ca.ServerWith([]string{"localhost", "127.0.0.1"}, valid)
	if err != nil {
		return err
	}
	hris, err := ca.Client("hris", valid, org, testpki.URIs("spiffe://acme.test/hris"))
	if err != nil {
		return err
	}
	other, err := ca.Client("other", valid, org, testpki.URIs("spiffe://acme.test/other"))
	if err != nil {
		return err
	}

	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if _, err := ca.Write(dir, "ca", false); err != nil {
		return err
	}
	for name, leaf := range map[string]*testpki.Leaf{"server": server, "hris": hris, "other": other} {
		if _, _, err := leaf.Write(dir, name); err != nil {
			return err
		}
	}
	fmt.Printf("wrote %s/{ca,server,hris,other}.pem and the -key.pem files\n", dir)
	fmt.Printf("ca    spki_sha256 %s\n", ca.SPKISHA256Hex())
	fmt.Printf("hris  sha256      %s\n", hris.SHA256Hex())
	fmt.Printf("other sha256      %s\n", other.SHA256Hex())
	return nil
}
