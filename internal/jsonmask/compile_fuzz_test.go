package jsonmask

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzCompile: the policy parser (field names, JSON paths, keep paths)
// never panics, and whatever it accepts masks valid JSON into valid JSON.
// Each list is one string with its items separated by newlines.
func FuzzCompile(f *testing.F) {
	f.Add("ssn\n*_token", "$.data[*].notes\n$..secret\n$.a[0].b\n**.x", "$.campaign.name\n$.**.id", "mask", []byte(`{"data":[{"notes":"n","id":1}],"ssn":"1","a":[{"b":2}],"x_token":"t"}`))
	f.Add("", "$\n$.*\n$[\"we.ird\"]", "", "remove", []byte(`[{"email":"a@b.c"},{"name":"N"}]`))
	f.Add("Naïve\nſsn", "$.a.b.c.d.e", "$", "partial", []byte(`{"ſsn":"123-45-6789","phone":"+1 415 555 0101"}`))
	f.Add("", "$.a[", "", "null", []byte(`{}`))
	f.Fuzz(func(t *testing.T, fields, paths, keep, strategy string, doc []byte) {
		split := func(s string) []string {
			if s == "" {
				return nil
			}
			return strings.Split(s, "\n")
		}
		cfg, err := Compile(Options{Fields: split(fields), Paths: split(paths), Keep: split(keep),
			Strategy: strategy, HashKey: []byte("k"), Detect: []string{"email"}})
		if err != nil {
			return
		}
		var out bytes.Buffer
		s := cfg.NewStream(&out)
		_, werr := s.Write(doc)
		cerr := s.Close()
		// Valid, UTF-8, shallow input within the value limit must be
		// accepted: a refusal would be a bug in the compiled policy.
		if (werr != nil || cerr != nil) && json.Valid(doc) && utf8.Valid(doc) && len(doc) < 1500 && !bytes.Contains(doc, []byte(`\u`)) {
			t.Fatalf("valid input refused: %v %v", werr, cerr)
		}
		if werr == nil && cerr == nil && !json.Valid(out.Bytes()) {
			t.Fatalf("invalid output %q", out.Bytes())
		}
	})
}
