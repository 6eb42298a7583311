package jsonmask

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// Fuzz targets. Run each with, e.g.:
//
//	go test -run x -fuzz FuzzValid -fuzztime 60s ./internal/jsonmask/
//	go test -run x -fuzz FuzzNoLeak -fuzztime 60s ./internal/jsonmask/
//
// Seed corpora live in testdata/fuzz/<FuzzName>/.

var fuzzConfigs = []*Config{
	MustCompile(Options{}),
	MustCompile(Options{Detect: []string{"email", "phone"}, Strategy: "partial"}),
	MustCompile(Options{Detect: []string{"email"}, Strategy: "remove", Paths: []string{"$..a", "$.b[*]"}, Keep: []string{"$.k"}}),
	MustCompile(Options{Strategy: "hash", HashKey: []byte("k"), Paths: []string{"$"}, Keep: []string{"$.**.id"}}),
	MustCompile(Options{Strategy: "null", Detect: []string{"phone"}, MaxValueBytes: 512}),
}

var fuzzModes = []Mode{ModeJSON, ModeNDJSON, ModeJSONSeq}

func trimBOM(b []byte) []byte { return bytes.TrimPrefix(b, bomBytes[:]) }

// refValid is the reference acceptance: RFC 8259 JSON (encoding/json's
// grammar, plus UTF-8), framed per mode.
func refValid(mode Mode, in []byte) bool {
	in = trimBOM(in)
	if !utf8.Valid(in) {
		return false
	}
	switch mode {
	case ModeNDJSON:
		for _, line := range bytes.Split(in, []byte{'\n'}) {
			if len(bytes.Trim(line, " \t\r")) > 0 && !json.Valid(line) {
				return false
			}
		}
		return true
	case ModeJSONSeq:
		recs := bytes.Split(in, []byte{rs})
		if len(bytes.Trim(recs[0], " \t\r\n")) > 0 {
			return false
		}
		for _, r := range recs[1:] {
			if len(bytes.Trim(r, " \t\r\n")) > 0 && !json.Valid(r) {
				return false
			}
		}
		return true
	}
	return json.Valid(in)
}

func FuzzValid(f *testing.F) {
	for _, s := range fuzzSeedsValid() {
		f.Add([]byte(s), uint8(0), uint16(3))
	}
	f.Add([]byte(leakDoc), uint8(1), uint16(100))
	f.Add([]byte("{\"email\":\"a\"}\n\n[1]\n"), uint8(5), uint16(4))
	f.Add([]byte("\x1e{\"a\":1}\n\x1e\x1e2\n"), uint8(10), uint16(9))
	f.Fuzz(func(t *testing.T, in []byte, sel uint8, split uint16) {
		cfg := fuzzConfigs[int(sel)%len(fuzzConfigs)]
		mode := fuzzModes[int(sel/8)%len(fuzzModes)]
		out, _, err := maskAll(cfg, mode, in, 0)
		valid := refValid(mode, in)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("non-syntax error: %v", err)
			}
			if valid && se.Msg != "nesting too deep" {
				t.Fatalf("valid input rejected: %v", err)
			}
		} else {
			if !valid {
				t.Fatalf("invalid input accepted, out %q", out)
			}
			checkOutput(t, mode, []byte(out))
		}
		// Chunking never changes the outcome.
		chunk := 1 + int(split)%9
		if len(in) > 2000 {
			chunk = 1 + int(split)%500
		}
		out2, _, err2 := maskAll(cfg, mode, in, chunk)
		if (err == nil) != (err2 == nil) || (err == nil && out != out2) {
			t.Fatalf("chunk %d: %v / %v\n%q\n%q", chunk, err, err2, out, out2)
		}
		// The default policy agrees with the encoding/json round trip.
		if err == nil && sel%len8(fuzzConfigs) == 0 && mode == ModeJSON {
			var a, b any
			da := json.NewDecoder(bytes.NewReader(trimBOM(in)))
			da.UseNumber()
			db := json.NewDecoder(strings.NewReader(out))
			db.UseNumber()
			if da.Decode(&a) == nil && db.Decode(&b) == nil {
				if want := naiveMask(a, false); !reflect.DeepEqual(want, b) && !hasDupKeys(in) {
					t.Fatalf("differs from the reference model\nin  %q\nout %q", in, out)
				}
			}
		}
	})
}

func len8(c []*Config) uint8 { return uint8(len(c)) }

