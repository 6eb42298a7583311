package jsonmask

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
)

// The fast loop (fast.go) must be invisible: for every input and every
// split, a Config that uses it produces the same bytes, the same error and
// the same counts as the same Config forced onto the general state machine.

// slowTwin returns a copy of cfg that never takes the fast loop.
func slowTwin(cfg *Config) *Config {
	c := *cfg
	c.fastPath = false
	return &c
}

// fastDocs exercise what the fast loop handles and where it must hand
// over: names at chunk boundaries, escapes, upper case, separators and
// non-ASCII in names, duplicates, white space, every scalar form, nesting,
// masked containers, and errors at every kind of position.
var fastDocs = []string{
	`{"email":"a@b.test","Email":"x","EMAIL":"y","workEmail":"z","e_mail":"1","e-mail":2,"E.Mail":true,"email ":false,"em ail":null}`,
	`{"e\u006dail":"a","em\"ail":"b","emaïl":"c","ｅmail":"d","e\u200bmail":"e","\u0065mail":"f","name\\":"g","":"h","n":"\u00e9"}`,
	`{"email":1,"email":2,"email":{"email":3},"id":"x","id":"y","name":[1,"a",true,false,null,{"x":[]},[]]}`,
	`{ "phone" : "555" , "list" : [ 1 , 2.5e-3 , -0 , 1E+9 , "x" , { "mobile" : [ "a" , -1.0 ] } ] , "z" : { } , "y" : [ ] }`,
	"{\n  \"name\": \"Ann\",\n\t\"tags\": [\"a\",\r\n \"b\"],\n  \"n\": 12\n}",
	`[{"firstName":"Ann","last_name":"Lee","displayName":{"a":"b","c":[1,{"d":"e"}]}},[[["x"]]],{},[],"s",1,true,null]`,
	`{"a":{"b":{"c":{"d":{"e":{"email":"deep","f":[[[[{"name":"x"}]]]]}}}}}}`,
	`{"mobile":-0.5e10,"phone":0,"email":true,"name":false,"surname":null,"x":1e5,"y":-12.75E-2}`,
	`{"note":"likes \u2615 and \ud83c\udf81 <3 &","bio":"Ünïcödé","email":"é@x.test","id":"e1"}`,
	`{"email":"` + strings.Repeat("x", 300) + `","id":"` + strings.Repeat("y", 70) + `"}`,
	// Values with escapes and non-ASCII text (validated by skipString),
	// masked and copied, in objects and arrays.
	`{"email":"\"quoted\" \\ \/ \b\f\n\r\t","name":"€𝄞 ü\u00fc \ud83c\udf81 \udc00 \ud800x","x":"é","y":["é",{"phone":"ü\u00FC"}]}`,
	"{\"a\":\"\xc0\x80\"}", "{\"name\":\"\xed\xa0\x80\"}", "{\"a\":\"\xf4\x90\x80\x80\"}", "{\"email\":\"\xe2\x82\"}", "[\"\xf0\x9f\x8e\"]",
	"{\"a\":\"é\x01\"}", "{\"email\":\"\x1fé\"}", "[\"\\u00e9\n\"]",
	`{"a":"x\u12"}`, `{"email":"\u12G4"}`, `{"a":"\x"}`, `["\`, `{"name":"é`,
	// Errors at every kind of position.
	`{"a":1,}`, `{"a":1,"b"}`, `{"a" 1}`, `{"a":01}`, `{"a":1.}`, `{"a":-}`, `{"a":1e}`, `{"a":tru}`, `{"a":nul,"b":1}`,
	`{"a":[1,]}`, `{"a":[1}`, `{"a":{]}`, `{"a":"b"]`, `[1 2]`, `{"a":1}}`, `{"a":"\x01"}`, "{\"a\":\"\xff\"}", `{"a":"b\q"}`,
	`{"a":}`, `{"a"::1}`, `{,"a":1}`, `{"a":1 "b":2}`, `[,1]`, `{"email":"x"`, `{"email":`, `[{"email":"x"},`,
	`{"a":[{"b":1},{"c":[true,false,null,"x",-1]}],"d":"e"}x`,
}

func TestFastLoopMatchesGeneral(t *testing.T) {
	cfgs := []*Config{MustCompile(Options{}), MustCompile(Options{Strategy: "null"}),
		MustCompile(Options{Fields: []string{"id", "*tags"}, Preset: "none"}), MustCompile(Options{MaxDepth: 4})}
	for ci, cfg := range cfgs {
		if !cfg.fastPath {
			t.Fatalf("config %d does not take the fast loop", ci)
		}
		slow := slowTwin(cfg)
		docs := append(fastDocs, string(denseDoc(4000)))
		for _, mode := range fuzzModes {
			for di, doc := range docs {
				in := []byte(doc)
				if mode == ModeJSONSeq {
					in = append([]byte{rs}, in...)
				}
				compareFastSlow(t, cfg, slow, mode, in, ci, di)
			}
		}
	}
}

func compareFastSlow(t *testing.T, fast, slow *Config, mode Mode, in []byte, ci, di int) {
	t.Helper()
	chunks := []int{0, 1, 2, 3, 7, 16, 33}
	for _, chunk := range chunks {
		want, ws, werr := maskAll(slow, mode, in, chunk)
		got, gs, gerr := maskAll(fast, mode, in, chunk)
		if got != want || (gerr == nil) != (werr == nil) || (gerr != nil && gerr.Error() != werr.Error()) || gs.Stats() != ws.Stats() {
			t.Fatalf("config %d doc %d mode %d chunk %d:\nfast %q %v %+v\nslow %q %v %+v", ci, di, mode, chunk, got, gerr, gs.Stats(), want, werr, ws.Stats())
		}
	}
	if len(in) > 600 {
		return
	}
	// Every single split point: names and values cut anywhere.
	for k := 1; k < len(in); k++ {
		got, gerr := split2(fast, mode, in, k)
		want, werr := split2(slow, mode, in, k)
		if got != want || (gerr == nil) != (werr == nil) || (gerr != nil && gerr.Error() != werr.Error()) {
			t.Fatalf("config %d doc %d mode %d split %d:\nfast %q %v\nslow %q %v", ci, di, mode, k, got, gerr, want, werr)
		}
	}
}

// split2 masks in written as two pieces, cut at k.
func split2(cfg *Config, mode Mode, in []byte, k int) (string, error) {
	var out bytes.Buffer
	s := cfg.NewStreamMode(&out, mode)
	_, err := s.Write(in[:k])
	if err == nil {
		_, err = s.Write(in[k:])
	}
	if err == nil {
		err = s.Close()
	}
	return out.String(), err
}

// FuzzFastLoop compares the fast loop with the general state machine on
// arbitrary input, split at a fuzz-chosen size.
//
//	go test -run '^$' -fuzz '^FuzzFastLoop$' -fuzztime 60s ./internal/jsonmask/
func FuzzFastLoop(f *testing.F) {
	for _, d := range fastDocs {
		f.Add([]byte(d), uint8(0), uint8(3))
	}
	f.Add(denseDoc(1500), uint8(1), uint8(7))
	f.Add([]byte("{\"email\":\"a\"}\n[1,{\"name\":2}]\n"), uint8(9), uint8(5))
	cfgs := []*Config{MustCompile(Options{}), MustCompile(Options{Strategy: "null", MaxDepth: 3}),
		MustCompile(Options{Fields: []string{"a", "*b"}})}
	f.Fuzz(func(t *testing.T, in []byte, sel, split uint8) {
		cfg := cfgs[int(sel)%len(cfgs)]
		mode := fuzzModes[int(sel/4)%len(fuzzModes)]
		slow := slowTwin(cfg)
		for _, chunk := range []int{0, 1 + int(split)%13} {
			want, ws, werr := maskAll(slow, mode, in, chunk)
			got, gs, gerr := maskAll(cfg, mode, in, chunk)
			if got != want || (gerr == nil) != (werr == nil) || (gerr != nil && gerr.Error() != werr.Error()) || gs.Stats() != ws.Stats() {
				t.Fatalf("chunk %d:\nfast %q %v %+v\nslow %q %v %+v", chunk, got, gerr, gs.Stats(), want, werr, ws.Stats())
			}
		}
	})
}

// TestFastNameCache drives the fast loop's name cache through hits,
// collisions and evictions: hundreds of distinct names, PII and not,
// around the 8- and 16-byte word boundaries of its keys and differing only
// in their last byte, each repeated in another order. Every value must be
// masked exactly as the general state machine masks it.
func TestFastNameCache(t *testing.T) {
	bases := []string{"email", "name", "phone", "id", "emailx", "xemail", "e_mail", "mobile", "dept",
		"workemail", "workEmail", "last_name", "lastnamex", "displayName", "abcdefgemail", "abcdefghemail",
		"abcdefghijemail", "abcdefghijkemail", "abcdefghijklemail", "abcdefghijklmnop",
		// Names sharing their first four bytes (one cache set, two ways),
		// prefixes of each other, and short ones whose set depends on the
		// bytes after them.
		"recipient_name", "recipient_email", "recipient_phone", "recipient_id", "recipient", "reci", "rec",
		"emai", "emails", "e", "", "na", `n\u0061me`, `em\"ail`, `nam\u00e9`}
	var names []string
	for _, b := range bases {
		names = append(names, b)
		for k := range 12 {
			names = append(names, b+strconv.Itoa(k), strconv.Itoa(k)+b)
		}
	}
	var doc strings.Builder
	doc.WriteString(`[`)
	for pass := range 3 {
		if pass > 0 {
			doc.WriteString(`,`)
		}
		doc.WriteString(`{`)
		for k := range names {
			j := (k*(2*pass+1) + pass*7) % len(names) // another order each pass
			if k > 0 {
				doc.WriteString(`,`)
			}
			doc.WriteString(`"` + names[j] + `":"v` + strconv.Itoa(j) + `"`)
		}
		doc.WriteString(`}`)
	}
	doc.WriteString(`]`)
	in := []byte(doc.String())
	for ci, cfg := range []*Config{MustCompile(Options{}), MustCompile(Options{Fields: []string{"*x", "dept"}, Preset: "none"})} {
		compareFastSlow(t, cfg, slowTwin(cfg), ModeJSON, in, ci, 0)
	}
	got, _, err := maskAll(MustCompile(Options{}), ModeJSON, in, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"email":"[REDACTED]"`, `"workEmail":"[REDACTED]"`, `"abcdefghijklemail":"[REDACTED]"`, `"id":"v`, `"emailx":"v`, `"abcdefghijklmnop":"v`,
		`"recipient_email":"[REDACTED]"`, `"recipient_name":"v`, `"recipient_id":"v`, `"reci":"v`, `"emails":"[REDACTED]"`, `"n\u0061me":"[REDACTED]"`} {
		if !strings.Contains(got, want) {
			t.Errorf("masked document lacks %s", want)
		}
	}
}
