package caddyauth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/scopegate/scopegate/caddyauth/internal/keyring"
	"github.com/scopegate/scopegate/internal/testredis"
)

// auditRecord is an audit entry as a reader sees it.
type auditRecord struct {
	Time  time.Time `json:"time"`
	Actor struct {
		User     string `json:"user"`
		UID      string `json:"uid"`
		SudoUser string `json:"sudo_user"`
		Host     string `json:"host"`
	} `json:"actor"`
	Action  string                     `json:"action"`
	ID      string                     `json:"id"`
	Version int64                      `json:"version"`
	Store   string                     `json:"store"`
	Changes map[string]json.RawMessage `json:"changes"`
	Error   string                     `json:"error"`
}

// auditParse reads a log: one JSON entry per line, nothing else.
func auditParse(t *testing.T, data []byte) []auditRecord {
	t.Helper()
	var out []auditRecord
	for i, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		if line == "" && len(data) == 0 {
			break
		}
		dec := json.NewDecoder(strings.NewReader(line))
		dec.DisallowUnknownFields()
		var e auditRecord
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("audit log line %d %q: %v", i+1, line, err)
		}
		out = append(out, e)
	}
	return out
}

func auditReadFile(t *testing.T, path string) ([]byte, []auditRecord) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data, auditParse(t, data)
}

// auditNoSecrets fails if data holds any key, its stored hash, or any
// 8-character piece of a key's secret part.
func auditNoSecrets(t *testing.T, where string, data []byte, keys []string) {
	t.Helper()
	for _, key := range keys {
		sum := sha256.Sum256([]byte(key))
		hexHash := hex.EncodeToString(sum[:])
		if bytes.Contains(data, []byte(key)) || bytes.Contains(data, []byte(hexHash)) {
			t.Fatalf("%s holds a key or its hash", where)
		}
		secret := key[len("sg_")+16+1:]
		for i := 0; i+8 <= len(secret); i++ {
			if bytes.Contains(data, []byte(secret[i:i+8])) {
				t.Fatalf("%s holds a fragment of a secret (%d..%d)", where, i, i+8)
			}
		}
	}
}

// auditChangeOf decodes one change: "changed" or {"from":…,"to":…}.
func auditChangeOf(t *testing.T, e auditRecord, field string) (from, to string, hasFrom bool) {
	t.Helper()
	raw, ok := e.Changes[field]
	if !ok {
		t.Fatalf("%s entry: no change of %s in %v", e.Action, field, e.Changes)
	}
	if string(raw) == `"changed"` {
		return "changed", "changed", false
	}
	var c map[string]json.RawMessage
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatalf("%s entry: change of %s: %s", e.Action, field, raw)
	}
	f, hasFrom := c["from"]
	return string(f), string(c["to"]), hasFrom
}

