// Package testpki makes real X.509 material for tests and demos: a root CA,
// intermediates, server certificates and client certificates (ECDSA P-256,
// crypto/x509 only), plus the pins scoped_auth binds keys to (leaf SHA-256
// and RFC 7469 SPKI SHA-256).
//
// Every constructor returns an error; wrap calls in Must in tests:
//
//	ca := testpki.Must(testpki.NewCA("Test Root"))
//	srv := testpki.Must(ca.Server("localhost", "127.0.0.1"))
//	hris := testpki.Must(ca.Client("hris", testpki.URIs("spiffe://acme.test/hris")))
//	rogue := testpki.Must(testpki.Rogue(hris)) // self-signed, same subject and URI
//
// Files are written with ".pem" names only: caddytest rewrites any path in a
// test config that ends in ".crt" or ".key".
package testpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Must panics if err is not nil and returns v otherwise. A panic fails the
// running test with a stack trace, which is what a broken fixture deserves.
func Must[T any](v T, err error) T {
	if err != nil {
		panic("testpki: " + err.Error())
	}
	return v
}

// Default validity of certificates made without an explicit Validity: one
// hour in the past (clock skew) to one day ahead; CAs get ten years.
const (
	DefaultBackdate  = time.Hour
	DefaultLeafLife  = 24 * time.Hour
	DefaultCALife    = 10 * 365 * 24 * time.Hour
	expiredAgo       = 24 * time.Hour
	notYetValidAhead = 24 * time.Hour
)

// CA is a certificate authority: a root (Parent == nil) or an intermediate.
type CA struct {
	Cert   *x509.Certificate
	Key    crypto.Signer
	Parent *CA
}

// Leaf is an end-entity certificate with its key and the intermediates
// between it and the root (leaf first order, root excluded), as a TLS peer
// sends them.
type Leaf struct {
	Cert  *x509.Certificate
	Key   crypto.Signer
	Chain []*x509.Certificate
}

// Options describes a certificate to issue. Build it with Option functions.
type Options struct {
	Subject pkix.Name
	// RawSubject, when set (by Like), is the DER subject written as is, so
	// a copy is byte-identical whatever the attribute order of the original.
	RawSubject []byte
	DNSNames   []string
	IPs        []net.IP
	URIs       []*url.URL
	Emails     []string
	EKU        []x509.ExtKeyUsage // nil: the kind's default (clientAuth, serverAuth)
	NoEKU      bool               // omit the extended key usage extension
	NotBefore  time.Time          // zero: now - DefaultBackdate
	NotAfter   time.Time          // zero: NotBefore + DefaultLeafLife (+ backdate)
	Key        crypto.Signer      // nil: a fresh P-256 key
	Serial     *big.Int           // nil: random 127-bit
	err        error
}

// Option changes Options.
type Option func(*Options)

// CN sets the subject common name.
func CN(cn string) Option {
	return func(o *Options) { o.Subject.CommonName, o.RawSubject = cn, nil }
}

// Subject replaces the whole subject; a CommonName already set by the
// constructor is kept when name has none.
func Subject(name pkix.Name) Option {
	return func(o *Options) {
		cn := o.Subject.CommonName
		o.Subject, o.RawSubject = name, nil
		if o.Subject.CommonName == "" {
			o.Subject.CommonName = cn
		}
	}
}

// Org sets the subject organization(s).
func Org(orgs ...string) Option {
	return func(o *Options) { o.Subject.Organization, o.RawSubject = orgs, nil }
}

// OU sets the subject organizational unit(s).
func OU(units ...string) Option {
	return func(o *Options) { o.Subject.OrganizationalUnit, o.RawSubject = units, nil }
}

// URIs adds URI SANs (e.g. SPIFFE IDs). An unparsable URI makes the issuing
// call fail.
func URIs(uris ...string) Option {
	return func(o *Options) {
		for _, s := range uris {
			u, err := url.Parse(s)
			if err != nil {
				o.err = fmt.Errorf("URI SAN %q: %w", s, err)
				return
			}
			o.URIs = append(o.URIs, u)
		}
	}
}

// DNS adds DNS SANs.
func DNS(names ...string) Option {
	return func(o *Options) { o.DNSNames = append(o.DNSNames, names...) }
}

// IPs adds IP SANs.
func IPs(ips ...net.IP) Option { return func(o *Options) { o.IPs = append(o.IPs, ips...) } }

// Emails adds e-mail SANs.
func Emails(emails ...string) Option {
	return func(o *Options) { o.Emails = append(o.Emails, emails...) }
}

// EKU sets the extended key usages (replacing the kind's default).
func EKU(usages ...x509.ExtKeyUsage) Option {
	return func(o *Options) { o.EKU, o.NoEKU = usages, false }
}