// hasDupKeys reports duplicate member names anywhere: the reference model
// (a Go map) keeps only the last of them, the masker keeps them all.
func hasDupKeys(in []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(trimBOM(in)))
	type frame struct {
		keys      map[string]bool // nil for arrays
		expectKey bool
	}
	var stack []*frame
	valueDone := func() {
		if len(stack) > 0 && stack[len(stack)-1].keys != nil {
			stack[len(stack)-1].expectKey = true
		}
	}
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		top := (*frame)(nil)
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{':
				stack = append(stack, &frame{keys: map[string]bool{}, expectKey: true})
			case '[':
				stack = append(stack, &frame{})
			default:
				stack = stack[:len(stack)-1]
				valueDone()
			}
		case string:
			if top != nil && top.keys != nil && top.expectKey {
				if top.keys[v] {
					return true
				}
				top.keys[v] = true
				top.expectKey = false
				continue
			}
			valueDone()
		default:
			valueDone()
		}
	}
}

func checkOutput(t *testing.T, mode Mode, out []byte) {
	t.Helper()
	switch mode {
	case ModeJSON:
		if !json.Valid(out) {
			t.Fatalf("invalid output %q", out)
		}
	case ModeNDJSON, ModeJSONSeq:
		if !refValid(mode, out) {
			t.Fatalf("invalid output %q", out)
		}
	}
}

func fuzzSeedsValid() []string {
	return []string{
		`{}`, `[]`, `{"email":"ann@acme.test","a":[1,2,{"name":{"x":true}}]}`, `"ann@acme.test"`, `-0.5e-3`,
		`{"em\u0061il":"x","\u017Fsn":1,"e_mail":null}`, `{"a":"\ud83c\udf81\ud800\\\"\/"}`, "\xEF\xBB\xBF[1]",
		`{"note":"call +1 (555) 010-1234 or ann@acme.test"}`, `{"a":{"b":[{"a":1}]},"b":["x",{"y":2}],"k":{"email":"z"}}`,
		`{"id":1,"x":{"id":"keep"}}`, `[1,]`, `{"a":01}`, "\"\xff\"", `{"ann@acme.test":{"email":[]}}`,
		`{"contactEmail":"x@y.test","names":["A","B"],"long":"` + strings.Repeat("é", 400) + `"}`,
	}
}

// leakGen builds a JSON document from fuzz bytes, planting canaries ("SEC",
// 98765…) only in values that a rule of leakFuzzOptions must mask, so the
// oracle is exact: the output must never contain a canary.
type leakGen struct {
	in    []byte
	pos   int
	b     []byte
	n     int
	inPub int // inside a "pub" member, which keep protects: nothing secret there
}

func (g *leakGen) next() int {
	if g.pos >= len(g.in) {
		return 0
	}
	c := g.in[g.pos]
	g.pos++
	return int(c)
}

var matchedNames = []string{`email`, `Em\u0061il`, `home_phone`, `\u017Fsn`, `first-name`, `e\u200bmail`, `CONTACT_EMAIL`, `mobileNumber`, `\u0065mails`, `secret`}
var plainNames = []string{`id`, `info`, `x`, `items`, `n\u00e9`, `list`, `e`}

func (g *leakGen) ws() {
	switch g.next() % 6 {
	case 1:
		g.b = append(g.b, ' ')
	case 2:
		g.b = append(g.b, "\n  "...)
	case 3:
		g.b = append(g.b, "\t\r\n"...)
	}
}

func (g *leakGen) str(secret bool) {
	g.n++
	id := strconv.Itoa(g.n)
	g.b = append(g.b, '"')
	switch k := g.next() % 8; {
	case !secret && k == 7 && g.inPub == 0:
		g.b = append(g.b, "note for SECq"+id+"@acme.test ok"...) // detected email
	case !secret:
		g.b = append(g.b, "pub-"+id+` \u00e9 🎁 \"q\"`...)
	case k == 0:
		g.b = append(g.b, "SEC"+id...)
	case k == 1:
		g.b = append(g.b, `S\u0045C`+id...)
	case k == 2:
		g.b = append(g.b, `\u0053EC`+id+`@acme.test`...)
	case k == 3:
		g.b = append(g.b, "SEC"+strings.Repeat("y", 700+g.n%50)...)
	case k == 4:
		g.b = append(g.b, `SEC \ud83c\udf81 é \"\\ `+id...)
	case k == 5:
		g.b = append(g.b, "+1 (555) 98765-"+id...)
	default:
		g.b = append(g.b, "SEC-"+id+"@x.test"...)
	}
	g.b = append(g.b, '"')
}