func auditFields(e auditRecord) []string {
	var names []string
	for k := range e.Changes {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

// TestAuditLogFile: every change through the CLI appends exactly one entry
// with the right action, id, version, store, actor, time and changes; the
// log is only ever appended to; failures and no-ops write nothing; no key,
// hash or piece of a secret is ever in it; audit prints it back.
func TestAuditLogFile(t *testing.T) {
	p := skNewPKI(t)
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys.json")
	log := keys + ".audit.jsonl"
	now := time.Date(2026, 11, 29, 9, 30, 0, 0, time.UTC)
	cli := skFixedCLI(now)
	var keysPrinted []string
	var prev []byte
	step := func(n int) []auditRecord {
		t.Helper()
		data, entries := auditReadFile(t, log)
		if !bytes.HasPrefix(data, prev) {
			t.Fatalf("the audit log was rewritten:\nbefore %q\nafter  %q", prev, data)
		}
		if len(entries) != n {
			t.Fatalf("%d entries, want %d:\n%s", len(entries), n, data)
		}
		prev = data
		auditNoSecrets(t, "audit log", data, keysPrinted)
		return entries
	}
	actor := currentActor()
	check := func(e auditRecord, action, id string, version int64, fields ...string) {
		t.Helper()
		if e.Action != action || e.ID != id || e.Version != version || e.Store != "file "+keys || !e.Time.Equal(now) ||
			e.Actor.User != actor.User || e.Actor.UID != actor.UID || e.Actor.Host != actor.Host || e.Actor.Host == "" || e.Error != "" {
			t.Errorf("entry %+v, want %s %s version %d by %+v at %s", e, action, id, version, actor, now)
		}
		if got := auditFields(e); !slices.Equal(got, fields) {
			t.Errorf("%s entry changes %v, want %v", action, got, fields)
		}
	}

	key := skNewKey(t, cli, "--keys", keys, "--name", "HRIS & sync", "--scope", "gifts:read,employees:read", "--account", "acme-us",
		"--pii", "--cert", p.leafFile, "--not-before", "2026-01-01T00:00:00Z", "--expires", "90d")
	keysPrinted = append(keysPrinted, key)
	id, _ := keyring.ParseKey(key)
	if fi, err := os.Stat(log); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("audit log: %v, mode %v, want 0600", err, fi.Mode())
	}
	e := step(1)[0]
	check(e, "new", id, 1, "accounts", "client_cert", "disabled", "expires_at", "hash", "name", "not_before", "pii", "scopes")
	rec := skRecord(t, keys, id)
	for field, want := range map[string]string{
		"name": `"HRIS & sync"`, "scopes": `["gifts:read","employees:read"]`, "accounts": `["acme-us"]`, "pii": "true", "disabled": "false",
		"client_cert": `{"sha256":["` + rec.ClientCert.SHA256[0] + `"]}`, "not_before": `"2026-01-01T00:00:00Z"`,
		"expires_at": `"` + rec.ExpiresAt.Format(time.RFC3339) + `"`, "hash": "changed",
	} {
		if _, to, hasFrom := auditChangeOf(t, e, field); to != want || hasFrom {
			t.Errorf("new: %s → %s (from given: %v), want %s and no from", field, to, hasFrom, want)
		}
	}

	// Rotation with a grace period: the secret fields only say "changed".
	key2 := strings.TrimSpace(skOK(t, cli, "rotate", "--keys", keys, id, "--grace", "1h"))
	keysPrinted = append(keysPrinted, key2)
	e = step(2)[1]
	check(e, "rotate", id, 2, "hash", "previous_expires_at", "previous_hash")
	if from, to, _ := auditChangeOf(t, e, "previous_expires_at"); from != "null" || to != `"`+now.Add(time.Hour).Format(time.RFC3339)+`"` {
		t.Errorf("rotate: previous_expires_at %s → %s", from, to)
	}
	if _, to, _ := auditChangeOf(t, e, "previous_hash"); to != "changed" {
		t.Errorf("rotate: previous_hash %s", to)
	}
	// Without grace: the previous secret goes.
	r := skRun(t, cli, "rotate", "--keys", keys, id)
	if r.err != nil || !strings.Contains(r.stderr, "still in a rotation grace period") {
		t.Fatalf("rotate during a grace period: %+v", r)
	}
	key3 := strings.TrimSpace(r.stdout)
	keysPrinted = append(keysPrinted, key3)
	e = step(3)[2]
	check(e, "rotate", id, 3, "hash", "previous_expires_at", "previous_hash")
	if from, to, _ := auditChangeOf(t, e, "previous_expires_at"); to != "null" || from == "null" {
		t.Errorf("rotate without grace: previous_expires_at %s → %s", from, to)
	}

	principal := strings.TrimSpace(skOK(t, cli, "new", "--keys", keys, "--scope", "gifts:read", "--no-secret", "--spiffe", "spiffe://acme.test/hris", "--issuer", p.caFile))
	check(step(4)[3], "new", principal, 1, "accounts", "client_cert", "disabled", "pii", "scopes")

	skOK(t, cli, "revoke", "--keys", keys, id)
	e = step(5)[4]
	check(e, "revoke", id, 4, "disabled")
	if from, to, _ := auditChangeOf(t, e, "disabled"); from != "false" || to != "true" {
		t.Errorf("revoke: disabled %s → %s", from, to)
	}

	// No change, no entry; a failed command writes nothing.
	if r := skRun(t, cli, "revoke", "--keys", keys, id); r.err != nil {
		t.Fatal(r.err)
	}
	skFail(t, cli, "unknown key id aaaaaaaaaaaaaaaa", "revoke", "--keys", keys, "aaaaaaaaaaaaaaaa")
	skFail(t, cli, "unknown key id aaaaaaaaaaaaaaaa", "rotate", "--keys", keys, "aaaaaaaaaaaaaaaa")
	skFail(t, cli, "is revoked", "rotate", "--keys", keys, id)
	skFail(t, cli, "certificate principal", "rotate", "--keys", keys, principal)
	skFail(t, cli, "--grace", "rotate", "--keys", keys, principal, "--grace", "-1h")
	skFail(t, cli, "unknown flag", "revoke", "--keys", keys, id, "--bogus")
	skFail(t, cli, "at least one --scope", "new", "--keys", keys)
	skFail(t, cli, "--expires", "new", "--keys", keys, "--scope", "a:b", "--expires", "yesterday")
	skFail(t, cli, "not the key itself", "revoke", "--keys", keys, key3)
	step(5)

	// audit prints the log back, all of it or one id's entries.
	if out := skOK(t, nil, "audit", "--keys", keys); out != string(prev) {
		t.Errorf("audit printed\n%s\nwant\n%s", out, prev)
	}
	out := skOK(t, nil, "audit", "--keys", keys, "--id", principal)
	if got := auditParse(t, []byte(out)); len(got) != 1 || got[0].ID != principal {
		t.Errorf("audit --id %s: %s", principal, out)
	}
	if out := skOK(t, nil, "audit", "--keys", keys, "--id", "aaaaaaaaaaaaaaaa"); out != "" {
		t.Errorf("audit --id of an id without entries: %q", out)
	}
	skFail(t, nil, "not the key itself", "audit", "--keys", keys, "--id", key3)
	skFail(t, nil, "no audit log at", "audit", "--keys", filepath.Join(dir, "other.json"))
}

// TestAuditLogPaths: --audit-log, symbolic links, and no way to switch the
// log off: an unwritable log stops the change, which is then not applied.
func TestAuditLogPaths(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys.json")
	custom := filepath.Join(dir, "logs", "scopegate.jsonl")
	if err := os.Mkdir(filepath.Dir(custom), 0o700); err != nil {
		t.Fatal(err)
	}
	key := skNewKey(t, nil, "--keys", keys, "--scope", "a:b", "--audit-log", custom)
	id, _ := keyring.ParseKey(key)
	if _, entries := auditReadFile(t, custom); len(entries) != 1 || entries[0].ID != id {
		t.Fatalf("custom log: %+v", entries)
	}
	if _, err := os.Stat(keys + ".audit.jsonl"); !os.IsNotExist(err) {
		t.Errorf("default log written too: %v", err)
	}
	if out := skOK(t, nil, "audit", "--keys", keys, "--audit-log", custom); len(auditParse(t, []byte(out))) != 1 {
		t.Errorf("audit --audit-log: %q", out)
	}

	// A symbolic link to the keys file logs next to the file it points to.
	link := filepath.Join(t.TempDir(), "keys-link.json")
	if err := os.Symlink(keys, link); err != nil {
		t.Fatal(err)
	}
	skOK(t, nil, "revoke", "--keys", link, id)
	if _, entries := auditReadFile(t, keys+".audit.jsonl"); len(entries) != 1 || entries[0].Action != "revoke" || entries[0].Store != "file "+link {
		t.Errorf("log of a change through a symbolic link: %+v", entries)
	}

	// An unwritable log (a directory, /dev/null, a missing directory):
	// the command fails and the keys file is untouched.
	keyB := skNewKey(t, nil, "--keys", keys, "--scope", "a:b")
	idB, _ := keyring.ParseKey(keyB)
	before, _ := os.ReadFile(keys)
	for _, bad := range []string{dir, os.DevNull, filepath.Join(dir, "missing", "log.jsonl")} {
		skFail(t, nil, "not applied: audit log "+bad, "new", "--keys", keys, "--scope", "a:b", "--audit-log", bad)
		skFail(t, nil, "not applied: audit log "+bad, "rotate", "--keys", keys, idB, "--audit-log", bad)
	}
	if after, _ := os.ReadFile(keys); !bytes.Equal(before, after) {
		t.Error("a change without its audit entry was applied")
	}

	skFail(t, nil, "--audit-log is for --keys", "new", "--redis", "redis://127.0.0.1:1/0", "--scope", "a:b", "--audit-log", custom)
	if r := skRun(t, nil, "list", "--keys", keys, "--audit-log", custom); r.err == nil {
		t.Error("list took --audit-log")
	}

	// A line torn by a crash stays on its own line; audit skips it with a
	// warning.
	torn := filepath.Join(dir, "torn.jsonl")
	if err := os.WriteFile(torn, []byte(`{"time":"2026-`), 0o600); err != nil {
		t.Fatal(err)
	}
	skNewKey(t, nil, "--keys", keys, "--scope", "a:b", "--audit-log", torn)
	data, _ := os.ReadFile(torn)
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != 2 || lines[0] != `{"time":"2026-` || len(auditParse(t, []byte(lines[1]))) != 1 {
		t.Errorf("after a torn line: %q", data)
	}
	r := skRun(t, nil, "audit", "--keys", keys, "--audit-log", torn)
	if r.err != nil || len(auditParse(t, []byte(r.stdout))) != 1 || !strings.Contains(r.stderr, torn+":1: not a JSON entry") {
		t.Errorf("audit of a log with a torn line: %+v", r)
	}
}

// TestAuditLogAborted: when the keys file cannot be replaced after the
// entry was written, an "aborted" entry follows and the command says the
// change was not applied.
func TestAuditLogAborted(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys.json")
	log := keys + ".audit.jsonl"
	key := skNewKey(t, nil, "--keys", keys, "--scope", "a:b")
	id, _ := keyring.ParseKey(key)
	moved := filepath.Join(dir, "moved.json")
	testHookAuditWritten = func() {
		// Make the rename fail: the keys file becomes a directory.
		if err := os.Rename(keys, moved); err != nil {
			t.Error(err)
		}
		if err := os.MkdirAll(filepath.Join(keys, "x"), 0o700); err != nil {
			t.Error(err)
		}
	}
	defer func() { testHookAuditWritten = nil }()
	skFail(t, nil, `the change's entry is followed by an "aborted" entry`, "revoke", "--keys", keys, id)
	testHookAuditWritten = nil
	_, entries := auditReadFile(t, log)
	if len(entries) != 3 || entries[1].Action != "revoke" || entries[2].Action != "aborted" ||
		entries[2].ID != id || entries[2].Version != 2 || entries[2].Error == "" || len(entries[2].Changes) != 0 {
		t.Errorf("entries %+v", entries)
	}
	if r := skRecord(t, moved, id); r.Disabled || r.Version != 1 {
		t.Errorf("the record changed: %+v", r)
	}
}

// TestAuditLogUnaudited: a change that was applied without its entry (one
// made outside the editors' logged writes) is appended after the fact; if
// that fails, the command fails saying it WAS applied but NOT audited.
func TestAuditLogUnaudited(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys.json")
	if err := os.WriteFile(keys, []byte(`{"keys": []}`), 0o600); err != nil {
		t.Fatal(err)
	}
	late := func(auditLog string) error {
		cli := &scopedKeyCLI{now: time.Now}
		cmd := &cobra.Command{Use: "deny-cert"}
		skStoreFlags(cmd)
		if err := cmd.ParseFlags([]string{"--keys", keys, "--audit-log", auditLog}); err != nil {
			t.Fatal(err)
		}
		return cli.run(func(cmd *cobra.Command, _ []string) error {
			ed, err := cli.openEditor(cmd)
			if err != nil {
				return err
			}
			// (the change itself, made another way, is not the point)
			cli.committed(ed, "deny-cert", "sha256:"+strings.Repeat("ab", 32), 0, map[string]any{"reason": auditFieldChange{To: json.RawMessage(`"lost laptop"`)}})
			return nil
		})(cmd, nil)
	}
	log := filepath.Join(dir, "late.jsonl")
	if err := late(log); err != nil {
		t.Fatal(err)
	}
	_, entries := auditReadFile(t, log)
	if len(entries) != 1 || entries[0].Action != "deny-cert" || entries[0].Version != 0 || string(entries[0].Changes["reason"]) != `{"to":"lost laptop"}` {
		t.Errorf("late entry: %+v", entries)
	}
	err := late(dir)
	if err == nil || !strings.Contains(err.Error(), "deny-cert sha256:abab") || !strings.Contains(err.Error(), "WAS APPLIED to file "+keys+" but NOT AUDITED") || strings.Contains(err.Error(), "\n") {
		t.Errorf("unaudited change: %v", err)
	}
}

// TestAuditLogDenylist: deny-cert and allow-cert are logged, one entry
// each, with the entry id.
func TestAuditLogDenylist(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "keys.json")
	skNewKey(t, nil, "--keys", keys, "--scope", "a:b")
	fp := strings.Repeat("0f", 32)
	skOK(t, nil, "deny-cert", "--keys", keys, "--sha256", fp, "--reason", "lost laptop")
	skOK(t, nil, "allow-cert", "--keys", keys, "--sha256", fp)
	_, entries := auditReadFile(t, keys+".audit.jsonl")
	if len(entries) != 3 {
		t.Fatalf("entries %+v", entries)
	}
	for i, action := range []string{"deny-cert", "allow-cert"} {
		if e := entries[i+1]; e.Action != action || e.ID != "sha256:"+fp {
			t.Errorf("entry %d: %+v", i+1, e)
		}
	}
	if r := string(entries[1].Changes["reason"]); r != `{"to":"lost laptop"}` {
		t.Errorf("deny-cert entry: reason %s", r)
	}
}