// ServerAuthOnly gives a client certificate only the serverAuth usage, which
// Go's (and Caddy's) client verification rejects.
func ServerAuthOnly() Option { return EKU(x509.ExtKeyUsageServerAuth) }

// NoEKU omits the extended key usage extension (Go treats that as "any").
func NoEKU() Option { return func(o *Options) { o.EKU, o.NoEKU = nil, true } }

// Validity sets NotBefore and NotAfter.
func Validity(notBefore, notAfter time.Time) Option {
	return func(o *Options) { o.NotBefore, o.NotAfter = notBefore, notAfter }
}

// ValidFor makes the certificate valid from an hour ago for d.
func ValidFor(d time.Duration) Option {
	return func(o *Options) {
		nb := time.Now().Add(-DefaultBackdate).Truncate(time.Second)
		o.NotBefore, o.NotAfter = nb, nb.Add(DefaultBackdate+d)
	}
}

// Expired makes a certificate that expired a day ago.
func Expired() Option {
	return func(o *Options) {
		now := time.Now().Truncate(time.Second)
		o.NotBefore, o.NotAfter = now.Add(-2*expiredAgo), now.Add(-expiredAgo)
	}
}

// NotYetValid makes a certificate that becomes valid in a day.
func NotYetValid() Option {
	return func(o *Options) {
		now := time.Now().Truncate(time.Second)
		o.NotBefore, o.NotAfter = now.Add(notYetValidAhead), now.Add(2*notYetValidAhead)
	}
}

// WithKey issues the certificate for an existing key, e.g. to re-issue a
// certificate with the same SPKI (same SPKI pin, different leaf pin).
func WithKey(key crypto.Signer) Option { return func(o *Options) { o.Key = key } }

// Serial sets the serial number.
func Serial(n *big.Int) Option { return func(o *Options) { o.Serial = n } }

// Like copies the subject, SANs and extended key usages of c, so a rogue or
// second-CA certificate can impersonate it. Validity and key are not copied.
func Like(c *x509.Certificate) Option {
	return func(o *Options) {
		o.Subject = c.Subject
		o.RawSubject = append([]byte(nil), c.RawSubject...)
		o.DNSNames = append([]string(nil), c.DNSNames...)
		o.IPs = append([]net.IP(nil), c.IPAddresses...)
		o.Emails = append([]string(nil), c.EmailAddresses...)
		o.URIs = nil
		for _, u := range c.URIs {
			cp := *u
			o.URIs = append(o.URIs, &cp)
		}
		if len(c.ExtKeyUsage) == 0 {
			o.EKU, o.NoEKU = nil, true
		} else {
			o.EKU, o.NoEKU = append([]x509.ExtKeyUsage(nil), c.ExtKeyUsage...), false
		}
	}
}

// NewKey returns a fresh ECDSA P-256 key.
func NewKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// NewCA makes a self-signed root CA named name (its CommonName).
func NewCA(name string, opts ...Option) (*CA, error) {
	o := caOptions(name, opts)
	if o.err != nil {
		return nil, o.err
	}
	tmpl, key, err := template(o, true)
	if err != nil {
		return nil, err
	}
	cert, err := sign(tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Intermediate makes a CA named name signed by ca.
func (ca *CA) Intermediate(name string, opts ...Option) (*CA, error) {
	o := caOptions(name, opts)
	if o.err != nil {
		return nil, o.err
	}
	tmpl, key, err := template(o, true)
	if err != nil {
		return nil, err
	}
	cert, err := sign(tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, Parent: ca}, nil
}

func caOptions(name string, opts []Option) *Options {
	o := &Options{Subject: pkix.Name{CommonName: name}}
	nb := time.Now().Add(-DefaultBackdate).Truncate(time.Second)
	o.NotBefore, o.NotAfter = nb, nb.Add(DefaultCALife)
	for _, opt := range opts {
		opt(o)
	}
	return o
}

// Root returns the root of ca's chain.
func (ca *CA) Root() *CA {
	for ca.Parent != nil {
		ca = ca.Parent
	}
	return ca
}

// chain lists ca and its ancestors below the root (leaf-side first).
func (ca *CA) chain() []*x509.Certificate {
	var out []*x509.Certificate
	for c := ca; c != nil && c.Parent != nil; c = c.Parent {
		out = append(out, c.Cert)
	}
	return out
}

// Pool returns a pool holding only the root of ca's chain (what a server's
// trust_pool file would contain).
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Root().Cert)
	return p
}

// Issue signs a certificate described by opts. Without an EKU option it has
// no extended key usage extension; Client and Server set their own default.
func (ca *CA) Issue(opts ...Option) (*Leaf, error) {
	return ca.issue(nil, opts)
}

