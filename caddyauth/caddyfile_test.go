package caddyauth

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

func adapt(t testing.TB, body string) ([]byte, error) {
	t.Helper()
	adapter := caddyfile.Adapter{ServerType: httpcaddyfile.ServerType{}}
	out, _, err := adapter.Adapt([]byte(body), map[string]any{"filename": "Caddyfile"})
	return out, err
}

const caddyfileAdaptExample = `:8080 {
	respond "hi"
	scoped_auth {
		keys_file /etc/caddy/keys.json
		header X-Api-Key
		log_redaction_configured
		account path_segment 2
		require_client_cert
		strip_headers X-Key-Id X-Account
		strip_credentials off
		shadow
		rule GET,HEAD /v1/gifts* gifts:read
		rule * /healthz public
	}
}`

func TestCaddyfileAdapt(t *testing.T) {
	out, err := adapt(t, caddyfileAdaptExample)
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	// The handler runs before respond although it was written after it.
	if strings.Index(s, `"handler":"scoped_auth"`) > strings.Index(s, `"handler":"static_response"`) {
		t.Errorf("scoped_auth is not ordered before respond: %s", s)
	}
	got, err := adaptedAuth(t, caddyfileAdaptExample)
	if err != nil {
		t.Fatal(err)
	}
	if got.KeysFile != "/etc/caddy/keys.json" || got.Header != "X-Api-Key" || !got.LogRedactionConfigured ||
		got.Account == nil || got.Account.PathSegment != 2 || !got.RequireClientCert || len(got.StripHeaders) != 2 ||
		!got.KeepCredentials || !got.Shadow || len(got.Rules) != 2 || got.Rules[0].Methods[1] != "HEAD" || got.Rules[1].Methods != nil {
		t.Errorf("adapted config: %+v", got)
	}
}

// TestCaddyfileErrors: a bad line fails adaptation with the file, the line
// and what was expected.
func TestCaddyfileErrors(t *testing.T) {
	cases := map[string]string{
		"rule GET /v1/%2e gifts:read":             "contains %",
		"rule GET /v1/gifts gifts:*":              "concrete resource:action",
		"rule get /v1/gifts gifts:read":           "upper-case method",
		"rule GET /v1/gifts":                      "want <methods|*> <path>",
		"rule GET /v1/gifts gifts:read extra":     "want <methods|*> <path>",
		"account cookie x":                        "want header, query, path_segment or placeholder",
		"account path_segment zero":               "segment number",
		"account placeholder vars.x":              "want a placeholder",
		"strip_credentials maybe":                 "want on or off",
		"header X_Api_Key":                        "letters, digits and -",
		"bogus 1":                                 "unrecognized scoped_auth option",
		"require_client_cert yes":                 "wrong argument count",
		"shadow on":                               "wrong argument count",
		"strip_headers":                           "wrong argument count",
		"keys_file":                               "wrong argument count",
		"rule GET /v1/{http.request.host} x:read": "do not support",
	}
	for line, want := range cases {
		_, err := adapt(t, ":8080 {\n\tscoped_auth {\n\t\tkeys_file k.json\n\t\t"+line+"\n\t\trule * /ok public\n\t}\n}\n")
		if err == nil {
			t.Errorf("%q: adapted", line)
			continue
		}
		if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "Caddyfile:4") {
			t.Errorf("%q: error %q lacks %q or the position Caddyfile:4", line, err, want)
		}
	}
	_, err := adapt(t, ":8080 {\n\tscoped_auth {\n\t\tkeys_file k.json\n\t}\n}\n")
	if err == nil || !strings.Contains(err.Error(), "at least one rule") {
		t.Errorf("no rules: %v", err)
	}
	_, err = adapt(t, ":8080 {\n\tscoped_auth extra {\n\t\trule * / public\n\t}\n}\n")
	if err == nil {
		t.Error("an argument after scoped_auth was accepted")
	}
}

// FuzzCaddyfile: the parser never panics, and whatever it accepts
// round-trips through JSON and compiles (or fails with an error).
func FuzzCaddyfile(f *testing.F) {
	f.Add("keys_file k.json\nrule GET,HEAD /v1/gifts* gifts:read\nrule * /healthz public")
	f.Add("header X-Api-Key\nlog_redaction_configured\naccount query account\nrule POST /v1/budgets/*/spend budgets:spend")
	f.Add("account path_segment 2\nstrip_headers A B\nstrip_credentials off\nrule * * authenticated")
	f.Add("rule GET /v1/%2e x:y")
	f.Fuzz(func(t *testing.T, block string) {
		// Not NewTestDispenser: it calls log.Fatal on input the lexer
		// refuses, which is Caddy's answer, not ours.
		tokens, err := caddyfile.Tokenize([]byte("scoped_auth {\n"+block+"\n}"), "Caddyfile")
		if err != nil {
			return
		}
		d := caddyfile.NewDispenser(tokens)
		var h ScopedAuth
		if err := h.UnmarshalCaddyfile(d); err != nil {
			return
		}
		data, err := json.Marshal(&h)
		if err != nil {
			t.Fatal(err)
		}
		var back ScopedAuth
		if err := json.Unmarshal(data, &back); err != nil {
			t.Fatal(err)
		}
		for i, r := range back.Rules {
			if _, err := compileRule(i, r); err != nil {
				t.Fatalf("accepted rule does not compile: %v", err)
			}
		}
	})
}