// TestAuditLogHelperProcess is not a test: TestAuditLogConcurrent runs the
// test binary with it as one `caddy scoped-key` process.
func TestAuditLogHelperProcess(t *testing.T) {
	args := os.Getenv("SCOPEGATE_AUDIT_HELPER_ARGS")
	if args == "" {
		t.Skip("helper process")
	}
	var out, errb bytes.Buffer
	if err := RunScopedKey(&out, &errb, strings.Split(args, "\x1f")...); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// TestAuditLogConcurrent: concurrent changes from separate processes and
// from goroutines of one process each add exactly one entry, in commit
// order (the versions of one key appear in increasing order).
func TestAuditLogConcurrent(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "keys.json")
	log := keys + ".audit.jsonl"
	key := skNewKey(t, nil, "--keys", keys, "--scope", "a:b")
	id, _ := keyring.ParseKey(key)

	const procs, goroutines = 4, 8
	var wg sync.WaitGroup
	errs := make(chan error, procs+goroutines)
	for i := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			args := []string{"rotate", "--keys", keys, id}
			if i%2 == 1 {
				args = []string{"new", "--keys", keys, "--scope", "c:d"}
			}
			cmd := exec.Command(os.Args[0], "-test.run=^TestAuditLogHelperProcess$", "-test.count=1")
			cmd.Env = append(os.Environ(), "SCOPEGATE_AUDIT_HELPER_ARGS="+strings.Join(args, "\x1f"))
			if out, err := cmd.CombinedOutput(); err != nil {
				errs <- fmt.Errorf("process %d: %v: %s", i, err, out)
			}
		}()
	}
	for i := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out, errb bytes.Buffer
			args := []string{"rotate", "--keys", keys, id}
			if i%4 == 3 {
				args = []string{"new", "--keys", keys, "--scope", "e:f"}
			}
			if err := RunScopedKey(&out, &errb, args...); err != nil {
				errs <- fmt.Errorf("goroutine %d: %v: %s", i, err, errb.String())
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	_, entries := auditReadFile(t, log)
	rotations, news := 0, 0
	var last int64 = 1
	for _, e := range entries[1:] {
		switch e.Action {
		case "rotate":
			rotations++
			if e.ID != id || e.Version != last+1 {
				t.Errorf("rotation entry %+v after version %d: not in commit order", e, last)
			}
			last = e.Version
		case "new":
			news++
		default:
			t.Errorf("entry %+v", e)
		}
	}
	wantRot := procs/2 + goroutines - goroutines/4
	if rotations != wantRot || news != procs/2+goroutines/4 {
		t.Errorf("%d rotations and %d new keys logged, want %d and %d", rotations, news, wantRot, procs/2+goroutines/4)
	}
	if r := skRecord(t, keys, id); r.Version != last {
		t.Errorf("record at version %d, last logged %d", r.Version, last)
	}
}

