package caddyauth

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/scopegate/scopegate/caddyauth/internal/keyring"
	"github.com/scopegate/scopegate/internal/testpki"
)

// skResult is what one `caddy scoped-key …` run produced.
type skResult struct {
	stdout, stderr string
	err            error
}

// skRun runs `caddy scoped-key args…` in-process under a root command set
// up like caddy's (SilenceUsage). With cli nil the command is built from
// the registration in init(), as caddy builds it; otherwise from cli (to fix
// the clock or hook the audit log).
func skRun(t *testing.T, cli *scopedKeyCLI, args ...string) skResult {
	t.Helper()
	root := &cobra.Command{Use: "caddy", SilenceUsage: true}
	reg, ok := caddycmd.Commands()["scoped-key"]
	if !ok {
		t.Fatal("scoped-key is not registered")
	}
	sk := &cobra.Command{Use: reg.Name + " " + reg.Usage, Short: reg.Short, Long: reg.Long}
	if cli == nil {
		reg.CobraFunc(sk)
	} else {
		cli.attach(sk)
	}
	root.AddCommand(sk)
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(append([]string{"scoped-key"}, args...))
	err := root.Execute()
	return skResult{out.String(), errb.String(), err}
}

// skOK runs a command that must succeed with nothing on stderr.
func skOK(t *testing.T, cli *scopedKeyCLI, args ...string) string {
	t.Helper()
	r := skRun(t, cli, args...)
	if r.err != nil || r.stderr != "" {
		t.Fatalf("scoped-key %s: err = %v, stderr = %q", strings.Join(args, " "), r.err, r.stderr)
	}
	return r.stdout
}

// skFail runs a command that must fail: non-nil error, a one-line reason on
// stderr containing want, nothing on stdout.
func skFail(t *testing.T, cli *scopedKeyCLI, want string, args ...string) {
	t.Helper()
	r := skRun(t, cli, args...)
	if r.err == nil {
		t.Errorf("scoped-key %s: succeeded, want an error containing %q", strings.Join(args, " "), want)
		return
	}
	if r.stdout != "" {
		t.Errorf("scoped-key %s: stdout %q on error", strings.Join(args, " "), r.stdout)
	}
	line := strings.TrimSuffix(r.stderr, "\n")
	if !strings.HasPrefix(line, "Error: ") || strings.Contains(line, "\n") || !strings.Contains(line, want) {
		t.Errorf("scoped-key %s: stderr = %q, want one line \"Error: …%s…\"", strings.Join(args, " "), r.stderr, want)
	}
}

// skNewKey runs `new` and returns the printed key, checking it is one line.
func skNewKey(t *testing.T, cli *scopedKeyCLI, args ...string) string {
	t.Helper()
	out := skOK(t, cli, append([]string{"new"}, args...)...)
	key := strings.TrimSuffix(out, "\n")
	if strings.Contains(key, "\n") || !strings.HasSuffix(out, "\n") {
		t.Fatalf("new printed %q, want exactly one line", out)
	}
	if _, ok := keyring.ParseKey(key); !ok {
		t.Fatalf("new printed %q, not a valid key", key)
	}
	return key
}

func skLoad(t *testing.T, path string) []*keyring.Record {
	t.Helper()
	f, _, err := keyring.LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return f.Keys
}

func skRecord(t *testing.T, path, id string) *keyring.Record {
	t.Helper()
	for _, r := range skLoad(t, path) {
		if r.ID == id {
			return r
		}
	}
	t.Fatalf("no record %s in %s", id, path)
	return nil
}

func skFixedCLI(now time.Time) *scopedKeyCLI {
	return &scopedKeyCLI{now: func() time.Time { return now }}
}

