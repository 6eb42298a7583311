package testpki

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func verify(t *testing.T, ca *CA, l *Leaf, usage x509.ExtKeyUsage, at time.Time) error {
	t.Helper()
	inter := x509.NewCertPool()
	for _, c := range l.Chain {
		inter.AddCert(c)
	}
	_, err := l.Cert.Verify(x509.VerifyOptions{
		Roots: ca.Pool(), Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{usage}, CurrentTime: at,
	})
	return err
}

func TestClientAndServer(t *testing.T) {
	ca := Must(NewCA("Test Root"))
	now := time.Now()

	srv := Must(ca.Server("localhost", "api.acme.test", "127.0.0.1"))
	if err := verify(t, ca, srv, x509.ExtKeyUsageServerAuth, now); err != nil {
		t.Fatalf("server chain: %v", err)
	}
	for _, h := range []string{"localhost", "api.acme.test", "127.0.0.1"} {
		if err := srv.Cert.VerifyHostname(h); err != nil {
			t.Errorf("server cert for %s: %v", h, err)
		}
	}
	if err := verify(t, ca, srv, x509.ExtKeyUsageClientAuth, now); err == nil {
		t.Error("server-only certificate verified for clientAuth")
	}

	hris := Must(ca.Client("hris", URIs("spiffe://acme.test/hris"), Org("Acme")))
	if err := verify(t, ca, hris, x509.ExtKeyUsageClientAuth, now); err != nil {
		t.Fatalf("client chain: %v", err)
	}
	if got := hris.Cert.Subject.String(); got != "CN=hris,O=Acme" {
		t.Errorf("subject = %q", got)
	}
	if len(hris.Cert.URIs) != 1 || hris.Cert.URIs[0].String() != "spiffe://acme.test/hris" {
		t.Errorf("URIs = %v", hris.Cert.URIs)
	}

	two := Must(ca.Client("two", URIs("spiffe://acme.test/a", "spiffe://acme.test/b")))
	if len(two.Cert.URIs) != 2 {
		t.Errorf("URIs = %v", two.Cert.URIs)
	}
	none := Must(ca.Client("none"))
	if len(none.Cert.URIs) != 0 {
		t.Errorf("URIs = %v", none.Cert.URIs)
	}

	srvOnly := Must(ca.Client("svc", ServerAuthOnly()))
	if err := verify(t, ca, srvOnly, x509.ExtKeyUsageClientAuth, now); err == nil {
		t.Error("serverAuth-only client certificate verified for clientAuth")
	}
	noEKU := Must(ca.Client("any", NoEKU()))
	if len(noEKU.Cert.ExtKeyUsage) != 0 {
		t.Errorf("EKU = %v", noEKU.Cert.ExtKeyUsage)
	}
	if err := verify(t, ca, noEKU, x509.ExtKeyUsageClientAuth, now); err != nil {
		t.Errorf("no-EKU certificate: %v", err)
	}

	if err := verify(t, ca, Must(ca.Client("old", Expired())), x509.ExtKeyUsageClientAuth, now); err == nil {
		t.Error("expired certificate verified")
	}
	if err := verify(t, ca, Must(ca.Client("new", NotYetValid())), x509.ExtKeyUsageClientAuth, now); err == nil {
		t.Error("not-yet-valid certificate verified")
	}
	long := Must(ca.Client("long", ValidFor(20*365*24*time.Hour)))
	if err := verify(t, ca, long, x509.ExtKeyUsageClientAuth, now.Add(19*365*24*time.Hour)); err == nil {
		// The CA (10 years) expires first: the chain must fail then.
		t.Error("leaf verified after its CA expired")
	}
}

func TestIntermediate(t *testing.T) {
	root := Must(NewCA("Root"))
	inter := Must(root.Intermediate("Issuing CA"))
	leaf := Must(inter.Client("svc", URIs("spiffe://acme.test/svc")))
	if len(leaf.Chain) != 1 || !leaf.Chain[0].Equal(inter.Cert) {
		t.Fatalf("chain = %v", leaf.Chain)
	}
	if err := verify(t, inter, leaf, x509.ExtKeyUsageClientAuth, time.Now()); err != nil {
		t.Fatalf("leaf via intermediate: %v", err)
	}
	if inter.Root() != root {
		t.Error("Root() is not the root")
	}
	if n := len(leaf.TLSCertificate().Certificate); n != 2 {
		t.Errorf("tls.Certificate has %d certs, want 2", n)
	}
}

