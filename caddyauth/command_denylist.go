package caddyauth

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/scopegate/scopegate/caddyauth/internal/keyring"
)

// This file is the client-certificate denylist of `caddy scoped-key`:
// deny-cert, allow-cert and denied-certs.

// certDenylistEditor is a store's denylist as the CLI edits it.
type certDenylistEditor interface {
	// DenyCert adds the entry; changed is false (and nothing is written)
	// when an entry with the same id is already there. version is the
	// store's new denylist version (0 for a keys file).
	DenyCert(ctx context.Context, e *keyring.DeniedCert) (changed bool, version int64, err error)
	// AllowCert removes the entry with this id; an absent entry is an
	// error naming the store.
	AllowCert(ctx context.Context, id string) (version int64, err error)
	// DeniedCerts lists the entries (file order; Redis: by id).
	DeniedCerts(ctx context.Context) ([]*keyring.DeniedCert, error)
}

func (e keyFileEditor) DenyCert(ctx context.Context, entry *keyring.DeniedCert) (bool, int64, error) {
	changed := false
	err := e.updateFile(ctx, func(f *keyring.File) error { // audit entry written ahead (audit.go)
		id := entry.ID()
		for _, d := range f.DeniedCerts {
			if d != nil && d.ID() == id {
				return keyring.ErrUnchanged
			}
		}
		f.DeniedCerts = append(f.DeniedCerts, entry)
		changed = true
		return nil
	})
	return changed, 0, err
}

func (e keyFileEditor) AllowCert(ctx context.Context, id string) (int64, error) {
	if _, err := os.Stat(e.path); err != nil {
		return 0, fmt.Errorf("keys file %s: %w", e.path, err)
	}
	return 0, e.updateFile(ctx, func(f *keyring.File) error {
		for i, d := range f.DeniedCerts {
			if d != nil && d.ID() == id {
				f.DeniedCerts = append(f.DeniedCerts[:i], f.DeniedCerts[i+1:]...)
				return nil
			}
		}
		return fmt.Errorf("%s is not denied in %s", id, e.path)
	})
}

func (e keyFileEditor) DeniedCerts(context.Context) ([]*keyring.DeniedCert, error) {
	f, _, err := keyring.LoadFile(e.path)
	if err != nil {
		return nil, err
	}
	return f.DeniedCerts, nil
}

func (e keyRedisEditor) DenyCert(ctx context.Context, entry *keyring.DeniedCert) (bool, int64, error) {
	v, err := e.ed.DenyCert(ctx, entry)
	return v != 0, v, err
}

func (e keyRedisEditor) AllowCert(ctx context.Context, id string) (int64, error) {
	v, err := e.ed.AllowCert(ctx, id)
	if err == nil && v == 0 {
		return 0, fmt.Errorf("%s is not denied in redis %s", id, e.ed)
	}
	return v, err
}

func (e keyRedisEditor) DeniedCerts(ctx context.Context) ([]*keyring.DeniedCert, error) {
	return e.ed.DeniedCerts(ctx)
}

