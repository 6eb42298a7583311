package caddyauth_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/scopegate/scopegate/caddyauth"
	"github.com/scopegate/scopegate/caddyauth/internal/keyring"
)

// scopedKey runs `caddy scoped-key ARGS` in-process and returns stdout.
func scopedKey(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if err := caddyauth.RunScopedKey(&out, &errb, args...); err != nil {
		t.Fatalf("scoped-key %v: %v (%s)", args, err, errb.String())
	}
	return strings.TrimSpace(out.String())
}

// TestCLIWhileRunning: keys created, rotated and revoked with the CLI are
// picked up by the running Caddy within about a second, without a reload.
func TestCLIWhileRunning(t *testing.T) {
	f := setup(t)
	defer f.writeKeys(t) // leave the file as the other tests expect it
	c := f.client(nil, "h1")
	key := scopedKey(t, "new", "--keys", f.keysFile, "--scope", "read_only", "--name", "cli")
	id, ok := keyring.ParseKey(key)
	if !ok {
		t.Fatalf("new printed %q", key)
	}
	waitStatus(t, f, c, key, 200)

	rotated := scopedKey(t, "rotate", "--keys", f.keysFile, id, "--grace", "1h")
	waitStatus(t, f, c, rotated, 200)
	if got := f.do(t, c, "GET", url(mainPort, "/v1/me"), "Authorization", "Bearer "+key); got.status != 200 {
		t.Errorf("old secret inside the grace period: %d", got.status)
	}

	scopedKey(t, "revoke", "--keys", f.keysFile, id)
	start := time.Now()
	waitStatus(t, f, c, rotated, 401)
	t.Logf("revocation through the CLI took effect after %v", time.Since(start))
	if got := f.do(t, c, "GET", url(mainPort, "/v1/me"), "Authorization", "Bearer "+key); got.status != 401 {
		t.Errorf("old secret of a revoked key: %d", got.status)
	}
	if out := scopedKey(t, "revoke", "--keys", f.keysFile, id); out != "" {
		t.Errorf("second revoke printed %q", out)
	}
	list := scopedKey(t, "list", "--keys", f.keysFile)
	if strings.Contains(list, "sha256:") || !strings.Contains(list, id) {
		t.Errorf("list: %s", list)
	}
}
