package caddyredact

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

func adapt(body string) (string, error) {
	adapter := caddyfile.Adapter{ServerType: httpcaddyfile.ServerType{}}
	out, _, err := adapter.Adapt([]byte(body), map[string]any{"filename": "Caddyfile"})
	return string(out), err
}

func TestCaddyfileOrderAndOptions(t *testing.T) {
	out, err := adapt(`:8080 {
	reverse_proxy 127.0.0.1:9
	redact {
		preset none
		fields ssn date_of_birth
		path $.data[*].notes
		keep $.campaign.name
		detect email phone
		strategy hash
		hash_key {env.REDACT_HASH_KEY}
		expose_if {http.auth.key.pii}
		pass_types text/csv image/*
		max_buffer 2MiB
		vary X-Api-Key
	}
	encode gzip
}`)
	if err != nil {
		t.Fatal(err)
	}
	enc, red, rp := strings.Index(out, `"encode"`), strings.Index(out, `"redact"`), strings.Index(out, `"reverse_proxy"`)
	if !(enc < red && red < rp) {
		t.Errorf("order encode %d, redact %d, reverse_proxy %d: %s", enc, red, rp, out)
	}
	for _, want := range []string{`"max_buffer":2097152`, `"strategy":"hash"`, `"paths":["$.data[*].notes"]`, `"pass_types":["text/csv","image/*"]`} {
		if !strings.Contains(out, want) {
			t.Errorf("adapted config lacks %s", want)
		}
	}
}

func TestCaddyfileErrors(t *testing.T) {
	for line, want := range map[string]string{
		"strategy scramble": "want mask, partial, hash, null or remove",
		"strategy hash":     "needs hash_key",
		"path data[*":       "",
		"detect ssn":        "want email or phone",
		"preset all":        "want pii or none",
		"max_buffer lots":   "want a size",
		"bogus":             "unrecognized redact option",
		"fields":            "wrong argument count",
		"expose_if":         "wrong argument count",
	} {
		_, err := adapt(":8080 {\n\tredact {\n\t\t" + line + "\n\t}\n}\n")
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "Caddyfile:") {
			t.Errorf("%q: %v (want %q with the position)", line, err, want)
		}
	}
}