func TestScopedKeyNewMinimal(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "keys.json")
	key := skNewKey(t, nil, "--keys", keys, "--scope", "read_only")
	id, _ := keyring.ParseKey(key)
	recs := skLoad(t, keys)
	if len(recs) != 1 {
		t.Fatalf("%d records", len(recs))
	}
	r := recs[0]
	want := keyring.Record{ID: id, Hash: keyring.FormatHash(keyring.HashKey(key)), Scopes: []string{"*:read"}, Accounts: []string{"*"}, Version: 1}
	if !reflect.DeepEqual(*r, want) {
		t.Errorf("record = %+v\nwant     %+v", *r, want)
	}
	fi, err := os.Stat(keys)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("new keys file mode %v, want 0600", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(keys)
	if !strings.Contains(string(data), `"accounts": [`+"\n"+`        "*"`) {
		t.Errorf("accounts not stored explicitly as [\"*\"]:\n%s", data)
	}
	if strings.Contains(string(data), key) {
		t.Error("plaintext key written to the keys file")
	}

	// A second key is appended; the file keeps its (changed) mode.
	if err := os.Chmod(keys, 0o640); err != nil {
		t.Fatal(err)
	}
	key2 := skNewKey(t, nil, "--keys", keys, "--scope", "full_access")
	id2, _ := keyring.ParseKey(key2)
	if recs := skLoad(t, keys); len(recs) != 2 || recs[0].ID != id || recs[1].ID != id2 || recs[1].Scopes[0] != "*:*" {
		t.Errorf("after a second new: %+v", recs)
	}
	if fi, _ := os.Stat(keys); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode not preserved: %v", fi.Mode().Perm())
	}
}

// skPKI writes a CA, a client certificate (with a SPIFFE URI) and public key
// files, and returns their paths.
type skPKI struct {
	ca, ca2                    *testpki.CA
	leaf                       *testpki.Leaf
	caFile, bundle, leafFile   string
	keyFile, pubFile, rsaFile  string
	garbage, emptyPEM, missing string
}