// Client issues a client certificate with CommonName cn and EKU clientAuth
// (unless an option says otherwise).
func (ca *CA) Client(cn string, opts ...Option) (*Leaf, error) {
	return ca.issue([]x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, append([]Option{CN(cn)}, opts...))
}

// Server issues a server certificate (EKU serverAuth) for names: each is an
// IP SAN if it parses as an IP, else a DNS SAN. The first name is the CN.
func (ca *CA) Server(names ...string) (*Leaf, error) {
	return ca.ServerWith(names)
}

// ServerWith is Server with options.
func (ca *CA) ServerWith(names []string, opts ...Option) (*Leaf, error) {
	if len(names) == 0 {
		return nil, errors.New("server certificate needs at least one name")
	}
	base := []Option{CN(names[0])}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			base = append(base, IPs(ip))
		} else {
			base = append(base, DNS(n))
		}
	}
	return ca.issue([]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, append(base, opts...))
}

func (ca *CA) issue(defaultEKU []x509.ExtKeyUsage, opts []Option) (*Leaf, error) {
	o := &Options{}
	for _, opt := range opts {
		opt(o)
	}
	if o.err != nil {
		return nil, o.err
	}
	if o.EKU == nil && !o.NoEKU {
		o.EKU = defaultEKU
	}
	tmpl, key, err := template(o, false)
	if err != nil {
		return nil, err
	}
	cert, err := sign(tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, err
	}
	return &Leaf{Cert: cert, Key: key, Chain: ca.chain()}, nil
}

// SelfSigned makes a self-signed end-entity certificate (not a CA) with
// EKU clientAuth by default, as an attacker without access to a trusted CA
// would.
func SelfSigned(opts ...Option) (*Leaf, error) {
	o := &Options{}
	for _, opt := range opts {
		opt(o)
	}
	if o.err != nil {
		return nil, o.err
	}
	if o.EKU == nil && !o.NoEKU {
		o.EKU = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	tmpl, key, err := template(o, false)
	if err != nil {
		return nil, err
	}
	cert, err := sign(tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	return &Leaf{Cert: cert, Key: key}, nil
}

// Rogue makes a self-signed certificate copying victim's subject, SANs and
// EKU, with a fresh key (or one given with WithKey).
func Rogue(victim *Leaf, opts ...Option) (*Leaf, error) {
	return SelfSigned(append([]Option{Like(victim.Cert)}, opts...)...)
}

func template(o *Options, isCA bool) (*x509.Certificate, crypto.Signer, error) {
	key := o.Key
	if key == nil {
		k, err := NewKey()
		if err != nil {
			return nil, nil, err
		}
		key = k
	}
	serial := o.Serial
	if serial == nil {
		var err error
		serial, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
		if err != nil {
			return nil, nil, err
		}
		serial.Add(serial, big.NewInt(1))
	}
	nb, na := o.NotBefore, o.NotAfter
	if nb.IsZero() {
		nb = time.Now().Add(-DefaultBackdate).Truncate(time.Second)
	}
	if na.IsZero() {
		na = nb.Add(DefaultBackdate + DefaultLeafLife)
	}
	if !na.After(nb) {
		return nil, nil, fmt.Errorf("NotAfter %s is not after NotBefore %s", na, nb)
	}
	t := &x509.Certificate{
		SerialNumber:   serial,
		Subject:        o.Subject,
		RawSubject:     o.RawSubject,
		NotBefore:      nb,
		NotAfter:       na,
		DNSNames:       o.DNSNames,
		IPAddresses:    o.IPs,
		URIs:           o.URIs,
		EmailAddresses: o.Emails,
		ExtKeyUsage:    o.EKU,
	}
	if isCA {
		t.IsCA = true
		t.BasicConstraintsValid = true
		t.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
		t.ExtKeyUsage = nil
	} else {
		t.BasicConstraintsValid = true
		t.KeyUsage = x509.KeyUsageDigitalSignature
		if _, ok := key.Public().(*ecdsa.PublicKey); !ok {
			t.KeyUsage |= x509.KeyUsageKeyEncipherment
		}
	}
	return t, key, nil
}

func sign(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, fmt.Errorf("creating certificate %q: %w", tmpl.Subject.CommonName, err)
	}
	return x509.ParseCertificate(der)
}

// TLSCertificate returns the leaf as a tls.Certificate carrying its chain
// (intermediates), for a client's Certificates or a server's config.
func (l *Leaf) TLSCertificate() tls.Certificate {
	c := tls.Certificate{Certificate: [][]byte{l.Cert.Raw}, PrivateKey: l.Key, Leaf: l.Cert}
	for _, ic := range l.Chain {
		c.Certificate = append(c.Certificate, ic.Raw)
	}
	return c
}

// SHA256Hex is the leaf pin: lower-case hex SHA-256 of the DER, as Caddy's
// {http.request.tls.client.fingerprint} and a record's client_cert.sha256.
func (l *Leaf) SHA256Hex() string { return LeafSHA256Hex(l.Cert) }

// SPKISHA256Hex is the RFC 7469 pin of the leaf (client_cert.spki_sha256).
func (l *Leaf) SPKISHA256Hex() string { return SPKISHA256Hex(l.Cert) }

// SPKISHA256Hex is the RFC 7469 pin of the CA (client_cert.issuer_spki_sha256).
func (ca *CA) SPKISHA256Hex() string { return SPKISHA256Hex(ca.Cert) }

// LeafSHA256Hex returns lower-case hex SHA-256 of c's DER encoding.
func LeafSHA256Hex(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// SPKISHA256Hex returns lower-case hex SHA-256 of c's SubjectPublicKeyInfo
// (RFC 7469; not Caddy's public_key_sha256 placeholder).
func SPKISHA256Hex(c *x509.Certificate) string {
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:])
}

