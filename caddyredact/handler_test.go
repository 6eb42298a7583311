package caddyredact

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	dto "github.com/prometheus/client_model/go"
)

func provisioned(t *testing.T, h *Redact) *Redact {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
	t.Cleanup(cancel)
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	return h
}

// TestExposeIfExact: only the exact placeholder value "true" exposes.
func TestExposeIfExact(t *testing.T) {
	h := provisioned(t, &Redact{})
	body := `{"email":"ada@acme.test"}`
	for value, exposed := range map[string]bool{"true": true, " true": false, "true ": false, "True": false, "1": false, "": false} {
		w := httptest.NewRecorder()
		r := httptest.NewRequest("GET", "/", nil)
		repl := caddy.NewReplacer()
		repl.Set("http.auth.key.pii", value)
		r = caddyhttp.PrepareRequest(r, repl, w, nil)
		next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Set("Content-Type", "application/json")
			_, err := w.Write([]byte(body))
			return err
		})
		if err := h.ServeHTTP(w, r, next); err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(w.Body.String(), "ada@acme.test"); got != exposed {
			t.Errorf("pii %q: exposed %v, want %v (%s)", value, got, exposed, w.Body.String())
		}
	}
}

func TestProvisionErrors(t *testing.T) {
	for name, h := range map[string]*Redact{
		"unknown strategy":  {Strategy: "scramble"},
		"hash without key":  {Strategy: "hash"},
		"bad path":          {Paths: []string{"data[*"}},
		"JSON in passtypes": {PassTypes: []string{"application/json"}},
		"bad pass type":     {PassTypes: []string{"text"}},
		"negative buffer":   {MaxBuffer: -1},
	} {
		ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
		if err := h.Provision(ctx); err == nil {
			t.Errorf("%s: accepted", name)
		}
		cancel()
	}
}

// TestFieldsPlaceholderAndMetrics: {http.redact.fields} counts the masked
// values of the response, and the counters grow by as much.
func TestFieldsPlaceholderAndMetrics(t *testing.T) {
	h := provisioned(t, &Redact{})
	before := counterValue(t)
	w := httptest.NewRecorder()
	repl := caddy.NewReplacer()
	r := caddyhttp.PrepareRequest(httptest.NewRequest("GET", "/", nil), repl, w, nil)
	body := `{"name":"Ada","email":"a@b.test","phone":"+1 415 555 0101","n":1}`
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Content-Type", "application/json")
		_, err := w.Write([]byte(body))
		return err
	})
	if err := h.ServeHTTP(w, r, next); err != nil {
		t.Fatal(err)
	}
	if v, _ := repl.Get("http.redact.fields"); v != int64(3) {
		t.Errorf("{http.redact.fields} = %v", v)
	}
	if got := counterValue(t) - before; got != 3 {
		t.Errorf("scopegate_redact_fields_total grew by %v", got)
	}
}

func counterValue(t *testing.T) float64 {
	t.Helper()
	var m dto.Metric
	if err := redactFieldsTotal.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