func TestPins(t *testing.T) {
	ca := Must(NewCA("Root"))
	a := Must(ca.Client("a"))
	sum := sha256.Sum256(a.Cert.Raw)
	if a.SHA256Hex() != hex.EncodeToString(sum[:]) {
		t.Error("leaf pin")
	}
	spki, err := x509.MarshalPKIXPublicKey(a.Cert.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	sum = sha256.Sum256(spki)
	if a.SPKISHA256Hex() != hex.EncodeToString(sum[:]) {
		t.Error("SPKI pin")
	}

	// Re-issue with the same key: same SPKI, different leaf.
	b := Must(ca.Client("a", WithKey(a.Key)))
	if b.SPKISHA256Hex() != a.SPKISHA256Hex() || b.SHA256Hex() == a.SHA256Hex() {
		t.Error("re-issue with the same key should keep the SPKI pin only")
	}
}

func TestRogue(t *testing.T) {
	ca := Must(NewCA("Root"))
	victim := Must(ca.Client("hris", URIs("spiffe://acme.test/hris"), Org("Acme"), OU("HR")))
	rogue := Must(Rogue(victim))
	if rogue.Cert.Subject.String() != victim.Cert.Subject.String() {
		t.Errorf("subject %q != %q", rogue.Cert.Subject, victim.Cert.Subject)
	}
	if string(rogue.Cert.RawSubject) != string(victim.Cert.RawSubject) {
		t.Error("raw subject differs")
	}
	if len(rogue.Cert.URIs) != 1 || rogue.Cert.URIs[0].String() != "spiffe://acme.test/hris" {
		t.Errorf("URIs = %v", rogue.Cert.URIs)
	}
	if rogue.SPKISHA256Hex() == victim.SPKISHA256Hex() {
		t.Error("rogue reused the victim's key")
	}
	c := rogue.Cert
	if err := c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature); err != nil || c.IsCA {
		t.Errorf("want a self-signed end-entity certificate: %v", err)
	}
	if err := verify(t, ca, rogue, x509.ExtKeyUsageClientAuth, time.Now()); err == nil {
		t.Error("rogue verified against the real CA")
	}
	// A second CA with the same name minting the same identity verifies
	// against its own pool: that is what issuer pins are for.
	other := Must(NewCA("Root"))
	twin := Must(other.Issue(Like(victim.Cert)))
	if err := verify(t, other, twin, x509.ExtKeyUsageClientAuth, time.Now()); err != nil {
		t.Errorf("twin: %v", err)
	}
	if twin.Cert.Subject.String() != victim.Cert.Subject.String() || other.SPKISHA256Hex() == ca.SPKISHA256Hex() {
		t.Error("twin should copy the subject under a different issuer key")
	}
}

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	ca := Must(NewCA("Root"))
	inter := Must(ca.Intermediate("Issuing"))
	leaf := Must(inter.Client("c"))
	certFile, keyFile, err := leaf.Write(dir, "client")
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(certFile) != "client.pem" || filepath.Base(keyFile) != "client-key.pem" {
		t.Errorf("names %s %s", certFile, keyFile)
	}
	if st, err := os.Stat(keyFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode: %v %v", st, err)
	}
	certs, err := ReadCertsFile(certFile)
	if err != nil || len(certs) != 2 || !certs[0].Equal(leaf.Cert) || !certs[1].Equal(inter.Cert) {
		t.Fatalf("read back %d certs, %v", len(certs), err)
	}
	if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
		t.Errorf("LoadX509KeyPair: %v", err)
	}
	caFile, err := ca.Write(dir, "ca", true)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := ReadCertFile(caFile); err != nil || !c.Equal(ca.Cert) {
		t.Errorf("CA read back: %v", err)
	}
	bundle, err := WriteBundle(dir, "bundle", ca, Must(NewCA("Other")))
	if err != nil {
		t.Fatal(err)
	}
	if certs, err := ReadCertsFile(bundle); err != nil || len(certs) != 2 {
		t.Errorf("bundle: %d certs, %v", len(certs), err)
	}
	for _, bad := range []string{"x.crt", "x.key", "x.pem", "a/b", ""} {
		if _, _, err := leaf.Write(dir, bad); err == nil {
			t.Errorf("Write(%q) accepted", bad)
		}
	}
}

// TestHandshake runs a real mTLS handshake with the generated material.
func TestHandshake(t *testing.T) {
	root := Must(NewCA("Root"))
	inter := Must(root.Intermediate("Issuing"))
	srvLeaf := Must(root.Server("localhost", "127.0.0.1"))
	client := Must(inter.Client("hris", URIs("spiffe://acme.test/hris")))

	var gotPin string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.VerifiedChains) > 0 {
			gotPin = LeafSHA256Hex(r.TLS.VerifiedChains[0][0])
		}
		io.WriteString(w, "ok")
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the rogue handshake fails on purpose
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{srvLeaf.TLSCertificate()},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    root.Pool(),
	}
	srv.StartTLS()
	defer srv.Close()

	do := func(c *Leaf) error {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: root.Pool(), ServerName: "localhost"}}
		if c != nil {
			cert := c.TLSCertificate()
			tr.TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				return &cert, nil
			}
		}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get(srv.URL)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
	if err := do(client); err != nil {
		t.Fatalf("handshake with trusted client: %v", err)
	}
	if gotPin != client.SHA256Hex() {
		t.Errorf("server saw pin %q, want %q", gotPin, client.SHA256Hex())
	}
	if err := do(Must(Rogue(client))); err == nil {
		t.Error("rogue client accepted")
	}
}