func skNewPKI(t *testing.T) *skPKI {
	t.Helper()
	dir := t.TempDir()
	p := &skPKI{}
	p.ca = testpki.Must(testpki.NewCA("Scoped Key Test CA"))
	p.ca2 = testpki.Must(testpki.NewCA("Second CA"))
	p.leaf = testpki.Must(p.ca.Client("hris", testpki.Org("Acme, Inc."), testpki.URIs("spiffe://acme.test/hris")))
	p.caFile = testpki.Must(p.ca.Write(dir, "ca", false))
	p.bundle = testpki.Must(testpki.WriteBundle(dir, "bundle", p.ca, p.ca2))
	var err error
	if p.leafFile, p.keyFile, err = p.leaf.Write(dir, "hris"); err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(p.leaf.Key.Public())
	if err != nil {
		t.Fatal(err)
	}
	p.pubFile = filepath.Join(dir, "hris-pub.pem")
	if err := os.WriteFile(p.pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p.rsaFile = filepath.Join(dir, "rsa-pub.pem")
	if err := os.WriteFile(p.rsaFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey)}), 0o644); err != nil {
		t.Fatal(err)
	}
	p.garbage = filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(p.garbage, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p.emptyPEM = filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(p.emptyPEM, []byte("not pem at all\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p.missing = filepath.Join(dir, "missing.pem")
	return p
}

func TestScopedKeyNewEveryFlag(t *testing.T) {
	p := skNewPKI(t)
	keys := filepath.Join(t.TempDir(), "keys.json")
	now := time.Date(2026, 3, 1, 12, 0, 0, 500, time.UTC)
	subject := p.leaf.Cert.Subject.String()
	key := skNewKey(t, skFixedCLI(now), "--keys", keys,
		"--name", "HRIS sync",
		"--scope", "employees:read,gifts:read", "--scope", "gifts:read", "--scope", "read_only",
		"--account", "acme-us", "--account", "acme-eu,acme-uk",
		"--pii",
		"--cert", p.leafFile,
		"--spki", p.leafFile, "--spki", p.pubFile, "--spki", p.rsaFile,
		"--spiffe", "spiffe://acme.test/hris",
		"--subject", subject,
		"--issuer", p.caFile,
		"--not-before", "2026-04-01T00:00:00+02:00",
		"--expires", "90d",
	)
	id, _ := keyring.ParseKey(key)
	r := skRecord(t, keys, id)

	rsaBlock, _ := pem.Decode(skMust(os.ReadFile(p.rsaFile)))
	rsaPub := skMust(x509.ParsePKCS1PublicKey(rsaBlock.Bytes))
	rsaSPKI := skMust(x509.MarshalPKIXPublicKey(rsaPub))
	nb := time.Date(2026, 3, 31, 22, 0, 0, 0, time.UTC)
	exp := time.Date(2026, 5, 30, 12, 0, 1, 0, time.UTC) // now + 90d, rounded up to the second
	want := keyring.Record{
		ID: id, Name: "HRIS sync", Hash: keyring.FormatHash(keyring.HashKey(key)),
		Scopes:   []string{"employees:read", "gifts:read", "*:read"},
		Accounts: []string{"acme-us", "acme-eu", "acme-uk"},
		PII:      true,
		ClientCert: &keyring.CertBinding{
			SHA256:           []string{p.leaf.SHA256Hex()},
			SPKISHA256:       []string{p.leaf.SPKISHA256Hex(), keyring.HexDigest(skSHA256(rsaSPKI))},
			URI:              []string{"spiffe://acme.test/hris"},
			Subject:          subject,
			IssuerSPKISHA256: []string{p.ca.SPKISHA256Hex()},
		},
		NotBefore: &nb, ExpiresAt: &exp,
		Version: 1,
	}
	if !reflect.DeepEqual(*r, want) {
		gotJSON, _ := json.Marshal(r)
		wantJSON, _ := json.Marshal(want)
		t.Errorf("record:\n got %s\nwant %s", gotJSON, wantJSON)
	}
	if !strings.Contains(subject, `\,`) {
		t.Errorf("test subject %q should exercise an escaped comma", subject)
	}

	// The stored binding matches the certificate it was made from, and
	// the key works inside its validity window.
	k, err := keyring.Compile(r)
	if err != nil {
		t.Fatal(err)
	}
	chain := []*x509.Certificate{p.leaf.Cert, p.ca.Cert}
	if !k.Binding().Matches(chain) {
		t.Error("binding does not match the pinned certificate")
	}
	sum := keyring.HashKey(key)
	if ok, _ := k.CheckSecret(&sum, now); !ok || k.ValidAt(now) || !k.ValidAt(nb.Add(time.Hour)) || k.ValidAt(exp) {
		t.Error("secret or validity window wrong")
	}
}

func TestScopedKeyNewBindingsSeparately(t *testing.T) {
	p := skNewPKI(t)
	keys := filepath.Join(t.TempDir(), "keys.json")
	chain := []*x509.Certificate{p.leaf.Cert, p.ca.Cert}
	otherLeaf := testpki.Must(p.ca2.Client("hris", testpki.Org("Acme, Inc."), testpki.URIs("spiffe://acme.test/hris")))
	otherChain := []*x509.Certificate{otherLeaf.Cert, p.ca2.Cert}
	for _, tc := range []struct {
		name      string
		args      []string
		warn      string
		otherCA   bool // the same subject/URI from the second CA matches
		principal bool
	}{
		{name: "cert", args: []string{"--cert", p.leafFile}},
		{name: "spki from certificate", args: []string{"--spki", p.leafFile}},
		{name: "spki from public key", args: []string{"--spki", p.pubFile}},
		{name: "spiffe", args: []string{"--spiffe", "spiffe://acme.test/hris"}, warn: "--spiffe without --issuer", otherCA: true},
		{name: "subject", args: []string{"--subject", p.leaf.Cert.Subject.String()}, warn: "--subject without --issuer", otherCA: true},
		{name: "spiffe+issuer", args: []string{"--spiffe", "spiffe://acme.test/hris", "--issuer", p.caFile}},
		{name: "subject+issuer bundle", args: []string{"--subject", p.leaf.Cert.Subject.String(), "--issuer", p.bundle}, otherCA: true},
		{name: "principal", args: []string{"--cert", p.leafFile, "--no-secret"}, principal: true},
		{name: "principal spiffe", args: []string{"--spiffe", "spiffe://acme.test/hris", "--no-secret"}, warn: "--spiffe without --issuer", otherCA: true, principal: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := skRun(t, nil, append([]string{"new", "--keys", keys, "--scope", "gifts:read"}, tc.args...)...)
			if r.err != nil {
				t.Fatal(r.err)
			}
			if tc.warn == "" && r.stderr != "" || tc.warn != "" && !strings.Contains(r.stderr, "warning: "+tc.warn) {
				t.Errorf("stderr = %q, want warning %q", r.stderr, tc.warn)
			}
			out := strings.TrimSuffix(r.stdout, "\n")
			var id string
			if tc.principal {
				id = out
				if !keyring.ValidID(id) {
					t.Fatalf("--no-secret printed %q, want the id", r.stdout)
				}
			} else {
				var ok bool
				if id, ok = keyring.ParseKey(out); !ok {
					t.Fatalf("printed %q", r.stdout)
				}
			}
			rec := skRecord(t, keys, id)
			if rec.IsPrincipal() != tc.principal {
				t.Errorf("IsPrincipal = %v", rec.IsPrincipal())
			}
			k, err := keyring.Compile(rec)
			if err != nil {
				t.Fatal(err)
			}
			if !k.Binding().Matches(chain) {
				t.Error("does not match the certificate")
			}
			if k.Binding().Matches(otherChain) != tc.otherCA {
				t.Errorf("matches a look-alike from another CA: %v, want %v", !tc.otherCA, tc.otherCA)
			}
		})
	}
}

func TestScopedKeyNewTimes(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "keys.json")
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cli := skFixedCLI(now)
	for _, tc := range []struct {
		args   []string
		nb, ex time.Time
	}{
		{[]string{"--expires", "2027-06-01T00:00:00Z"}, time.Time{}, time.Date(2027, 6, 1, 0, 0, 0, 0, time.UTC)},
		{[]string{"--expires", "1h30m"}, time.Time{}, now.Add(90 * time.Minute)},
		{[]string{"--expires", "1.5d"}, time.Time{}, now.Add(36 * time.Hour)},
		{[]string{"--not-before", "2d", "--expires", "3d"}, now.Add(48 * time.Hour), now.Add(72 * time.Hour)},
		{[]string{"--not-before", "2020-01-01T00:00:00Z"}, time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), time.Time{}},
	} {
		key := skNewKey(t, cli, append([]string{"--keys", keys, "--scope", "a:b"}, tc.args...)...)
		id, _ := keyring.ParseKey(key)
		r := skRecord(t, keys, id)
		var nb, ex time.Time
		if r.NotBefore != nil {
			nb = *r.NotBefore
		}
		if r.ExpiresAt != nil {
			ex = *r.ExpiresAt
		}
		if !nb.Equal(tc.nb) || !ex.Equal(tc.ex) {
			t.Errorf("%v: not_before %v expires_at %v, want %v %v", tc.args, nb, ex, tc.nb, tc.ex)
		}
	}
}