// attachDenylist adds deny-cert, allow-cert and denied-certs.
func (c *scopedKeyCLI) attachDenylist(cmd *cobra.Command) {
	const selectors = `
The certificate is named by one of:
  --cert PEM             the SHA-256 of the first certificate in the file
                         (a client certificate, or a CA: denying a CA cuts
                         off every certificate it issued)
  --cert PEM --by-serial its issuer DN and serial number instead (denies
                         every certificate the issuer gave that serial,
                         e.g. re-encodings of the same certificate: for
                         a stolen certificate, add both entries)
  --sha256 HEX           a fingerprint, as {http.request.tls.client.fingerprint}
                         or openssl x509 -fingerprint -sha256 show it
  --issuer-dn DN --serial HEX
                         the issuer DN as Go's pkix.Name.String() writes it
                         ({http.request.tls.client.issuer}, e.g.
                         CN=Acme Client CA,O=Acme) and the serial in hex
                         (openssl's 0A:1B:… form is accepted)
`
	denyCmd := &cobra.Command{
		Use:   "deny-cert (--keys FILE | --redis URL) (--cert PEM [--by-serial] | --sha256 HEX | --issuer-dn DN --serial HEX) [--reason TEXT]",
		Short: "Refuses a client certificate (or everything a CA issued) at once",
		Long: `
Adds a certificate to the denylist: every request whose verified client
certificate chain contains it gets 403 client_certificate_revoked, on every
route (public ones included), whatever key it carries. A running Caddy
picks the change up within about a second (keys file) or milliseconds
(Redis). Denying a certificate that is already denied changes nothing and
succeeds.
` + selectors,
		Example: `  caddy scoped-key deny-cert --keys /etc/caddy/keys.json --cert stolen.pem --reason "laptop stolen"
  caddy scoped-key deny-cert --redis '{env.REDIS_URL}' --cert intermediate.pem --reason "CA key compromised"
  caddy scoped-key deny-cert --redis '{env.REDIS_URL}' --issuer-dn 'CN=Acme Client CA,O=Acme' --serial 0a1b2c`,
		Args: skNoArgs,
		RunE: c.run(c.runDenyCert),
	}
	skStoreFlags(denyCmd)
	skCertSelectorFlags(denyCmd)
	denyCmd.Flags().String("reason", "", "why the certificate is denied (`TEXT`, kept with the entry)")

	allowCmd := &cobra.Command{
		Use:   "allow-cert (--keys FILE | --redis URL) (--cert PEM [--by-serial] | --sha256 HEX | --issuer-dn DN --serial HEX)",
		Short: "Removes a certificate from the denylist",
		Long: `
Removes the denylist entry that names this certificate the same way it was
denied (a certificate denied --by-serial is allowed again --by-serial). An
entry that is not there is an error.
` + selectors,
		Args: skNoArgs,
		RunE: c.run(c.runAllowCert),
	}
	skStoreFlags(allowCmd)
	skCertSelectorFlags(allowCmd)

	listCmd := &cobra.Command{
		Use:   "denied-certs (--keys FILE | --redis URL)",
		Short: "Prints the certificate denylist, one JSON object per line",
		Long: `
Prints every denylist entry as stored, one JSON object per line: a keys
file in file order, Redis sorted by entry id.
`,
		Args: skNoArgs,
		RunE: c.run(c.runDeniedCerts),
	}
	skStoreFlags(listCmd)

	for _, sub := range []*cobra.Command{denyCmd, allowCmd, listCmd} {
		sub.SilenceUsage = true
		cmd.AddCommand(sub)
	}
}

func skCertSelectorFlags(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.String("cert", "", "the certificate in `PEM` (the first one in the file)")
	fl.Bool("by-serial", false, "with --cert: name it by issuer DN and serial instead of its SHA-256")
	fl.String("sha256", "", "the certificate's SHA-256 fingerprint (`HEX`)")
	fl.String("issuer-dn", "", "the issuer `DN` (pkix.Name.String() form), with --serial")
	fl.String("serial", "", "the serial number in `HEX`, with --issuer-dn")
}

// skDeniedCert builds an entry from the selector flags.
func skDeniedCert(cmd *cobra.Command) (*keyring.DeniedCert, error) {
	fl := cmd.Flags()
	str := func(name string) string { v, _ := fl.GetString(name); return v }
	bySerial, _ := fl.GetBool("by-serial")
	certFile, sum, dn, serial := str("cert"), str("sha256"), str("issuer-dn"), str("serial")
	given := 0
	for _, set := range []bool{certFile != "", sum != "", dn != "" || serial != ""} {
		if set {
			given++
		}
	}
	if given != 1 {
		return nil, errors.New("name the certificate with exactly one of --cert PEM, --sha256 HEX, or --issuer-dn DN with --serial HEX")
	}
	if bySerial && certFile == "" {
		return nil, errors.New("--by-serial goes with --cert")
	}
	e := &keyring.DeniedCert{}
	switch {
	case certFile != "":
		certs, err := skReadCerts("--cert", certFile)
		if err != nil {
			return nil, err
		}
		c := certs[0]
		if !bySerial {
			e.SHA256 = keyring.HexDigest(keyring.LeafSHA256(c))
			break
		}
		s, ok := keyring.CanonicalSerial(c.SerialNumber)
		if !ok {
			return nil, fmt.Errorf("--cert %s: the certificate has a negative serial number; deny it by --sha256", certFile)
		}
		e.Issuer, e.Serial = c.Issuer.String(), s
	case sum != "":
		h := skHex(sum)
		if len(h) != 64 || !skIsHex(h) {
			return nil, fmt.Errorf("--sha256 %q: want the 64 hex digits of a SHA-256 fingerprint", skShort(sum))
		}
		e.SHA256 = h
	default:
		if dn == "" || serial == "" {
			return nil, errors.New("--issuer-dn and --serial go together")
		}
		if err := keyring.CheckDN(dn); err != nil {
			return nil, fmt.Errorf("--issuer-dn: %w", err)
		}
		h := strings.TrimPrefix(skHex(serial), "0x")
		n, ok := new(big.Int).SetString(h, 16)
		if h == "" || !skIsHex(h) || !ok {
			return nil, fmt.Errorf("--serial %q: want the serial number in hex", skShort(serial))
		}
		e.Issuer, e.Serial = dn, n.Text(16)
	}
	return e, nil
}

