package jsonmask

import (
	"bytes"
	"testing"
)

const testKey = "test-hash-key"

// maskAll feeds in through a Stream in the given chunk size (0: one write)
// and returns the output, the stream and the first error.
func maskAll(cfg *Config, mode Mode, in []byte, chunk int) (string, *Stream, error) {
	var out bytes.Buffer
	s := cfg.NewStreamMode(&out, mode)
	if chunk <= 0 {
		chunk = len(in) + 1
	}
	for off := 0; off < len(in); off += chunk {
		if _, err := s.Write(in[off:min(off+chunk, len(in))]); err != nil {
			return out.String(), s, err
		}
	}
	err := s.Close()
	return out.String(), s, err
}

func mustMask(t *testing.T, cfg *Config, mode Mode, in string) string {
	t.Helper()
	out, _, err := maskAll(cfg, mode, []byte(in), 0)
	if err != nil {
		t.Fatalf("mask %q: %v", in, err)
	}
	return out
}

func opts(o Options) *Config {
	if o.HashKey == nil {
		o.HashKey = []byte(testKey)
	}
	return MustCompile(o)
}

type maskCase struct {
	name string
	in   string
	want string
}

func runCases(t *testing.T, cfg *Config, mode Mode, cases []maskCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := mustMask(t, cfg, mode, tc.in)
			if got != tc.want {
				t.Errorf("in   %s\ngot  %s\nwant %s", tc.in, got, tc.want)
			}
			// Every split gives the same output.
			for k := 1; k < len(tc.in); k++ {
				var out bytes.Buffer
				s := cfg.NewStreamMode(&out, mode)
				_, err1 := s.Write([]byte(tc.in[:k]))
				_, err2 := s.Write([]byte(tc.in[k:]))
				err3 := s.Close()
				if err1 != nil || err2 != nil || err3 != nil || out.String() != got {
					t.Fatalf("split at %d: %v %v %v\ngot  %s\nwant %s", k, err1, err2, err3, out.String(), got)
				}
			}
		})
	}
}
