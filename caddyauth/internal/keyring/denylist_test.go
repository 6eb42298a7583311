package keyring

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scopegate/scopegate/internal/testpki"
)

// denyPKI: root → intermediate → leaf, and another leaf of the same
// intermediate.
type denyPKI struct {
	root, inter *testpki.CA
	leaf, other *testpki.Leaf
	chain       []*x509.Certificate // leaf, intermediate, root
	otherChain  []*x509.Certificate
}

func newDenyPKI(t testing.TB) *denyPKI {
	t.Helper()
	p := &denyPKI{root: testpki.Must(testpki.NewCA("Deny Root"))}
	p.inter = testpki.Must(p.root.Intermediate("Deny Issuing CA", testpki.Org("Acme, Inc.")))
	p.leaf = testpki.Must(p.inter.Client("svc", testpki.Serial(big.NewInt(0x0a1b))))
	p.other = testpki.Must(p.inter.Client("other"))
	p.chain = []*x509.Certificate{p.leaf.Cert, p.inter.Cert, p.root.Cert}
	p.otherChain = []*x509.Certificate{p.other.Cert, p.inter.Cert, p.root.Cert}
	return p
}

func bySHA(c *x509.Certificate) *DeniedCert { return &DeniedCert{SHA256: HexDigest(LeafSHA256(c))} }

func bySerial(c *x509.Certificate) *DeniedCert {
	s, _ := CanonicalSerial(c.SerialNumber)
	return &DeniedCert{Issuer: c.Issuer.String(), Serial: s}
}