// skHex lower-cases a hex string and drops the colons and spaces with
// which tools print fingerprints and serials.
func skHex(s string) string {
	return strings.ToLower(strings.NewReplacer(":", "", " ", "").Replace(strings.TrimSpace(s)))
}

func skIsHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if !('0' <= s[i] && s[i] <= '9' || 'a' <= s[i] && s[i] <= 'f') {
			return false
		}
	}
	return true
}

// openDenylistEditor opens the store named by the flags, as a key editor
// (for the audit hook) and as a denylist editor.
func (c *scopedKeyCLI) openDenylistEditor(cmd *cobra.Command) (keyEditor, certDenylistEditor, error) {
	ed, err := c.openEditor(cmd)
	if err != nil {
		return nil, nil, err
	}
	de, ok := ed.(certDenylistEditor)
	if !ok {
		closeEditor(ed)
		return nil, nil, fmt.Errorf("%s has no certificate denylist", ed)
	}
	return ed, de, nil
}

// runDenyCert is `caddy scoped-key deny-cert`.
func (c *scopedKeyCLI) runDenyCert(cmd *cobra.Command, _ []string) error {
	e, err := skDeniedCert(cmd)
	if err != nil {
		return err
	}
	e.Reason, _ = cmd.Flags().GetString("reason")
	at := skCeilSecond(c.now())
	e.AddedAt = &at
	if err := e.Check(); err != nil {
		return err
	}
	ed, de, err := c.openDenylistEditor(cmd)
	if err != nil {
		return err
	}
	defer closeEditor(ed)
	changed, version, err := de.DenyCert(cmd.Context(), e)
	if err != nil {
		return err
	}
	if !changed {
		fmt.Fprintf(cmd.ErrOrStderr(), "%s was already denied\n", e.ID())
		return nil
	}
	c.committed(ed, "deny-cert", e.ID(), version)
	return nil
}

// runAllowCert is `caddy scoped-key allow-cert`.
func (c *scopedKeyCLI) runAllowCert(cmd *cobra.Command, _ []string) error {
	e, err := skDeniedCert(cmd)
	if err != nil {
		return err
	}
	if err := e.Check(); err != nil {
		return err
	}
	ed, de, err := c.openDenylistEditor(cmd)
	if err != nil {
		return err
	}
	defer closeEditor(ed)
	version, err := de.AllowCert(cmd.Context(), e.ID())
	if err != nil {
		return err
	}
	c.committed(ed, "allow-cert", e.ID(), version)
	return nil
}

// runDeniedCerts is `caddy scoped-key denied-certs`.
func (c *scopedKeyCLI) runDeniedCerts(cmd *cobra.Command, _ []string) error {
	ed, de, err := c.openDenylistEditor(cmd)
	if err != nil {
		return err
	}
	defer closeEditor(ed)
	entries, err := de.DeniedCerts(cmd.Context())
	if err != nil {
		return err
	}
	w := bufio.NewWriter(cmd.OutOrStdout())
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	for _, e := range entries {
		if err := enc.Encode(e); err != nil {
			return err
		}
	}
	return w.Flush()
}