// TestAuditLogRedis: with --redis, each change's entry is appended to the
// stream scopegate:audit by the change's own script: same entries as the
// file's; a failed change (or one whose entry cannot be appended) adds
// nothing and changes nothing; concurrent rotations log in commit order.
func TestAuditLogRedis(t *testing.T) {
	srv := testredis.Start(t)
	url := srv.URL()
	raw := redis.NewClient(&redis.Options{Addr: srv.Addr(), DisableIdentity: true})
	defer raw.Close()
	ctx := context.Background()
	stream := func() ([]byte, []auditRecord) {
		t.Helper()
		msgs, err := raw.XRange(ctx, keyring.RedisAuditStream, "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		var all []byte
		for _, m := range msgs {
			if len(m.Values) != 1 {
				t.Fatalf("stream entry %v", m.Values)
			}
			all = append(all, m.Values["entry"].(string)+"\n"...)
		}
		return all, auditParse(t, all)
	}
	now := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	cli := skFixedCLI(now)
	store := "redis " + url
	key := skNewKey(t, cli, "--redis", url, "--scope", "gifts:read", "--name", "HRIS")
	id, _ := keyring.ParseKey(key)
	key2 := strings.TrimSpace(skOK(t, cli, "rotate", "--redis", url, id, "--grace", "10m"))
	skOK(t, cli, "revoke", "--redis", url, id)
	if r := skRun(t, cli, "revoke", "--redis", url, id); r.err != nil { // no change, no entry
		t.Fatal(r.err)
	}
	skFail(t, cli, "unknown key id", "rotate", "--redis", url, "aaaaaaaaaaaaaaaa")
	skFail(t, cli, "is revoked", "rotate", "--redis", url, id)
	skFail(t, cli, "unknown flag", "revoke", "--redis", url, id, "--bogus")
	data, entries := stream()
	auditNoSecrets(t, "audit stream", data, []string{key, key2})
	want := []struct {
		action string
		fields []string
	}{
		{"new", []string{"accounts", "disabled", "hash", "name", "pii", "scopes"}},
		{"rotate", []string{"hash", "previous_expires_at", "previous_hash"}},
		{"revoke", []string{"disabled"}},
	}
	if len(entries) != len(want) {
		t.Fatalf("stream:\n%s", data)
	}
	for i, w := range want {
		e := entries[i]
		if e.Action != w.action || e.ID != id || e.Version != int64(i+1) || e.Store != store || !e.Time.Equal(now) || e.Actor.Host == "" {
			t.Errorf("entry %d: %+v", i, e)
		}
		if got := auditFields(e); !slices.Equal(got, w.fields) {
			t.Errorf("%s changes %v, want %v", w.action, got, w.fields)
		}
	}
	if from, to, _ := auditChangeOf(t, entries[2], "disabled"); from != "false" || to != "true" {
		t.Errorf("revoke: %s → %s", from, to)
	}
	if out := skOK(t, nil, "audit", "--redis", url); out != string(data) {
		t.Errorf("audit --redis printed\n%s\nwant\n%s", out, data)
	}

	// An entry that cannot be appended stops the change: nothing stored.
	srv.Do(t, "RENAME", keyring.RedisAuditStream, "saved-audit")
	srv.Do(t, "SET", keyring.RedisAuditStream, "not a stream")
	r := skRun(t, nil, "new", "--redis", url, "--scope", "a:b")
	if r.err == nil || !strings.Contains(r.stderr, "WRONGTYPE") {
		t.Errorf("new with an unusable stream: %+v", r)
	}
	if r := skRun(t, nil, "rotate", "--redis", url, id); r.err == nil {
		t.Error("rotate with an unusable stream succeeded")
	}
	if n, _ := raw.Keys(ctx, keyring.RedisKeyPrefix+"*").Result(); len(n) != 1 {
		t.Errorf("records after refused changes: %v", n)
	}
	// A change made without the script's entry is appended after it; if
	// that fails, the command says the change was applied but not audited.
	lateCLI := &scopedKeyCLI{now: time.Now}
	lateCmd := &cobra.Command{Use: "deny-cert"}
	skStoreFlags(lateCmd)
	if err := lateCmd.ParseFlags([]string{"--redis", url}); err != nil {
		t.Fatal(err)
	}
	late := lateCLI.run(func(cmd *cobra.Command, _ []string) error {
		ed, err := lateCLI.openEditor(cmd)
		if err != nil {
			return err
		}
		defer closeEditor(ed)
		lateCLI.committed(ed, "deny-cert", "sha256:"+strings.Repeat("cd", 32), 7)
		return nil
	})
	if err := late(lateCmd, nil); err == nil || !strings.Contains(err.Error(), "(version 7) WAS APPLIED to "+store+" but NOT AUDITED") || !strings.Contains(err.Error(), "WRONGTYPE") {
		t.Errorf("unaudited change in redis: %v", err)
	}
	srv.Do(t, "DEL", keyring.RedisAuditStream)
	srv.Do(t, "RENAME", "saved-audit", keyring.RedisAuditStream)

	// Concurrent rotations of one key: one entry each, versions in
	// commit order, although some scripts lost the race and were retried.
	other := skNewKey(t, nil, "--redis", url, "--scope", "a:b")
	otherID, _ := keyring.ParseKey(other)
	var wg sync.WaitGroup
	const n = 8
	var mu sync.Mutex
	var printed []string
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out, errb bytes.Buffer
			if err := RunScopedKey(&out, &errb, "rotate", "--redis", url, otherID); err != nil {
				t.Errorf("rotate: %v %s", err, errb.String())
			}
			mu.Lock()
			printed = append(printed, strings.TrimSpace(out.String()))
			mu.Unlock()
		}()
	}
	wg.Wait()
	data, entries = stream()
	auditNoSecrets(t, "audit stream", data, append(printed, other))
	if len(entries) != 4+n {
		t.Fatalf("%d entries, want %d", len(entries), 4+n)
	}
	for i, e := range entries[4:] {
		if e.Action != "rotate" || e.ID != otherID || e.Version != int64(i+2) {
			t.Errorf("rotation %d: %+v", i, e)
		}
	}
	out := skOK(t, nil, "audit", "--redis", url, "--id", otherID)
	if got := auditParse(t, []byte(out)); len(got) != n+1 {
		t.Errorf("audit --id: %d entries", len(got))
	}
	if xlen, _ := raw.XLen(ctx, keyring.RedisAuditStream).Result(); xlen != int64(len(entries)) {
		t.Errorf("XLEN %d", xlen)
	}

	// The denylist's changes are in the same stream.
	fp := strings.Repeat("2f", 32)
	skOK(t, nil, "deny-cert", "--redis", url, "--sha256", fp)
	skOK(t, nil, "allow-cert", "--redis", url, "--sha256", fp)
	_, entries = stream()
	if len(entries) != 6+n || entries[4+n].Action != "deny-cert" || entries[5+n].Action != "allow-cert" || entries[5+n].ID != "sha256:"+fp || entries[5+n].Version <= entries[4+n].Version {
		t.Errorf("denylist entries %+v", entries[4+n:])
	}

	// audit reads a long stream in batches, every entry once, in order.
	pipe := raw.Pipeline()
	for i := range 2500 {
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: keyring.RedisAuditStream, Values: []string{"entry", fmt.Sprintf(`{"action":"x","id":"aaaaaaaaaaaaaaaa","version":%d}`, i)}})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	out = skOK(t, nil, "audit", "--redis", url)
	if lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n"); len(lines) != len(entries)+2500 || lines[len(lines)-1] != `{"action":"x","id":"aaaaaaaaaaaaaaaa","version":2499}` {
		t.Errorf("audit printed %d lines, want %d", len(lines), len(entries)+2500)
	}
}

