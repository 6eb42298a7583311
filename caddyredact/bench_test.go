package caddyredact

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/scopegate/scopegate/internal/jsonmask"
)

// denseDoc is a dense API document (short strings) of about n bytes.
func denseDoc(n int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"employees":[`)
	for i := 0; b.Len() < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":"e%d","name":"Ann Lee %d","email":"ann%d@acme.test","phone":"+1 415 555 %04d","dept":"ops","gifts":[{"id":"g%d","sku":"mug","recipient":{"name":"Bo %d","email":"bo%d@ex.test"},"st":"ok"}]}`, i, i, i, i%10000, i, i, i)
	}
	b.WriteString(`]}`)
	return b.Bytes()
}

type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(p []byte) (int, error) { return len(p), nil }
func (d *discard) WriteHeader(int)             {}

// BenchmarkHandler is the whole handler (a 32 KiB-chunked body, as
// reverse_proxy writes it); BenchmarkMaskerOnly is the masker alone on the
// same document: the difference is the handler's own cost.
func BenchmarkHandler(b *testing.B) { benchHandlerDoc(b, denseDoc(8<<20)) }

func BenchmarkMaskerOnly(b *testing.B) {
	doc := denseDoc(8 << 20)
	cfg := jsonmask.MustCompile(jsonmask.Options{})
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := cfg.Copy(io.Discard, bytes.NewReader(doc), jsonmask.ModeJSON); err != nil {
			b.Fatal(err)
		}
	}
}

// benchDocFile is bench/out/doc.json (bench/download -gen), the document
// bench/redact.sh downloads; the benchmarks below skip without it.
func benchDocFile(b *testing.B) []byte {
	doc, err := os.ReadFile("../bench/out/doc.json")
	if err != nil {
		b.Skip("no ../bench/out/doc.json: run bench/download -gen first")
	}
	return doc
}

// BenchmarkDoc compares, on the e2e document in one run, the masker alone
// with the handler inline and with the pipeline.
func BenchmarkDoc(b *testing.B) {
	doc := benchDocFile(b)
	cfg := jsonmask.MustCompile(jsonmask.Options{})
	b.Run("masker", func(b *testing.B) {
		s := cfg.NewStreamMode(io.Discard, jsonmask.ModeJSON)
		b.SetBytes(int64(len(doc)))
		for b.Loop() {
			s.Reset(io.Discard, jsonmask.ModeJSON)
			for p := doc; len(p) > 0; {
				n := min(len(p), 32<<10)
				if _, err := s.Write(p[:n]); err != nil {
					b.Fatal(err)
				}
				p = p[n:]
			}
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, off := range []bool{true, false} {
		name := "handler-pipeline"
		if off {
			name = "handler-inline"
		}
		b.Run(name, func(b *testing.B) {
			defer func(v bool) { pipelineOff = v }(pipelineOff)
			pipelineOff = off
			benchHandlerDoc(b, doc)
		})
	}
}

func benchHandlerDoc(b *testing.B, doc []byte) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: b.Context()})
	defer cancel()
	h := &Redact{}
	if err := h.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Content-Type", "application/json")
		for p := doc; len(p) > 0; {
			n := min(len(p), 32<<10)
			if _, err := w.Write(p[:n]); err != nil {
				return err
			}
			p = p[n:]
		}
		return nil
	})
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	for b.Loop() {
		w := &discard{h: http.Header{}}
		r := caddyhttp.PrepareRequest(httptest.NewRequest("GET", "/", nil), caddy.NewReplacer(), w, nil)
		if err := h.ServeHTTP(w, r, next); err != nil {
			b.Fatal(err)
		}
	}
}
