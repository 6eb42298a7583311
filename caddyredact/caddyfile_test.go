package caddyredact

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/scopegate/scopegate/internal/jsonmask"
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

// FuzzCaddyfile: the redact directive's parser never panics, and whatever it
// accepts survives a JSON round trip and compiles into a masker that turns
// valid JSON into valid JSON.
func FuzzCaddyfile(f *testing.F) {
	f.Add("preset none\nfields ssn date_of_birth\npath $.data[*].notes\nkeep $.campaign.name")
	f.Add("detect email phone\nstrategy partial\nmax_buffer 64KiB\npass_types text/csv image/*")
	f.Add("strategy hash\nhash_key k\npath $..secret $.a[0].b **.token\nvary X-Api-Key")
	f.Add("expose_if {http.auth.key.pii}\nstrategy remove\nkeep $.**.id")
	f.Add("path $.a[\nstrategy scramble")
	f.Fuzz(func(t *testing.T, block string) {
		// Not NewTestDispenser: it calls log.Fatal on input the lexer
		// refuses, which is Caddy's answer, not ours.
		tokens, err := caddyfile.Tokenize([]byte("redact {\n"+block+"\n}"), "Caddyfile")
		if err != nil {
			return
		}
		var h Redact
		if err := h.UnmarshalCaddyfile(caddyfile.NewDispenser(tokens)); err != nil {
			return
		}
		data, err := json.Marshal(&h)
		if err != nil {
			t.Fatal(err)
		}
		var back Redact
		if err := json.Unmarshal(data, &back); err != nil {
			t.Fatal(err)
		}
		cfg, err := jsonmask.Compile(jsonmask.Options{Preset: back.Preset, Fields: back.Fields, Paths: back.Paths, Keep: back.Keep,
			Detect: back.Detect, Strategy: back.Strategy, HashKey: []byte(back.HashKey)})
		if err != nil {
			t.Fatalf("accepted config does not compile after a JSON round trip: %v\n%s", err, data)
		}
		var out bytes.Buffer
		s := cfg.NewStream(&out)
		if _, err := s.Write([]byte(`{"name":"Ada","email":"ada@acme.test","data":[{"notes":"x","id":1}],"a":[{"b":2}]}`)); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if !json.Valid(out.Bytes()) {
			t.Fatalf("invalid output %q for %s", out.Bytes(), data)
		}
	})
}