// CertsPEM encodes certificates as consecutive PEM blocks.
func CertsPEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// KeyPEM encodes a private key as a PKCS#8 "PRIVATE KEY" block.
func KeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// CertPEM returns the leaf followed by its intermediates (what a TLS peer
// sends, and what Caddy's `tls cert.pem key.pem` expects).
func (l *Leaf) CertPEM() []byte {
	return CertsPEM(append([]*x509.Certificate{l.Cert}, l.Chain...)...)
}

// KeyPEM returns the leaf's private key in PKCS#8 PEM.
func (l *Leaf) KeyPEM() ([]byte, error) { return KeyPEM(l.Key) }

// CertPEM returns the CA certificate alone.
func (ca *CA) CertPEM() []byte { return CertsPEM(ca.Cert) }

// Write stores the leaf as dir/<name>.pem (leaf + intermediates, 0644) and
// dir/<name>-key.pem (0600), creating dir if needed, and returns both paths.
func (l *Leaf) Write(dir, name string) (certFile, keyFile string, err error) {
	if err := checkName(name); err != nil {
		return "", "", err
	}
	keyPEM, err := l.KeyPEM()
	if err != nil {
		return "", "", err
	}
	certFile = filepath.Join(dir, name+".pem")
	keyFile = filepath.Join(dir, name+"-key.pem")
	if err := WriteFile(certFile, l.CertPEM(), 0o644); err != nil {
		return "", "", err
	}
	if err := WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// Write stores the CA certificate as dir/<name>.pem and returns its path.
// With withKey it also writes dir/<name>-key.pem (0600).
func (ca *CA) Write(dir, name string, withKey bool) (string, error) {
	if err := checkName(name); err != nil {
		return "", err
	}
	certFile := filepath.Join(dir, name+".pem")
	if err := WriteFile(certFile, ca.CertPEM(), 0o644); err != nil {
		return "", err
	}
	if withKey {
		keyPEM, err := KeyPEM(ca.Key)
		if err != nil {
			return "", err
		}
		if err := WriteFile(filepath.Join(dir, name+"-key.pem"), keyPEM, 0o600); err != nil {
			return "", err
		}
	}
	return certFile, nil
}

// WriteBundle stores the certificates of several CAs in one PEM file
// (dir/<name>.pem), e.g. a trust_pool with two roots.
func WriteBundle(dir, name string, cas ...*CA) (string, error) {
	if err := checkName(name); err != nil {
		return "", err
	}
	var certs []*x509.Certificate
	for _, ca := range cas {
		certs = append(certs, ca.Cert)
	}
	p := filepath.Join(dir, name+".pem")
	return p, WriteFile(p, CertsPEM(certs...), 0o644)
}

// WriteFile writes data to path with perm, creating parent directories.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(path, data, perm); err != nil {
		return err
	}
	return os.Chmod(path, perm) // WriteFile keeps the mode of an existing file
}

// checkName refuses names that would give caddytest-mangled paths.
func checkName(name string) error {
	if name == "" || strings.ContainsAny(name, `/\`) {
		return fmt.Errorf("file name %q: want a plain base name without extension", name)
	}
	for _, ext := range []string{".crt", ".key", ".pem"} {
		if strings.HasSuffix(name, ext) {
			return fmt.Errorf("file name %q: give the base name only; files are written as <name>.pem", name)
		}
	}
	return nil
}

// ReadCertFile reads the first certificate of a PEM file.
func ReadCertFile(path string) (*x509.Certificate, error) {
	certs, err := ReadCertsFile(path)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

// ReadCertsFile reads every certificate of a PEM file, in order.
func ReadCertsFile(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s: no CERTIFICATE block", path)
	}
	return certs, nil
}
