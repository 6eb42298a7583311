// Command genkeys writes the demo keys file (examples/keys.json) and, because
// this is a demo, the plaintext keys next to it (examples/demo-keys.txt, one
// name=key per line, so `. examples/demo-keys.txt` loads them into a shell).
//
//	go run ./examples/genkeys
//	go run ./examples/genkeys -certs bench/out/certs -keys bench/out/keys.json -txt bench/out/keys.txt
//
// It reads ca.pem and hris.pem from -certs (run examples/gencerts first) to
// pin the hris client certificate and its issuer. Every run makes new
// secrets. The keys are made exactly as an operator makes them: with
// `caddy scoped-key new`, run in-process.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/scopegate/scopegate/caddyauth"
)

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

// demo is one demo key: its shell name (empty for a certificate
// principal) and the `scoped-key new` flags that make it.
type demo struct {
	shellName string
	flags     []string
}

func run(certDir, keysPath, txtPath string) error {
	ca, hris := filepath.Join(certDir, "ca.pem"), filepath.Join(certDir, "hris.pem")
	demos := []demo{
		{"readonly_us", []string{"--name", "Read-only, account acme-us", "--scope", "read_only", "--account", "acme-us"}},
		{"admin", []string{"--name", "Full access", "--scope", "full_access"}},
		{"pii_reader", []string{"--name", "Read-only with PII", "--scope", "read_only", "--pii"}},
		{"hris", []string{"--name", "HRIS sync (bound to the hris client certificate)", "--scope", "employees:read,gifts:read", "--cert", hris}},
		{"", []string{"--name", "HRIS service principal (certificate only)", "--scope", "employees:read,gifts:read",
			"--spiffe", "spiffe://acme.test/hris", "--issuer", ca, "--no-secret"}},
	}
	if err := os.Remove(keysPath); err != nil && !os.IsNotExist(err) {
		return err
	}
	var txt strings.Builder
	txt.WriteString("# scopegate demo keys (plaintext, demo only). Load with: . " + txtPath + "\n")
	for _, d := range demos {
		out, err := scopedKey(append([]string{"new", "--keys", keysPath}, d.flags...)...)
		if err != nil {
			return err
		}
		if d.shellName != "" {
			fmt.Fprintf(&txt, "%s=%s\n", d.shellName, out)
		} else {
			fmt.Fprintf(&txt, "# certificate principal %s: HRIS service principal (certificate only)\n", out)
		}
	}
	if err := os.WriteFile(txtPath, []byte(txt.String()), 0o600); err != nil {
		return err
	}
	fmt.Printf("wrote %s (%d records) and %s\n", keysPath, len(demos), txtPath)
	return nil
}

// scopedKey runs `caddy scoped-key ARGS` in-process and returns its stdout.
func scopedKey(args ...string) (string, error) {
	var out, errb bytes.Buffer
	if err := caddyauth.RunScopedKey(&out, &errb, args...); err != nil {
		return "", fmt.Errorf("scoped-key %s: %v %s", args[0], err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}
