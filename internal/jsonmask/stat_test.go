package jsonmask

import (
	"encoding/json"
	"testing"
)

// TestDocStats checks the benchmark documents: valid, and as dense as the
// issue asks (about one string every 12 bytes for the dense one).
func TestDocStats(t *testing.T) {
	if testing.Short() {
		t.Skip("generates 20 MB")
	}
	d, l := benchDocs()
	for k, doc := range [][]byte{d, l} {
		if !json.Valid(doc) {
			t.Fatal("invalid doc")
		}
		n := 0
		in := false
		for i := 0; i < len(doc); i++ {
			c := doc[i]
			if in {
				if c == '\\' {
					i++
				} else if c == '"' {
					in = false
				}
			} else if c == '"' {
				in = true
				n++
			}
		}
		per := float64(len(doc)) / float64(n)
		t.Logf("size %d strings %d bytes/string %.1f", len(doc), n, per)
		if k == 0 && (per < 9 || per > 14) {
			t.Errorf("dense document has %.1f bytes per string", per)
		}
	}
}