// TestAuditLogFileDiff: a keys-file change made through updateFile gets
// entries for whatever it changed (records removed, denylist entries added
// or removed) written ahead of it, and committed() then adds no second
// entry.
func TestAuditLogFileDiff(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "keys.json")
	log := keys + ".audit.jsonl"
	key := skNewKey(t, nil, "--keys", keys, "--scope", "a:b")
	id, _ := keyring.ParseKey(key)
	cli := skFixedCLI(time.Date(2026, 11, 29, 11, 0, 0, 0, time.UTC))
	cmd := &cobra.Command{Use: "deny-cert"}
	skStoreFlags(cmd)
	if err := cmd.ParseFlags([]string{"--keys", keys}); err != nil {
		t.Fatal(err)
	}
	ed, err := cli.openEditor(cmd)
	if err != nil {
		t.Fatal(err)
	}
	fe := ed.(keyFileEditor)
	fp := strings.Repeat("1e", 32)
	deny := &keyring.DeniedCert{SHA256: fp, Reason: "lost laptop"}
	ctx := context.Background()
	if err := fe.updateFile(ctx, func(f *keyring.File) error { f.DeniedCerts = append(f.DeniedCerts, deny); return nil }); err != nil {
		t.Fatal(err)
	}
	cli.committed(ed, "deny-cert", deny.ID(), 0)
	if cli.unaudited != nil {
		t.Fatal(cli.unaudited)
	}
	if err := fe.updateFile(ctx, func(f *keyring.File) error { f.DeniedCerts, f.Keys = nil, nil; return nil }); err != nil {
		t.Fatal(err)
	}
	_, entries := auditReadFile(t, log)
	if len(entries) != 4 {
		t.Fatalf("entries %+v", entries)
	}
	want := []struct{ action, id, sha256, reason string }{
		{"deny-cert", "sha256:" + fp, `{"to":"` + fp + `"}`, `{"to":"lost laptop"}`},
		{"delete", id, "", ""},
		{"allow-cert", "sha256:" + fp, `{"from":"` + fp + `","to":null}`, `{"from":"lost laptop","to":null}`},
	}
	for i, w := range want {
		e := entries[i+1]
		if e.Action != w.action || e.ID != w.id || string(e.Changes["sha256"]) != w.sha256 || string(e.Changes["reason"]) != w.reason {
			t.Errorf("entry %d: %+v, want %+v", i+1, e, w)
		}
	}
}
