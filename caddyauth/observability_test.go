package caddyauth_test

import (
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/scopegate/scopegate/caddyauth/internal/keyring"
)

// TestSecretsNeverLogged sends every key in every way (valid, invalid,
// custom and repeated headers, query strings), then reads every log line
// Caddy wrote at DEBUG (the access log included) and every upstream
// request: no key, no key hash, and no long piece of a secret appears.
func TestSecretsNeverLogged(t *testing.T) {
	f := setup(t)
	c := f.client(nil, "h1")
	c1 := f.client(f.c1, "h2")
	for name, k := range f.keys {
		_ = name
		f.do(t, c, "GET", url(mainPort, "/v1/gifts"), "Authorization", "Bearer "+k)
		f.do(t, c1, "POST", url(mainPort, "/v1/budgets/b1/spend"), "Authorization", "Bearer "+k, "X-Account-ID", "acme-us")
		f.do(t, c, "GET", url(mainPort, "/healthz"), "Authorization", "Bearer "+k)
		f.do(t, c, "GET", url(errorsPort, "/v1/gifts"), "Authorization", "Bearer "+k)
		f.raw(t, mainPort, nil, rawReq("GET", "/v1/gifts/../x", bearer(k)))
		f.raw(t, mainPort, nil, rawReq("GET", "/v1/gifts", bearer(k), bearer(k)))
	}
	time.Sleep(200 * time.Millisecond) // let the log writers flush
	logs, err := os.ReadFile(f.logFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(logs), `"request denied"`) || !strings.Contains(string(logs), `"level":"debug"`) {
		t.Fatalf("the log does not look like a DEBUG log with denials (%d bytes)", len(logs))
	}
	var upstream strings.Builder
	for _, r := range f.upstream.all() {
		for name, vals := range r.Header {
			upstream.WriteString(name + ": " + strings.Join(vals, ",") + "\n")
		}
		upstream.WriteString(r.URL.String() + "\n")
	}
	for name, k := range f.keys {
		sum := keyring.HashKey(k)
		secret := k[len(k)-49 : len(k)-6]
		for what, needle := range map[string]string{"key": k, "hash": hex.EncodeToString(sum[:]), "secret prefix": secret[:12], "secret suffix": secret[len(secret)-12:]} {
			if strings.Contains(string(logs), needle) {
				t.Errorf("%s of key %s found in the log", what, name)
			}
			if name != "F" && strings.Contains(upstream.String(), needle) { // F went through strip_credentials off on purpose
				t.Errorf("%s of key %s reached the upstream", what, name)
			}
		}
	}
	// The denial lines carry the fields SPEC section 7 names.
	for _, line := range strings.Split(string(logs), "\n") {
		if strings.Contains(line, `"request denied"`) && strings.Contains(line, `"insufficient_scope"`) {
			for _, field := range []string{`"key_id":"`, `"permission":"`, `"account":"`, `"remote_ip":"`} {
				if !strings.Contains(line, field) {
					t.Errorf("denial line lacks %s: %s", field, line)
				}
			}
			break
		}
	}
	// Provisioning warned about bindings without an issuer pin (what
	// `caddy validate` shows), naming the key.
	for _, name := range []string{"BURINOPIN", "BSUBJNOPIN"} {
		if !strings.Contains(string(logs), "key "+f.records[name].ID+": ") || !strings.Contains(string(logs), "without issuer_spki_sha256") {
			t.Errorf("no warning about %s's binding without an issuer pin", name)
		}
	}
	// The access log names the key id as user_id.
	if !strings.Contains(string(logs), `"user_id":"`+f.records["F"].ID+`"`) {
		t.Error("no access log line with user_id = the key id")
	}
}

// TestMetrics: scoped_auth's counters are served from Caddy's metrics and
// survive a config reload.
func TestMetrics(t *testing.T) {
	f := setup(t)
	f.do(t, f.client(nil, "h1"), "GET", url(mainPort, "/v1/gifts"))
	body := metrics(t)
	for _, want := range []string{`scopegate_auth_requests_total{result="missing_key"}`, `scopegate_auth_requests_total{result="allowed"}`, `scopegate_keys_file_errors_total`} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	before := metricValue(t, body, `scopegate_auth_requests_total{result="missing_key"}`)
	// Force a reload of the same config (new handler instances, a new
	// registry), then count one more.
	req, _ := http.NewRequest("POST", fmt.Sprintf("http://localhost:%d/load", adminPort), strings.NewReader(f.config))
	req.Header.Set("Content-Type", "text/caddyfile")
	req.Header.Set("Cache-Control", "must-revalidate")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("reload: %d", resp.StatusCode)
	}
	f.do(t, f.client(nil, "h1"), "GET", url(mainPort, "/v1/gifts"))
	after := metricValue(t, metrics(t), `scopegate_auth_requests_total{result="missing_key"}`)
	if after != before+1 {
		t.Errorf("missing_key count %v before the reload, %v after it and one more request", before, after)
	}
}

func metrics(t *testing.T) string {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://localhost:%d/metrics", adminPort))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

func metricValue(t *testing.T, body, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no series %s", series)
	return 0
}