// FuzzCheckURL: whatever request target the checks accept has a clean,
// ASCII, absolute path without dot or empty segments, and the rule matcher
// agrees with itself on it.
func FuzzCheckURL(f *testing.F) {
	for _, s := range []string{"/v1/gifts", "/v1/budgets/b1%2Fspend", "/v1/gifts/%2e%2e/x", "/a//b", "/v1/%73pend", "http://h/v1/x", "/v1/a;b", "/v1/%C0%AF"} {
		f.Add(s)
	}
	rule, _ := compileRule(0, Rule{Path: "/v1/budgets/*/spend", Permission: "budgets:spend"})
	f.Fuzz(func(t *testing.T, target string) {
		if strings.ContainsAny(target, " \r\n") {
			return
		}
		r, err := readRequestErr("GET " + target)
		if err != nil || checkURL(r.URL) != "" {
			return
		}
		p := r.URL.Path
		if p == "" || p[0] != '/' || strings.Contains(p, "//") || strings.Contains(p, "/./") || strings.Contains(p, "/../") ||
			strings.HasSuffix(p, "/.") || strings.HasSuffix(p, "/..") || strings.ContainsAny(p, "\\;%?#") {
			t.Fatalf("accepted ambiguous path %q from %q", p, target)
		}
		for i := 0; i < len(p); i++ {
			if p[i] < 0x20 || p[i] >= 0x7f {
				t.Fatalf("accepted non-ASCII or control byte in %q", p)
			}
		}
		if strings.Contains(strings.ToLower(r.URL.RawPath), "%2f") {
			t.Fatalf("accepted encoded slash in %q", target)
		}
		_ = rule.matches("GET", p)
	})
}

// TestBadKeysFileStopsProvision: a bad keys file at start names the file
// and the problem.
func TestBadKeysFileStopsProvision(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]string{
		`{"keys": [{"id": "abc"}]}`: "id must be 16 characters",
		`{"keys": [`:                "invalid JSON",
		`{"keys": [{"id": "aaaaaaaaaaaaaaaa", "hash": "sha256:00", "scopes": []}]}`: "hash must be",
		`{"keys": [{"id": "aaaaaaaaaaaaaaaa", "acounts": []}]}`:                     "unknown field",
		`{"keys": [{"id": "aaaaaaaaaaaaaaaa", "pii": "true"}]}`:                     "pii",
		`{}`: `missing "keys"`,
		``:   "empty file",
	}
	for content, want := range cases {
		path := filepath.Join(dir, "keys.json")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		h := &ScopedAuth{KeysFile: path}
		err := h.provisionStoreForTest()
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%q: error %v, want one naming %s and %q", content, err, path, want)
		}
	}
	h := &ScopedAuth{KeysFile: filepath.Join(dir, "missing.json")}
	if err := h.provisionStoreForTest(); err == nil || !strings.Contains(err.Error(), "missing.json") {
		t.Errorf("missing file: %v", err)
	}
}

// TestValidateRefusesBadKeysFile runs what `caddy validate` runs (adapt,
// then load and provision every module without starting) on a Caddyfile
// whose keys file is bad.
func TestValidateRefusesBadKeysFile(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys.json")
	if err := os.WriteFile(keys, []byte(`{"keys": [{"id": "aaaaaaaaaaaaaaaa", "scopes": ["read_only"], "hash": "sha256:`+strings.Repeat("0", 64)+`"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := adapt(t, "http://localhost:9999 {\n\tscoped_auth {\n\t\tkeys_file "+keys+"\n\t\trule * / public\n\t}\n}\n")
	if err != nil {
		t.Fatal(err)
	}
	var cfg caddy.Config
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	err = caddy.Validate(&cfg)
	if err == nil || !strings.Contains(err.Error(), keys) || !strings.Contains(err.Error(), `scope "read_only" is a preset: store "*:read"`) {
		t.Fatalf("validate: %v", err)
	}
}

// adaptedAuth adapts a Caddyfile and returns its scoped_auth handler.
func adaptedAuth(t *testing.T, body string) (*ScopedAuth, error) {
	t.Helper()
	out, err := adapt(t, body)
	if err != nil {
		return nil, err
	}
	var cfg struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Routes []struct {
						Handle []json.RawMessage `json:"handle"`
					} `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	for _, srv := range cfg.Apps.HTTP.Servers {
		for _, r := range srv.Routes {
			for _, h := range r.Handle {
				if strings.Contains(string(h), `"scoped_auth"`) {
					var got ScopedAuth
					if err := json.Unmarshal(h, &got); err != nil {
						t.Fatal(err)
					}
					return &got, nil
				}
			}
		}
	}
	t.Fatalf("no scoped_auth in %s", out)
	return nil, nil
}