func TestDeniedCertParsing(t *testing.T) {
	sha := strings.Repeat("ab", 32)
	good := []string{
		`{"sha256":"` + sha + `"}`,
		`{"sha256":"` + sha + `","reason":"laptop stolen","added_at":"2026-11-29T10:00:00Z"}`,
		`{"issuer":"CN=Acme CA,O=Acme\\, Inc.","serial":"a1b"}`,
		`{"issuer":"CN=Acme CA","serial":"0"}`,
	}
	for _, s := range good {
		if _, err := DecodeDeniedCert([]byte(s)); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
	bad := map[string]string{
		"unknown field":          `{"sha256":"` + sha + `","sha265":"x"}`,
		"misspelt field alone":   `{"fingerprint":"` + sha + `"}`,
		"upper-case hex":         `{"sha256":"` + strings.ToUpper(sha) + `"}`,
		"short hex":              `{"sha256":"abcd"}`,
		"colons":                 `{"sha256":"ab:cd"}`,
		"both forms":             `{"sha256":"` + sha + `","issuer":"CN=A","serial":"1"}`,
		"issuer alone":           `{"issuer":"CN=A"}`,
		"serial alone":           `{"serial":"1"}`,
		"leading zero":           `{"issuer":"CN=A","serial":"01"}`,
		"upper-case serial":      `{"issuer":"CN=A","serial":"AB"}`,
		"0x serial":              `{"issuer":"CN=A","serial":"0x1"}`,
		"negative serial":        `{"issuer":"CN=A","serial":"-1"}`,
		"openssl DN":             `{"issuer":"/C=US/CN=A","serial":"1"}`,
		"space after comma":      `{"issuer":"CN=A, O=B","serial":"1"}`,
		"no attribute":           `{"issuer":"Acme","serial":"1"}`,
		"control char in reason": `{"sha256":"` + sha + `","reason":"a\u0007b"}`,
		"bad time":               `{"sha256":"` + sha + `","added_at":"yesterday"}`,
		"empty":                  `{}`,
		"trailing data":          `{"sha256":"` + sha + `"} {}`,
	}
	for name, s := range bad {
		if _, err := DecodeDeniedCert([]byte(s)); err == nil {
			t.Errorf("%s: %s accepted", name, s)
		}
	}
	// In a keys file, a bad entry is a bad file.
	for name, s := range bad {
		if name == "trailing data" {
			continue
		}
		if _, _, err := ParseFile([]byte(`{"keys":[],"denied_certs":[` + s + `]}`)); err == nil || !strings.Contains(err.Error(), "denied_certs") && !strings.Contains(err.Error(), "invalid JSON") {
			t.Errorf("%s: keys file accepted or error unclear: %v", name, err)
		}
	}
	for name, s := range map[string]string{
		"null entry": `{"keys":[],"denied_certs":[null]}`,
		"duplicate":  `{"keys":[],"denied_certs":[{"sha256":"` + sha + `"},{"sha256":"` + sha + `","reason":"again"}]}`,
		"not a list": `{"keys":[],"denied_certs":{"sha256":"` + sha + `"}}`,
	} {
		if _, _, err := ParseFile([]byte(s)); err == nil {
			t.Errorf("%s: keys file accepted", name)
		}
	}
	f, set, err := ParseFile([]byte(`{"keys":[],"denied_certs":[` + good[1] + `,` + good[2] + `]}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(f.DeniedCerts) != 2 || set.Denylist().Len() != 2 || f.DeniedCerts[0].Reason != "laptop stolen" {
		t.Fatalf("parsed %+v, %d entries", f.DeniedCerts, set.Denylist().Len())
	}
	// Without denied_certs: an empty denylist, and the file is written
	// back without the field.
	if _, set, err := ParseFile([]byte(`{"keys":[]}`)); err != nil || set.Denylist().Len() != 0 {
		t.Fatalf("no denylist: %v", err)
	}
	data, _ := marshalFile(&File{Keys: []*Record{}})
	if strings.Contains(string(data), "denied_certs") {
		t.Errorf("empty denylist written: %s", data)
	}
}

func TestDeniedCertIDs(t *testing.T) {
	p := newDenyPKI(t)
	e := bySHA(p.leaf.Cert)
	if e.ID() != "sha256:"+p.leaf.SHA256Hex() {
		t.Errorf("id %s", e.ID())
	}
	s := bySerial(p.leaf.Cert)
	if s.Serial != "a1b" || s.Issuer != "CN=Deny Issuing CA,O=Acme\\, Inc." {
		t.Errorf("serial entry %+v", s)
	}
	if want := "serial:" + IssuerDigest(s.Issuer) + ":a1b"; s.ID() != want {
		t.Errorf("id %s, want %s", s.ID(), want)
	}
	for _, id := range []string{e.ID(), s.ID()} {
		if _, err := parseDenyID(id); err != nil {
			t.Errorf("%s: %v", id, err)
		}
	}
	for _, id := range []string{"", "sha256:", "sha256:AB", "serial:" + IssuerDigest("CN=A"), "serial:" + IssuerDigest("CN=A") + ":01", "serial:xyz:1", "md5:" + p.leaf.SHA256Hex()} {
		if _, err := parseDenyID(id); err == nil {
			t.Errorf("%q accepted as an entry id", id)
		}
	}
}

// TestDenylistMatches: the leaf, the intermediate and the root are each
// matched by fingerprint and by issuer+serial, in any verified chain.
func TestDenylistMatches(t *testing.T) {
	p := newDenyPKI(t)
	cases := []struct {
		name          string
		entry         *DeniedCert
		leaf, other   bool
		matchedInLeaf *x509.Certificate
	}{
		{"leaf by sha256", bySHA(p.leaf.Cert), true, false, p.leaf.Cert},
		{"leaf by issuer+serial", bySerial(p.leaf.Cert), true, false, p.leaf.Cert},
		{"intermediate by sha256", bySHA(p.inter.Cert), true, true, p.inter.Cert},
		{"intermediate by issuer+serial", bySerial(p.inter.Cert), true, true, p.inter.Cert},
		{"root by sha256", bySHA(p.root.Cert), true, true, p.root.Cert},
		{"same serial, other issuer", &DeniedCert{Issuer: "CN=Deny Root", Serial: "a1b"}, false, false, nil},
		{"same issuer, other serial", &DeniedCert{Issuer: p.leaf.Cert.Issuer.String(), Serial: "a1c"}, false, false, nil},
		{"unrelated certificate", bySHA(testpki.Must(p.inter.Client("svc")).Cert), false, false, nil},
	}
	for _, c := range cases {
		d, err := NewDenylist([]*DeniedCert{c.entry})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		got := d.Denied([][]*x509.Certificate{p.chain})
		if (got != nil) != c.leaf || got != c.matchedInLeaf {
			t.Errorf("%s: leaf chain matched %v", c.name, got)
		}
		if got := d.Denied([][]*x509.Certificate{p.otherChain}); (got != nil) != c.other {
			t.Errorf("%s: other chain matched %v", c.name, got)
		}
		// Any verified chain counts, not only the first.
		if got := d.Denied([][]*x509.Certificate{p.otherChain[:1], p.chain}); (got != nil) != c.leaf {
			t.Errorf("%s: second chain not checked", c.name)
		}
	}
	var none *Denylist
	if none.Denied([][]*x509.Certificate{p.chain}) != nil || none.Len() != 0 {
		t.Error("a nil denylist denied")
	}
	empty, _ := NewDenylist(nil)
	if empty.Denied([][]*x509.Certificate{p.chain}) != nil {
		t.Error("an empty denylist denied")
	}
}

// TestDenylistCheckAllocatesNothing: the request path check allocates
// nothing, with both kinds of entries and a miss.
func TestDenylistCheckAllocatesNothing(t *testing.T) {
	p := newDenyPKI(t)
	d, err := NewDenylist([]*DeniedCert{bySHA(p.other.Cert), bySerial(p.other.Cert)})
	if err != nil {
		t.Fatal(err)
	}
	chains := [][]*x509.Certificate{p.chain}
	d.Denied(chains) // fills the per-certificate caches
	if n := testing.AllocsPerRun(100, func() {
		if d.Denied(chains) != nil {
			t.Fatal("matched")
		}
	}); n != 0 {
		t.Errorf("%v allocations per check", n)
	}
}

func BenchmarkDenylistCheck(b *testing.B) {
	p := newDenyPKI(b)
	var entries []*DeniedCert
	for range 1000 {
		c := testpki.Must(p.inter.Client("x")).Cert
		entries = append(entries, bySHA(c), bySerial(c))
	}
	d, err := NewDenylist(entries)
	if err != nil {
		b.Fatal(err)
	}
	chains := [][]*x509.Certificate{p.chain}
	b.ReportAllocs()
	for b.Loop() {
		if d.Denied(chains) != nil {
			b.Fatal("matched")
		}
	}
}

func writeKeysFile(t *testing.T, path string, f *File) {
	t.Helper()
	data, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestFileStoreDenylistReload: the denylist is swapped with the keys; a bad
// entry keeps the last good set (keys and denylist).
func TestFileStoreDenylistReload(t *testing.T) {
	p := newDenyPKI(t)
	rec := editTestRecord(t)
	path := filepath.Join(t.TempDir(), "keys.json")
	writeKeysFile(t, path, &File{Keys: []*Record{rec}, DeniedCerts: []*DeniedCert{bySHA(p.other.Cert)}})
	fs, err := OpenFileStore(path)
	if err != nil {
		t.Fatal(err)
	}
	chains := [][]*x509.Certificate{p.chain}
	if fs.Denylist().Len() != 1 || fs.Denylist().Denied(chains) != nil {
		t.Fatal("initial denylist")
	}
	var reloads, errs atomic.Int64
	fs.OnReload = func(*Set) { reloads.Add(1) }
	fs.OnError = func(error) { errs.Add(1) }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go fs.Watch(ctx, 10*time.Millisecond)

	writeKeysFile(t, path, &File{Keys: []*Record{rec}, DeniedCerts: []*DeniedCert{bySHA(p.other.Cert), bySerial(p.leaf.Cert)}})
	waitFor(t, 5*time.Second, "the reload", func() bool { return fs.Denylist().Denied(chains) == p.leaf.Cert })

	// A bad entry: the file is refused, keys and denylist stay.
	before := reloads.Load()
	bad := []byte(`{"keys":[],"denied_certs":[{"sha256":"` + strings.Repeat("AB", 32) + `"}]}`)
	if err := os.WriteFile(path+".tmp", bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the error", func() bool { return errs.Load() > 0 })
	if reloads.Load() != before || fs.Denylist().Len() != 2 || fs.Current().Len() != 1 {
		t.Fatalf("a bad denylist entry replaced the set: %d keys, %d entries", fs.Current().Len(), fs.Denylist().Len())
	}
	// Removing the entry restores access.
	writeKeysFile(t, path, &File{Keys: []*Record{rec}})
	waitFor(t, 5*time.Second, "the reload", func() bool { return fs.Denylist().Denied(chains) == nil })

	// A bad denylist stops the start.
	if err := os.WriteFile(path, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenFileStore(path); err == nil || !strings.Contains(err.Error(), "denied_certs[0]") {
		t.Fatalf("open with a bad denylist: %v", err)
	}
}

// TestUpdateFileKeepsDenylist: editing keys leaves the denylist as it was.
func TestUpdateFileKeepsDenylist(t *testing.T) {
	p := newDenyPKI(t)
	path := filepath.Join(t.TempDir(), "keys.json")
	at := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	entries := []*DeniedCert{{SHA256: p.leaf.SHA256Hex(), Reason: "stolen", AddedAt: &at}, bySerial(p.inter.Cert)}
	if err := UpdateFile(path, func(f *File) error { f.DeniedCerts = entries; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := appendEditRecord(path); err != nil {
		t.Fatal(err)
	}
	f := mustLoad(t, path)
	if len(f.Keys) != 1 || len(f.DeniedCerts) != 2 || f.DeniedCerts[0].Reason != "stolen" || !f.DeniedCerts[0].AddedAt.Equal(at) || f.DeniedCerts[1].ID() != entries[1].ID() {
		t.Fatalf("after a key edit: %+v", f.DeniedCerts)
	}
	// An edit that would write a bad entry is refused.
	err := UpdateFile(path, func(f *File) error {
		f.DeniedCerts = append(f.DeniedCerts, &DeniedCert{Serial: "1"})
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "not written") {
		t.Fatalf("bad entry written: %v", err)
	}
}

// TestStoredDenylist: what Redis holds is enforced by its field, even when
// the value is unreadable; a field that is no entry id names nothing.
func TestStoredDenylist(t *testing.T) {
	p := newDenyPKI(t)
	leaf, inter, other := bySHA(p.leaf.Cert), bySerial(p.inter.Cert), bySHA(p.other.Cert)
	j := func(e *DeniedCert) string { s, _ := marshalRecord(e); return s }
	d, problems := storedDenylist(map[string]string{
		leaf.ID():  j(leaf),
		inter.ID(): "not json",
		"junk":     j(other),
	}, 7)
	if d.Version != 7 || len(problems) != 2 || len(d.Entries()) != 1 {
		t.Fatalf("version %d, %d problems %v, %d entries", d.Version, len(problems), problems, len(d.Entries()))
	}
	if d.Denied([][]*x509.Certificate{p.otherChain}) != p.inter.Cert {
		t.Error("an unreadable value did not deny what its field names")
	}
	// A value that names another certificate than its field: both denied.
	d, problems = storedDenylist(map[string]string{leaf.ID(): j(other)}, 1)
	if len(problems) != 1 || d.Denied([][]*x509.Certificate{p.chain}) == nil || d.Denied([][]*x509.Certificate{p.otherChain}) == nil {
		t.Errorf("mismatched value: problems %v", problems)
	}
}

// TestRedisDenylist: the editor's changes are atomic with the version and
// the announcement; every store applies them within milliseconds, without
// touching its key cache; a lost announcement is covered within the cache
// TTL, a resubscription reloads, and Redis down keeps the last denylist.
func TestRedisDenylist(t *testing.T) {
	const ttl = 500 * time.Millisecond
	env := newRedisEnv(t, ttl, storeHooks{})
	other := env.openStore(t, ttl, storeHooks{})
	ctx := context.Background()
	p := newDenyPKI(t)
	chains := [][]*x509.Certificate{p.chain}
	for _, s := range env.stores {
		waitFor(t, 5*time.Second, "the first load", func() bool { return s.Denylist() != nil })
	}

	// A cached key stays cached across a denylist change.
	_, rec := env.newRecord(t, nil)
	env.warm(t, env.store, rec.ID)
	fetches := env.store.fetches.Load()
	sub := env.raw.Subscribe(ctx, RedisChannel)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}

	entry := &DeniedCert{SHA256: p.leaf.SHA256Hex(), Reason: "stolen"}
	start := time.Now()
	v, err := env.ed.DenyCert(ctx, entry)
	if err != nil || v != 1 {
		t.Fatalf("deny: %d %v", v, err)
	}
	for _, s := range env.stores {
		waitFor(t, time.Second, "the denial", func() bool { return s.Denylist().Denied(chains) != nil })
	}
	t.Logf("denied on two stores %v after the write", time.Since(start))
	msg, err := sub.ReceiveMessage(ctx)
	if err != nil || msg.Payload != `{"denylist":1}` {
		t.Errorf("announcement %v %v", msg, err)
	}
	if stored, _ := env.raw.HGet(ctx, RedisDenylistKey, entry.ID()).Result(); stored != `{"sha256":"`+p.leaf.SHA256Hex()+`","reason":"stolen"}` {
		t.Errorf("stored %s", stored)
	}
	env.lookup(t, env.store, rec.ID)
	if env.store.fetches.Load() != fetches {
		t.Error("a denylist announcement evicted a key")
	}
	// Denying again changes nothing and announces nothing.
	if v, err := env.ed.DenyCert(ctx, &DeniedCert{SHA256: p.leaf.SHA256Hex(), Reason: "again"}); err != nil || v != 0 {
		t.Errorf("second deny: %d %v", v, err)
	}
	if list, err := env.ed.DeniedCerts(ctx); err != nil || len(list) != 1 || list[0].Reason != "stolen" {
		t.Errorf("list: %v %v", list, err)
	}

	// Allowed again.
	if v, err := env.ed.AllowCert(ctx, entry.ID()); err != nil || v != 2 {
		t.Fatalf("allow: %d %v", v, err)
	}
	for _, s := range env.stores {
		waitFor(t, time.Second, "the removal", func() bool { return s.Denylist().Denied(chains) == nil })
	}
	if v, err := env.ed.AllowCert(ctx, entry.ID()); err != nil || v != 0 {
		t.Errorf("second allow: %d %v", v, err)
	}
	if _, err := env.ed.AllowCert(ctx, "junk"); err == nil {
		t.Error("allow of a junk id")
	}

	// A lost announcement: seen within the TTL.
	serial := bySerial(p.inter.Cert)
	data, _ := marshalRecord(serial)
	if err := env.raw.HSet(ctx, RedisDenylistKey, serial.ID(), data).Err(); err != nil {
		t.Fatal(err)
	}
	d := waitFor(t, ttl+time.Second, "the periodic load", func() bool { return other.Denylist().Denied(chains) == p.inter.Cert })
	t.Logf("lost denylist announcement covered after %v (cache TTL %v)", d, ttl)

	// A forged announcement only makes the stores read Redis.
	loads := other.denyLoads.Load()
	if err := env.raw.Publish(ctx, RedisChannel, `{"denylist":999}`).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "the reload", func() bool { return other.denyLoads.Load() > loads })
	if other.Denylist().Version != 2 {
		t.Errorf("version %d after a forged announcement", other.Denylist().Version)
	}

	// Redis down: the last denylist stays in force.
	env.srv.Stop()
	time.Sleep(2 * ttl)
	for _, s := range env.stores {
		if s.Denylist().Denied(chains) != p.inter.Cert {
			t.Error("the denylist was dropped while Redis is down")
		}
	}
}

// TestRedisDenylistReloadOnResubscribe: a change made while the
// subscription is down is loaded when it is made again.
func TestRedisDenylistReloadOnResubscribe(t *testing.T) {
	env := newRedisEnv(t, time.Hour, storeHooks{})
	s := env.store
	ctx := context.Background()
	p := newDenyPKI(t)
	waitFor(t, 5*time.Second, "the first load", func() bool { return s.Denylist() != nil })
	subs := s.subscriptions.Load()
	if err := env.raw.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	e := bySHA(p.leaf.Cert)
	data, _ := marshalRecord(e)
	if err := env.raw.HSet(ctx, RedisDenylistKey, e.ID(), data).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the resubscription", func() bool { return s.subscriptions.Load() > subs })
	d := waitFor(t, time.Second, "the reload", func() bool { return s.Denylist().Denied([][]*x509.Certificate{p.chain}) != nil })
	t.Logf("loaded %v after the resubscription", d)
}

// TestRedisDenylistBadData: an unreadable version counter keeps the last
// denylist; the editor refuses entries it would not read back.
func TestRedisDenylistBadData(t *testing.T) {
	env := newRedisEnv(t, 200*time.Millisecond, storeHooks{})
	ctx := context.Background()
	p := newDenyPKI(t)
	if _, err := env.ed.DenyCert(ctx, bySHA(p.leaf.Cert)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "the denial", func() bool { return env.store.Denylist().Len() == 1 })
	if err := env.raw.Set(ctx, RedisDenylistVersionKey, "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := env.ed.DenyCert(ctx, bySHA(p.other.Cert)); err == nil {
		t.Error("INCR on a bad counter succeeded")
	}
	time.Sleep(500 * time.Millisecond)
	if env.store.Denylist().Len() != 1 {
		t.Error("a bad version counter dropped the denylist")
	}
	if _, err := env.ed.DenyCert(ctx, &DeniedCert{Issuer: "CN=A"}); err == nil {
		t.Error("bad entry written")
	}
	if err := env.raw.Set(ctx, RedisDenylistVersionKey, "5", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := env.raw.HSet(ctx, RedisDenylistKey, "sha256:"+p.other.SHA256Hex(), "{").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := env.ed.DeniedCerts(ctx); err == nil || !strings.Contains(err.Error(), p.other.SHA256Hex()) {
		t.Errorf("listing an unreadable entry: %v", err)
	}
}

// TestRedisDenylistVersionBackwards: a stored denylist older than the one
// in force (Redis restored or failed over to a lagging replica) never
// replaces it: the entries added since stay enforced.
func TestRedisDenylistVersionBackwards(t *testing.T) {
	env := newRedisEnv(t, time.Hour, storeHooks{})
	s := env.store
	ctx := context.Background()
	p := newDenyPKI(t)
	chains := [][]*x509.Certificate{p.chain}
	waitFor(t, 5*time.Second, "the first load", func() bool { return s.Denylist() != nil })
	entry := &DeniedCert{SHA256: p.leaf.SHA256Hex()}
	if _, err := env.ed.DenyCert(ctx, entry); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "the denial", func() bool { return s.Denylist().Denied(chains) != nil })
	// Back in time: the entry and the version bump are gone.
	if err := env.raw.HDel(ctx, RedisDenylistKey, entry.ID()).Err(); err != nil {
		t.Fatal(err)
	}
	if err := env.raw.Set(ctx, RedisDenylistVersionKey, 0, 0).Err(); err != nil {
		t.Fatal(err)
	}
	loads := s.denyLoads.Load()
	if err := env.raw.Publish(ctx, RedisChannel, `{"denylist":5}`).Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if s.Denylist().Denied(chains) == nil {
		t.Fatal("an older denylist replaced the one in force")
	}
	if s.denyLoads.Load() != loads {
		t.Error("the older denylist was counted as loaded")
	}
}