func (g *leakGen) value(secret bool, depth int) {
	g.ws()
	k := g.next() % 7
	if depth > 6 {
		k %= 3
	}
	switch k {
	case 0:
		g.str(secret)
	case 1:
		if secret {
			g.b = append(g.b, "98765"...)
			g.b = strconv.AppendInt(g.b, int64(g.next()), 10)
		} else {
			g.b = append(g.b, "-1.5e3"...)
		}
	case 2:
		g.b = append(g.b, [...]string{"true", "false", "null"}[g.next()%3]...)
	case 3, 4:
		g.b = append(g.b, '{')
		for i, m := 0, g.next()%5; i < m; i++ {
			if i > 0 {
				g.b = append(g.b, ',')
			}
			g.ws()
			sec := secret
			c := g.next() % 5
			if g.inPub > 0 && c < 3 {
				c = 4
			}
			switch c {
			case 0, 1:
				g.b = append(g.b, `"`+matchedNames[g.next()%len(matchedNames)]+`"`...)
				sec = true
			case 2:
				// Detected PII as a member name; its value is public.
				g.b = append(g.b, `"SECk`+strconv.Itoa(g.n)+`@acme.test"`...)
				g.n++
			case 3:
				// Kept by $..pub everywhere: never a canary inside.
				g.b = append(g.b, `"pub"`...)
				sec = false
			default:
				g.b = append(g.b, `"`+plainNames[g.next()%len(plainNames)]+`"`...)
			}
			g.ws()
			g.b = append(g.b, ':')
			if c == 3 {
				g.inPub++
			}
			g.value(sec && g.inPub == 0, depth+1)
			if c == 3 {
				g.inPub--
			}
			g.ws()
		}
		g.b = append(g.b, '}')
	default:
		g.b = append(g.b, '[')
		for i, m := 0, g.next()%4; i < m; i++ {
			if i > 0 {
				g.b = append(g.b, ',')
			}
			g.value(secret, depth+1)
		}
		g.ws()
		g.b = append(g.b, ']')
	}
}

var leakFuzzOptions = func() []*Config {
	var out []*Config
	for _, st := range []string{"mask", "partial", "hash", "null", "remove"} {
		for _, keep := range [][]string{nil, {"$..pub"}} {
			out = append(out, MustCompile(Options{Strategy: st, HashKey: []byte("k"), Fields: []string{"ssn", "secret"},
				Detect: []string{"email"}, Keep: keep, MaxValueBytes: 600}))
		}
	}
	return out
}()

// hideTokens blanks hash tokens, whose hex digits could spell a canary.
func hideTokens(out []byte) []byte {
	out = bytes.Clone(out)
	for i := 0; ; {
		j := bytes.Index(out[i:], []byte("tok_"))
		if j < 0 {
			return out
		}
		i += j
		for k := i; k < i+20 && k < len(out); k++ {
			out[k] = '_'
		}
		i += 4
	}
}

func FuzzNoLeak(f *testing.F) {
	for _, s := range []string{"", "\x00\x03\x02\x00\x00", "\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f",
		"\x03\x04\x00\x01\x00\x03\x03\x02\x00\x01", "\x09\x13\x24\x35\x46\x57\x68\x79\x8a\x9b\xac\xbd\xce\xdf",
		strings.Repeat("\x04\x03\x01", 30), strings.Repeat("\x05\x03\x02\x07", 25)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 3 {
			return
		}
		cfg := leakFuzzOptions[int(in[0])%len(leakFuzzOptions)]
		chunk := int(in[1]) % 17
		g := &leakGen{in: in[3:]}
		g.value(false, 0)
		if g.pos < len(g.in) {
			// More values: a flat top-level array of them.
			g.b = append([]byte{'['}, g.b...)
			for g.pos < len(g.in) && len(g.b) < 1<<16 {
				g.b = append(g.b, ',')
				g.value(false, 0)
			}
			g.b = append(g.b, ']')
		}
		doc := g.b
		if !json.Valid(doc) {
			t.Fatalf("generator made invalid JSON: %s", doc)
		}
		out, _, err := maskAll(cfg, ModeJSON, doc, chunk)
		if err != nil {
			t.Fatalf("%v on %s", err, doc)
		}
		if !json.Valid([]byte(out)) {
			t.Fatalf("invalid output %s\nfrom %s", out, doc)
		}
		if c := leaks(string(hideTokens([]byte(out)))); c != "" {
			t.Fatalf("%q leaked:\nin  %s\nout %s", c, doc, out)
		}
		// Truncated at a fuzz-chosen offset: an error, and still no canary.
		cut := int(in[2]) * len(doc) / 256
		out, _, err = maskAll(cfg, ModeJSON, doc[:cut], chunk)
		if err == nil && !json.Valid(doc[:cut]) {
			t.Fatalf("truncation at %d accepted", cut)
		}
		if c := leaks(string(hideTokens([]byte(out)))); c != "" {
			t.Fatalf("%q leaked after truncation at %d:\nin  %s\nout %s", c, cut, doc, out)
		}
	})
}

func TestHasDupKeys(t *testing.T) {
	for in, want := range map[string]bool{`{"a":1,"b":{"a":2}}`: false, `{"a":1,"a":2}`: true, `[{"a":[1,{"b":1}],"c":"a"},{"a":3,"a":4}]`: true, `{"a":"a","b":"b"}`: false} {
		if hasDupKeys([]byte(in)) != want {
			t.Errorf("%s", in)
		}
	}
}