func TestScopedKeyNewErrors(t *testing.T) {
	p := skNewPKI(t)
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys.json")
	skNewKey(t, nil, "--keys", keys, "--scope", "a:read")
	before, _ := os.ReadFile(keys)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cli := skFixedCLI(now)
	base := []string{"new", "--keys", keys, "--scope", "gifts:read"}
	for _, tc := range []struct {
		want string
		args []string
	}{
		{"no store", []string{"new", "--scope", "a:b"}},
		{"no store", []string{"new", "--keys", "", "--scope", "a:b"}},
		{"not both", []string{"new", "--keys", keys, "--redis", "redis://127.0.0.1:6379/0", "--scope", "a:b"}},
		{"want redis:// or rediss://", []string{"new", "--redis", "http://127.0.0.1:6379/0", "--scope", "a:b"}},
		{"at least one --scope", []string{"new", "--keys", keys}},
		{`scope ""`, []string{"new", "--keys", keys, "--scope", ""}},
		{`scope "Gifts:Read"`, []string{"new", "--keys", keys, "--scope", "Gifts:Read"}},
		{`scope "gifts"`, []string{"new", "--keys", keys, "--scope", "gifts"}},
		{`scope "gifts:read:x"`, []string{"new", "--keys", keys, "--scope", "gifts:read:x"}},
		{`scope "read_only "`, []string{"new", "--keys", keys, "--scope", "read_only "}},
		{`scope ""`, []string{"new", "--keys", keys, "--scope", "a:b,"}},
		{"--account", append(base, "--account", "")},
		{"--account", append(base, "--account", "acme us")},
		{"--account", append(base, "--account", "a,,b")},
		{`give it alone`, append(base, "--account", "*", "--account", "acme")},
		{"--name", append(base, "--name", "two\nlines")},
		{"--cert", append(base, "--cert", p.missing)},
		{"no PEM CERTIFICATE", append(base, "--cert", p.emptyPEM)},
		{"no PEM CERTIFICATE", append(base, "--cert", p.keyFile)},
		{"--cert " + p.garbage, append(base, "--cert", p.garbage)},
		{"--spki", append(base, "--spki", p.missing)},
		{"no PEM CERTIFICATE or PUBLIC KEY", append(base, "--spki", p.keyFile)},
		{"--spki " + p.garbage, append(base, "--spki", p.garbage)},
		{"--spiffe", append(base, "--spiffe", "not a uri")},
		{"--spiffe", append(base, "--spiffe", "acme.test/hris")},
		{"--spiffe", append(base, "--spiffe", "spiffe://acme.test/a b")},
		{"OpenSSL", append(base, "--subject", "/CN=hris/O=Acme")},
		{"space after a separator", append(base, "--subject", "CN=hris, O=Acme")},
		{"--subject", append(base, "--subject", "hris")},
		{"--subject", append(base, "--subject", " CN=hris")},
		{"never binds alone", append(base, "--issuer", p.caFile)},
		{"--issuer", append(base, "--spiffe", "spiffe://a.test/x", "--issuer", p.missing)},
		{"give a pin", append(base, "--no-secret")},
		{"never binds alone", append(base, "--no-secret", "--issuer", p.caFile)},
		{"--not-before", append(base, "--not-before", "tomorrow")},
		{"--not-before", append(base, "--not-before", "-1h")},
		{"--expires", append(base, "--expires", "2027-13-01T00:00:00Z")},
		{"--expires", append(base, "--expires", "-1h")},
		{"--expires", append(base, "--expires", "0s")},
		{"already in the past", append(base, "--expires", "2026-03-01T11:59:59Z")},
		{"later than --not-before", append(base, "--not-before", "2d", "--expires", "1d")},
		{"unknown flag: --bogus", append(base, "--bogus")},
		{"flag needs an argument", append(base, "--expires")},
		{"takes no arguments", append(base, "extra")},
		{"unknown command", []string{"bogus"}},
	} {
		skFail(t, cli, tc.want, tc.args...)
	}
	if after, _ := os.ReadFile(keys); !bytes.Equal(before, after) {
		t.Error("a failed new changed the keys file")
	}

	// An unreadable store: invalid file, directory, missing directory.
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"keys":[{"id":"x"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	skFail(t, cli, "refusing to edit an invalid file", "new", "--keys", bad, "--scope", "a:b")
	skFail(t, cli, "not a regular file", "new", "--keys", dir, "--scope", "a:b")
	skFail(t, cli, "no such file or directory", "new", "--keys", filepath.Join(dir, "nope", "keys.json"), "--scope", "a:b")
	if data, _ := os.ReadFile(bad); string(data) != `{"keys":[{"id":"x"}]}` {
		t.Error("invalid file rewritten")
	}
}

func TestScopedKeyList(t *testing.T) {
	p := skNewPKI(t)
	keys := filepath.Join(t.TempDir(), "keys.json")
	if out := skOK(t, nil, "new", "--keys", keys, "--scope", "a:b", "--no-secret", "--cert", p.leafFile); !keyring.ValidID(strings.TrimSpace(out)) {
		t.Fatal(out)
	}
	k1 := skNewKey(t, nil, "--keys", keys, "--scope", "gifts:read", "--name", "A&B <x>")
	id1, _ := keyring.ParseKey(k1)
	skOK(t, nil, "rotate", "--keys", keys, id1, "--grace", "1h")
	skNewKey(t, nil, "--keys", keys, "--scope", "full_access", "--account", "acme")

	out := skOK(t, nil, "list", "--keys", keys)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	recs := skLoad(t, keys)
	if len(lines) != len(recs) || len(lines) != 3 {
		t.Fatalf("%d lines for %d records:\n%s", len(lines), len(recs), out)
	}
	for i, line := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		if _, has := m["hash"]; has {
			t.Errorf("line %d shows the hash", i)
		}
		if _, has := m["previous_hash"]; has {
			t.Errorf("line %d shows the previous hash", i)
		}
		got, err := keyring.DecodeRecord([]byte(line))
		if err != nil {
			t.Fatal(err)
		}
		want := *recs[i]
		want.Hash, want.PreviousHash = "", ""
		if !reflect.DeepEqual(*got, want) {
			t.Errorf("line %d = %+v, want %+v", i, *got, want)
		}
	}
	if !strings.Contains(lines[1], `"name":"A&B <x>"`) || !strings.Contains(lines[1], `"previous_expires_at":`) {
		t.Errorf("line 1: %s", lines[1])
	}
	if strings.Contains(out, "sha256:") || strings.Contains(out, "sg_") {
		t.Error("list shows a hash or a key")
	}

	empty := filepath.Join(t.TempDir(), "empty.json")
	if err := os.WriteFile(empty, []byte(`{"keys": []}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := skOK(t, nil, "list", "--keys", empty); out != "" {
		t.Errorf("empty store listed %q", out)
	}
	skFail(t, nil, "no such file", "list", "--keys", filepath.Join(t.TempDir(), "missing.json"))
	skFail(t, nil, "no store", "list")
	skFail(t, nil, "connection refused", "list", "--redis", "redis://127.0.0.1:1/0")
	skFail(t, nil, "takes no arguments", "list", "--keys", keys, "extra")
}

func TestScopedKeyRevoke(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "keys.json")
	var events []scopedKeyChange
	cli := &scopedKeyCLI{now: time.Now, audit: func(e scopedKeyChange) { events = append(events, e) }}
	key := skNewKey(t, cli, "--keys", keys, "--scope", "a:b")
	other := skNewKey(t, cli, "--keys", keys, "--scope", "a:b")
	id, _ := keyring.ParseKey(key)
	otherID, _ := keyring.ParseKey(other)

	if out := skOK(t, cli, "revoke", "--keys", keys, id); out != "" {
		t.Errorf("revoke printed %q", out)
	}
	r := skRecord(t, keys, id)
	if !r.Disabled || r.Version != 2 || r.Hash != keyring.FormatHash(keyring.HashKey(key)) {
		t.Errorf("after revoke: %+v", r)
	}
	if o := skRecord(t, keys, otherID); o.Disabled || o.Version != 1 {
		t.Errorf("other key changed: %+v", o)
	}
	fi1, _ := os.Stat(keys)

	// Twice: exit 0, no change at all.
	time.Sleep(10 * time.Millisecond)
	res := skRun(t, cli, "revoke", "--keys", keys, id)
	if res.err != nil || res.stdout != "" || !strings.Contains(res.stderr, "already revoked") {
		t.Errorf("second revoke: %+v", res)
	}
	fi2, _ := os.Stat(keys)
	if !os.SameFile(fi1, fi2) || !fi1.ModTime().Equal(fi2.ModTime()) {
		t.Error("second revoke rewrote the file")
	}
	if r := skRecord(t, keys, id); r.Version != 2 {
		t.Errorf("version %d after a second revoke", r.Version)
	}

	wantActions := []string{"new", "new", "revoke"}
	if len(events) != len(wantActions) {
		t.Fatalf("audit events %+v", events)
	}
	for i, e := range events {
		if e.Action != wantActions[i] || e.Store != "file "+keys || e.Time.IsZero() {
			t.Errorf("event %d: %+v", i, e)
		}
	}
	if events[2].ID != id || events[2].Version != 2 {
		t.Errorf("revoke event %+v", events[2])
	}

	skFail(t, cli, "unknown key id aaaaaaaaaaaaaaaa", "revoke", "--keys", keys, "aaaaaaaaaaaaaaaa")
	skFail(t, cli, "invalid key id", "revoke", "--keys", keys, "AAAAAAAAAAAAAAAA")
	skFail(t, cli, "exactly one key id", "revoke", "--keys", keys)
	skFail(t, cli, "exactly one key id", "revoke", "--keys", keys, id, otherID)
	skFail(t, cli, "no store", "revoke", id)
	skFail(t, cli, "not the key itself", "revoke", "--keys", keys, other)
	if res := skRun(t, cli, "revoke", "--keys", keys, other); strings.Contains(res.stderr, other) || strings.Contains(res.stderr, other[3:]) {
		t.Error("an error message echoed a key")
	}
	skFail(t, cli, "no such file", "revoke", "--keys", filepath.Join(t.TempDir(), "missing.json"), id)
	if len(events) != 3 {
		t.Errorf("failed commands produced audit events: %+v", events[3:])
	}
}

func TestScopedKeyRotate(t *testing.T) {
	p := skNewPKI(t)
	keys := filepath.Join(t.TempDir(), "keys.json")
	now := time.Date(2026, 3, 1, 12, 0, 0, 250, time.UTC)
	cli := skFixedCLI(now)
	old := skNewKey(t, cli, "--keys", keys, "--scope", "gifts:read", "--account", "acme", "--spiffe", "spiffe://acme.test/hris", "--issuer", p.caFile)
	id, _ := keyring.ParseKey(old)
	before := skRecord(t, keys, id)

	// With a grace period: the old secret works until it ends.
	out := skOK(t, cli, "rotate", "--keys", keys, id, "--grace", "10m")
	newKey := strings.TrimSuffix(out, "\n")
	if newID, ok := keyring.ParseKey(newKey); !ok || newID != id || newKey == old || strings.Count(out, "\n") != 1 {
		t.Fatalf("rotate printed %q", out)
	}
	r := skRecord(t, keys, id)
	until := time.Date(2026, 3, 1, 12, 10, 1, 0, time.UTC)
	if r.Hash != keyring.FormatHash(keyring.HashKey(newKey)) || r.PreviousHash != before.Hash ||
		r.PreviousExpiresAt == nil || !r.PreviousExpiresAt.Equal(until) || r.Version != 2 {
		t.Errorf("after rotate: %+v", r)
	}
	after := *r
	after.Hash, after.PreviousHash, after.PreviousExpiresAt, after.Version = before.Hash, "", nil, 1
	if !reflect.DeepEqual(after, *before) {
		t.Errorf("rotate changed more than the secret:\n%+v\n%+v", after, *before)
	}
	k, err := keyring.Compile(r)
	if err != nil {
		t.Fatal(err)
	}
	oldSum, newSum := keyring.HashKey(old), keyring.HashKey(newKey)
	if ok, prev := k.CheckSecret(&oldSum, now.Add(9*time.Minute)); !ok || !prev {
		t.Error("old secret refused during the grace period")
	}
	if ok, _ := k.CheckSecret(&oldSum, until); ok {
		t.Error("old secret accepted after the grace period")
	}
	if ok, prev := k.CheckSecret(&newSum, now); !ok || prev {
		t.Error("new secret refused")
	}

	// Again during the grace period, with the 'd' unit: a warning; the
	// first secret is gone.
	res := skRun(t, cli, "rotate", "--keys", keys, id, "--grace", "1d")
	third := strings.TrimSpace(res.stdout)
	if res.err != nil || !strings.Contains(res.stderr, "warning: ") || strings.Contains(res.stderr, "sg_") {
		t.Fatalf("second rotate: %+v", res)
	}
	r = skRecord(t, keys, id)
	if r.PreviousHash != keyring.FormatHash(newSum) || !r.PreviousExpiresAt.Equal(time.Date(2026, 3, 2, 12, 0, 1, 0, time.UTC)) || r.Version != 3 {
		t.Errorf("after second rotate: %+v", r)
	}

	// Default grace 0: no previous secret kept.
	fourth := strings.TrimSpace(skOK(t, skFixedCLI(now.Add(48*time.Hour)), "rotate", "--keys", keys, id))
	r = skRecord(t, keys, id)
	if r.PreviousHash != "" || r.PreviousExpiresAt != nil || r.Version != 4 || r.Hash != keyring.FormatHash(keyring.HashKey(fourth)) || fourth == third {
		t.Errorf("after rotate without grace: %+v", r)
	}

	principal := strings.TrimSpace(skOK(t, cli, "new", "--keys", keys, "--scope", "a:b", "--no-secret", "--cert", p.leafFile))
	skFail(t, cli, "certificate principal", "rotate", "--keys", keys, principal)
	skOK(t, cli, "revoke", "--keys", keys, id)
	skFail(t, cli, "is revoked", "rotate", "--keys", keys, id)
	skFail(t, cli, "--grace", "rotate", "--keys", keys, id, "--grace", "-1h")
	skFail(t, cli, "--grace", "rotate", "--keys", keys, id, "--grace", "soon")
	skFail(t, cli, "--grace", "rotate", "--keys", keys, id, "--grace", "")
	skFail(t, cli, "unknown key id", "rotate", "--keys", keys, "bbbbbbbbbbbbbbbb")
	skFail(t, cli, "exactly one key id", "rotate", "--keys", keys)
	skFail(t, cli, "not the key itself", "rotate", "--keys", keys, fourth)
	skFail(t, cli, "connection refused", "rotate", "--redis", "redis://127.0.0.1:1/0", id)
	if r := skRecord(t, keys, id); r.Version != 5 {
		t.Errorf("failed rotations changed the record: %+v", r)
	}
}

func TestScopedKeyHelp(t *testing.T) {
	for _, args := range [][]string{nil, {"--help"}, {"new", "--help"}, {"rotate", "-h"}} {
		r := skRun(t, nil, args...)
		if r.err != nil || r.stderr != "" || !strings.Contains(r.stdout, "Usage:") {
			t.Errorf("%v: %+v", args, r)
		}
	}
	r := skRun(t, nil, "new", "--help")
	for _, flag := range []string{"--keys", "--redis", "--scope", "--name", "--account", "--pii", "--cert", "--spki", "--spiffe", "--subject", "--issuer", "--not-before", "--expires", "--no-secret"} {
		if !strings.Contains(r.stdout, flag) {
			t.Errorf("new --help lacks %s", flag)
		}
	}
}

func TestScopedKeySubjectCheckAcceptsGoForms(t *testing.T) {
	for _, name := range []pkix.Name{
		{CommonName: "hris"},
		{CommonName: "a, b", Organization: []string{"Acme, Inc."}, OrganizationalUnit: []string{" lead"}},
		{CommonName: "x+y", Country: []string{"US"}, Locality: []string{"São Paulo"}},
		{CommonName: `back\slash "q" #1`},
	} {
		if err := skCheckSubject(name.String()); err != nil {
			t.Errorf("%q: %v", name.String(), err)
		}
	}
}

func skMust[T any](v T, err error) T { return testpki.Must(v, err) }

func skSHA256(b []byte) [32]byte {
	var c x509.Certificate
	c.RawSubjectPublicKeyInfo = b
	return keyring.SPKISHA256(&c)
}
