package jsonmask

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"
)

// One run compares the masker with its anchors on the same documents:
//
//	go test -run x -bench . -benchmem -count 5 ./internal/jsonmask/ | tee bench.txt
//	benchstat bench.txt
//
// Input is fed in 32 KiB writes, as reverse_proxy's copy loop does, and
// output goes to io.Discard. No timing is asserted anywhere.

const benchChunk = 32 << 10

func benchFeed(b *testing.B, cfg *Config, doc []byte, mode Mode) {
	s := cfg.NewStreamMode(io.Discard, mode)
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		s.Reset(io.Discard, mode)
		for off := 0; off < len(doc); off += benchChunk {
			end := min(off+benchChunk, len(doc))
			if _, err := s.Write(doc[off:end]); err != nil {
				b.Fatal(err)
			}
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

func benchDoc(name string) []byte {
	d, l := benchDocs()
	if name == "dense" {
		return d
	}
	return l
}

var benchKinds = []string{"dense", "long"}

func BenchmarkIOCopy(b *testing.B) {
	for _, k := range benchKinds {
		doc := benchDoc(k)
		b.Run(k, func(b *testing.B) {
			b.SetBytes(int64(len(doc)))
			b.ReportAllocs()
			buf := make([]byte, benchChunk)
			for b.Loop() {
				if _, err := io.CopyBuffer(io.Discard, onlyReader{bytes.NewReader(doc)}, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

type onlyReader struct{ io.Reader }

func BenchmarkValid(b *testing.B) {
	for _, k := range benchKinds {
		doc := benchDoc(k)
		b.Run(k, func(b *testing.B) {
			b.SetBytes(int64(len(doc)))
			b.ReportAllocs()
			for b.Loop() {
				if !json.Valid(doc) {
					b.Fatal("invalid")
				}
			}
		})
	}
}

func BenchmarkMask(b *testing.B) {
	cfg := MustCompile(Options{})
	for _, k := range benchKinds {
		doc := benchDoc(k)
		b.Run(k, func(b *testing.B) { benchFeed(b, cfg, doc, ModeJSON) })
	}
}

func BenchmarkDetect(b *testing.B) {
	cfg := MustCompile(Options{Detect: []string{"email", "phone"}})
	for _, k := range benchKinds {
		doc := benchDoc(k)
		b.Run(k, func(b *testing.B) { benchFeed(b, cfg, doc, ModeJSON) })
	}
}

func BenchmarkHash(b *testing.B) {
	cfg := MustCompile(Options{Strategy: "hash", HashKey: []byte("0123456789abcdef0123456789abcdef")})
	b.Run("dense", func(b *testing.B) { benchFeed(b, cfg, benchDoc("dense"), ModeJSON) })
}

func BenchmarkRemovePaths(b *testing.B) {
	cfg := MustCompile(Options{Strategy: "remove", Paths: []string{"$.gifts[*].message", "$.**.tags"}, Keep: []string{"$.company.name"}})
	b.Run("dense", func(b *testing.B) { benchFeed(b, cfg, benchDoc("dense"), ModeJSON) })
}

// BenchmarkNaive is the encoding/json round trip: decode into any (with
// UseNumber), walk and mask, encode.
func BenchmarkNaive(b *testing.B) {
	for _, k := range benchKinds {
		doc := benchDoc(k)
		b.Run(k, func(b *testing.B) {
			b.SetBytes(int64(len(doc)))
			b.ReportAllocs()
			for b.Loop() {
				dec := json.NewDecoder(bytes.NewReader(doc))
				dec.UseNumber()
				var v any
				if err := dec.Decode(&v); err != nil {
					b.Fatal(err)
				}
				v = naiveMask(v, false)
				if err := json.NewEncoder(io.Discard).Encode(v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func naiveMask(v any, masked bool) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = naiveMask(e, masked || naiveMatch(k))
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = naiveMask(e, masked)
		}
		return x
	case nil:
		return nil
	}
	if masked {
		return "[REDACTED]"
	}
	return v
}

func naiveMatch(k string) bool {
	n := normalizeString(k)
	for _, s := range piiSuffixes {
		if strings.HasSuffix(n, s) {
			return true
		}
	}
	for _, s := range piiExact {
		if n == s {
			return true
		}
	}
	return false
}

// BenchmarkPaired alternates json.Valid and the masker (default preset,
// mask) on the same document inside every iteration and reports the
// throughput ratio as x-valid. On a shared, noisy machine this ratio is far
// steadier than one computed from two benchmarks run minutes apart.
func BenchmarkPaired(b *testing.B) {
	cfg := MustCompile(Options{})
	for _, k := range benchKinds {
		doc := benchDoc(k)
		b.Run(k, func(b *testing.B) {
			s := cfg.NewStream(io.Discard)
			var tv, tm time.Duration
			for b.Loop() {
				t0 := time.Now()
				if !json.Valid(doc) {
					b.Fatal("invalid")
				}
				t1 := time.Now()
				s.Reset(io.Discard, ModeJSON)
				for off := 0; off < len(doc); off += benchChunk {
					s.Write(doc[off:min(off+benchChunk, len(doc))])
				}
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
				tv += t1.Sub(t0)
				tm += time.Since(t1)
			}
			b.ReportMetric(float64(tv)/float64(tm), "x-valid")
			b.ReportMetric(float64(len(doc))*float64(b.N)/tm.Seconds()/1e6, "mask-MB/s")
		})
	}
}
