package jsonmask

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestFieldSpellings(t *testing.T) {
	cfg := opts(Options{Fields: []string{"ssn", "key", "date_of_birth", "*_token"}})
	masked := []string{
		`email`, `Email`, `EMAIL`, `e-mail`, `e_mail`, `email_address`, `emailAddress`,
		`E-Mail-Address`, `email.address`, `e mail`, `contactEmail`, `support_email`, `home_phone`,
		`workPhone`, `phone_numbers`, `mobileNumber`, `telephone`, `cellPhone`, `emails`, `Phones`,
		`mobile`, `name`, `Names`, `firstName`, `first_name`, `LastName`, `full-name`, `givenName`,
		`family_name`, `middleName`, `display_name`, `surname`, `preferredName`, `legal_name`,
		`em\u0061il`, `\u0065mail`, `e\u006Dail`, `E\u004dAIL`, `\u017Fsn`, `ſsn`, `SSN`,
		`\u212Aey`, "\u212Aey", `em\u200bail`, `e\u00ADmail`, `date-of-birth`, `DateOfBirth`,
		`refresh_token`, `accessToken`, `e\tmail`, `` + strings.Repeat("_", 5000) + `email`,
		strings.Repeat("x", 300) + `email`, strings.Repeat("x", 300) + `\u0065mail`,
	}
	for _, n := range masked {
		in := `{"` + n + `":"v","id":1}`
		want := `{"` + n + `":"[REDACTED]","id":1}`
		if got := mustMask(t, cfg, ModeJSON, in); got != want {
			t.Errorf("%s: got %s", n, got)
		}
	}
	plain := []string{
		`username`, `filename`, `hostname`, `companyName`, `nickname`, `id`, `emailVerified`,
		`ｅｍａｉｌ`, `e\u0301mail`, `names2`, `nameX`, `xname`, strings.Repeat("x", 300) + `name`,
		`emai`, ``, `phoneType`,
	}
	for _, n := range plain {
		in := `{"` + n + `":"v"}`
		if got := mustMask(t, cfg, ModeJSON, in); got != in {
			t.Errorf("%s: masked: %s", n, got)
		}
	}
}

func TestValueTypes(t *testing.T) {
	runCases(t, opts(Options{}), ModeJSON, []maskCase{
		{"string", `{"email":"ann@acme.test"}`, `{"email":"[REDACTED]"}`},
		{"number", `{"phone":15550101234}`, `{"phone":"[REDACTED]"}`},
		{"negative float", `{"phone":-1.5e+3,"x":2}`, `{"phone":"[REDACTED]","x":2}`},
		{"bools", `{"name":true,"email":false}`, `{"name":"[REDACTED]","email":"[REDACTED]"}`},
		{"null stays", `{"email":null}`, `{"email":null}`},
		{"object leaf by leaf", `{"name":{"first":"Ann","last":"Lee","n":[1,{"z":true}],"k":null}}`,
			`{"name":{"first":"[REDACTED]","last":"[REDACTED]","n":["[REDACTED]",{"z":"[REDACTED]"}],"k":null}}`},
		{"array of strings", `{"emails":["a@x.test","b@y.test"]}`, `{"emails":["[REDACTED]","[REDACTED]"]}`},
		{"empty containers", `{"name":{},"email":[]}`, `{"name":{},"email":[]}`},
		{"duplicates", `{"email":"a","email":"b","EMAIL":"c"}`, `{"email":"[REDACTED]","email":"[REDACTED]","EMAIL":"[REDACTED]"}`},
		{"nested deep", `{"a":{"b":[{"c":{"email":"x"}}]}}`, `{"a":{"b":[{"c":{"email":"[REDACTED]"}}]}}`},
		{"whitespace kept", "{ \"email\" : \"x\" ,\r\n\t\"a\" : [ 1 , 2 ] }", "{ \"email\" : \"[REDACTED]\" ,\r\n\t\"a\" : [ 1 , 2 ] }"},
		{"numbers verbatim", `{"a":-0,"b":1e400,"c":12345678901234567890123,"d":1.5E-7,"e":0.0}`, `{"a":-0,"b":1e400,"c":12345678901234567890123,"d":1.5E-7,"e":0.0}`},
		{"escapes verbatim", `{"a":"\u003c\/script\u003e \" \\ \n \ud83c\udf81 \ud800"}`, `{"a":"\u003c\/script\u003e \" \\ \n \ud83c\udf81 \ud800"}`},
		{"unicode value masked", `{"name":"Émile \ud83c\udf81 🎁"}`, `{"name":"[REDACTED]"}`},
		{"escaped value masked", `{"email":"ann\u0040acme.test \"q\""}`, `{"email":"[REDACTED]"}`},
		{"unicode verbatim", `{"city":"Zürich 🎁 東京"}`, `{"city":"Zürich 🎁 東京"}`},
		{"top-level array", `[{"email":"a"},{"name":"b"},3]`, `[{"email":"[REDACTED]"},{"name":"[REDACTED]"},3]`},
		{"top-level scalars", `"ann@acme.test"`, `"ann@acme.test"`},
		{"masked member name value key", `{"name":{"email":"x"}}`, `{"name":{"email":"[REDACTED]"}}`},
		{"bom dropped", "\xEF\xBB\xBF {\"email\":\"x\"}", ` {"email":"[REDACTED]"}`},
	})
}

func TestStrategies(t *testing.T) {
	in := `{"email":"ann@acme.test","phone":"+1 (555) 010-1234","name":"Ann","n":"A","e1":"a@acme.test","mobile":15550101234,` +
		`"phones":[42,true,null],"names":{"first":"\"quoted","x":"Émile"},"emailAddress":"ann\u0040acme.test","id":7}`
	t.Run("partial", func(t *testing.T) {
		cfg := opts(Options{Strategy: "partial", Fields: []string{"n", "e1"}})
		want := `{"email":"a***@acme.test","phone":"+* (***) ***-1234","name":"A***","n":"***","e1":"***@acme.test","mobile":"*******1234",` +
			`"phones":["4***","***",null],"names":{"first":"\"***","x":"É***"},"emailAddress":"a***@acme.test","id":7}`
		runCases(t, cfg, ModeJSON, []maskCase{{"all", in, want}})
	})
	t.Run("hash", func(t *testing.T) {
		cfg := opts(Options{Strategy: "hash", Fields: []string{"n", "e1"}})
		k := []byte(testKey)
		tok := func(v string) string { return `"` + hashToken(k, []byte(v)) + `"` }
		want := `{"email":` + tok("ann@acme.test") + `,"phone":` + tok("+1 (555) 010-1234") + `,"name":` + tok("Ann") +
			`,"n":` + tok("A") + `,"e1":` + tok("a@acme.test") + `,"mobile":` + tok("15550101234") +
			`,"phones":[` + tok("42") + `,` + tok("true") + `,null],"names":{"first":` + tok(`"quoted`) + `,"x":` + tok("Émile") +
			`},"emailAddress":` + tok("ann@acme.test") + `,"id":7}`
		runCases(t, cfg, ModeJSON, []maskCase{{"all", in, want}})
		if tok("ann@acme.test") != `"tok_`+hashToken(k, []byte("ann@acme.test"))[4:]+`"` || len(tok("x")) != 2+4+16 {
			t.Fatal("token shape")
		}
	})
	t.Run("null", func(t *testing.T) {
		cfg := opts(Options{Strategy: "null", Fields: []string{"n", "e1"}})
		want := `{"email":null,"phone":null,"name":null,"n":null,"e1":null,"mobile":null,` +
			`"phones":[null,null,null],"names":{"first":null,"x":null},"emailAddress":null,"id":7}`
		runCases(t, cfg, ModeJSON, []maskCase{{"all", in, want}})
	})
	t.Run("remove", func(t *testing.T) {
		cfg := opts(Options{Strategy: "remove", Fields: []string{"n", "e1"}})
		runCases(t, cfg, ModeJSON, []maskCase{
			{"all", in, `{"id":7}`},
			{"first", `{"email":"x","a":1}`, `{"a":1}`},
			{"middle", `{"a":1,"email":"x","b":2}`, `{"a":1,"b":2}`},
			{"last", `{"a":1,"email":{"x":[1,2]}}`, `{"a":1}`},
			{"only", `{"email":"x","name":[1]}`, `{}`},
			{"several", `{"email":"x","name":"y","a":1,"phone":2,"b":[],"mobile":null}`, `{"a":1,"b":[]}`},
			{"pretty", "{\n  \"a\": 1,\n  \"email\": \"x\",\n  \"b\": 2\n}", "{\n  \"a\": 1,\n  \"b\": 2\n}"},
			{"pretty last", "{\n  \"a\": 1,\n  \"email\": \"x\"\n}", "{\n  \"a\": 1\n}"},
			{"pretty first", "{\n  \"email\": \"x\",\n  \"a\": 1\n}", "{\n  \"a\": 1\n}"},
			{"empty", `{ }`, `{ }`},
			{"nested", `[{"email":"x"},{"a":{"name":"y","b":1}}]`, `[{},{"a":{"b":1}}]`},
			{"root masked", `{"x":1}`, `{"x":1}`},
		})
		cfg = opts(Options{Strategy: "remove", Paths: []string{"$.list[*]", "$.obj"}, Keep: []string{"$.keep.name.first"}})
		runCases(t, cfg, ModeJSON, []maskCase{
			{"elements", `{"list":[1,"a",{"b":2},[3]],"x":1}`, `{"list":[],"x":1}`},
			{"member path", `{"a":0,"obj":{"b":2},"x":1}`, `{"a":0,"x":1}`},
			{"keep inside removed", `{"keep":{"name":{"first":"A","last":"B","n":{"z":1}},"x":1}}`, `{"keep":{"name":{"first":"A"},"x":1}}`},
		})
		root := opts(Options{Strategy: "remove", Paths: []string{"$"}})
		runCases(t, root, ModeJSON, []maskCase{
			{"root object", `{"a":1}`, `null`},
			{"root scalar", ` "x" `, ` null `},
		})
	})
	t.Run("mask", func(t *testing.T) {
		cfg := opts(Options{Fields: []string{"n", "e1"}})
		want := `{"email":"[REDACTED]","phone":"[REDACTED]","name":"[REDACTED]","n":"[REDACTED]","e1":"[REDACTED]","mobile":"[REDACTED]",` +
			`"phones":["[REDACTED]","[REDACTED]",null],"names":{"first":"[REDACTED]","x":"[REDACTED]"},"emailAddress":"[REDACTED]","id":7}`
		runCases(t, cfg, ModeJSON, []maskCase{{"all", in, want}})
	})
}

func TestFieldCount(t *testing.T) {
	_, s, err := maskAll(opts(Options{Detect: []string{"email"}}), ModeJSON,
		[]byte(`{"email":"a","name":{"first":"x","last":null,"n":[1,2]},"note":"mail a@b.test and c@d.test","id":1}`), 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Stats().Fields; got != 6 {
		t.Errorf("fields = %d, want 6", got)
	}
	if s.Stats().BytesIn == 0 || s.Stats().BytesOut == 0 || s.Stats().Records != 1 {
		t.Errorf("stats %+v", s.Stats())
	}
}

func TestPathsAndKeep(t *testing.T) {
	cfg := opts(Options{
		Preset: "none",
		Paths:  []string{"$.data[*].notes", "$.**.secret", "$..token", `$["weird key"]`, "$.*.x", "$.Arr[*]", `$['q.d']`, "$.deep.**"},
		Keep:   []string{"$.data[1].notes"},
	})
	runCases(t, cfg, ModeJSON, []maskCase{
		{"elements", `{"data":[{"notes":"a","n":1},{"notes":"b"},{"notes":"c"}],"notes":"top"}`, `{"data":[{"notes":"[REDACTED]","n":1},{"notes":"b"},{"notes":"[REDACTED]"}],"notes":"top"}`},
		{"any depth", `{"secret":1,"a":{"b":[{"secret":"s"}]}}`, `{"secret":"[REDACTED]","a":{"b":[{"secret":"[REDACTED]"}]}}`},
		{"dotdot", `{"token":"t","a":[{"t":{"token":"u"}}]}`, `{"token":"[REDACTED]","a":[{"t":{"token":"[REDACTED]"}}]}`},
		{"quoted", `{"weird key":"w","weirdkey":"v","q.d":1,"q":{"d":2}}`, `{"weird key":"[REDACTED]","weirdkey":"[REDACTED]","q.d":"[REDACTED]","q":{"d":2}}`},
		{"any member", `{"a":{"x":1},"b":{"x":2,"y":3},"x":4}`, `{"a":{"x":"[REDACTED]"},"b":{"x":"[REDACTED]","y":3},"x":4}`},
		{"normalised", `{"arr":[1,2],"ARR":[3]}`, `{"arr":["[REDACTED]","[REDACTED]"],"ARR":["[REDACTED]"]}`},
		{"deep", `{"deep":{"a":[1,{"b":"c"}]},"deeper":1}`, `{"deep":{"a":["[REDACTED]",{"b":"[REDACTED]"}]},"deeper":1}`},
	})
	// keep wins at its path only, and over the preset and detectors.
	cfg = opts(Options{Keep: []string{"$.campaign.name", "$.public", "$.list[*].note"}, Detect: []string{"email"}})
	runCases(t, cfg, ModeJSON, []maskCase{
		{"keep exact", `{"campaign":{"name":"Spring","email":"x"},"employees":[{"name":"Ann"}]}`,
			`{"campaign":{"name":"Spring","email":"[REDACTED]"},"employees":[{"name":"[REDACTED]"}]}`},
		{"keep subtree", `{"public":{"email":"help@acme.test","n":{"name":"A"},"ann@acme.test":1},"email":"x"}`,
			`{"public":{"email":"help@acme.test","n":{"name":"A"},"ann@acme.test":1},"email":"[REDACTED]"}`},
		{"keep beats detect", `{"list":[{"note":"ann@acme.test","other":"bob@acme.test"}]}`,
			`{"list":[{"note":"ann@acme.test","other":"[REDACTED]"}]}`},
	})
	// keep inside a masked container.
	cfg = opts(Options{Keep: []string{"$.name.public"}})
	runCases(t, cfg, ModeJSON, []maskCase{
		{"keep under match", `{"name":{"public":"P","x":"X"}}`, `{"name":{"public":"P","x":"[REDACTED]"}}`},
	})
	// root path selects everything; root keep disables everything.
	runCases(t, opts(Options{Paths: []string{"$"}}), ModeJSON, []maskCase{
		{"root", `{"a":[1,"x"],"b":null}`, `{"a":["[REDACTED]","[REDACTED]"],"b":null}`},
	})
	runCases(t, opts(Options{Keep: []string{"$"}, Detect: []string{"email"}}), ModeJSON, []maskCase{
		{"root keep", `{"email":"a@b.test"}`, `{"email":"a@b.test"}`},
	})
}

func TestDetectors(t *testing.T) {
	cfg := opts(Options{Detect: []string{"email", "phone"}})
	runCases(t, cfg, ModeJSON, []maskCase{
		{"email in text", `{"note":"call ann@acme.test today"}`, `{"note":"call [REDACTED] today"}`},
		{"two emails", `{"note":"a.b+c@x.acme.test,zed@ex-ample.org."}`, `{"note":"[REDACTED],[REDACTED]."}`},
		{"escaped email", `{"note":"ann\u0040acme.test \u00e9"}`, `{"note":"[REDACTED] \u00e9"}`},
		{"escape around", `{"note":"\"ann@acme.test\"\n"}`, `{"note":"\"[REDACTED]\"\n"}`},
		{"phone formats", `{"n":"+44 20 7946 0958 / (555) 010-1234 / 555.010.1234 / 5550101234"}`,
			`{"n":"[REDACTED] / [REDACTED] / [REDACTED] / [REDACTED]"}`},
		{"not phones", `{"n":"2024-01-15 15/01/2024 192.168.100.200 12345.6789 A1234567 123e4567-e89b-12d3-a456-426614174000 v1.2.3 42"}`,
			`{"n":"2024-01-15 15/01/2024 192.168.100.200 12345.6789 A1234567 123e4567-e89b-12d3-a456-426614174000 v1.2.3 42"}`},
		{"not emails", `{"n":"a@b x@localhost @acme.test me@ foo@bar.c"}`, `{"n":"a@b x@localhost @acme.test me@ foo@bar.c"}`},
		{"member name", `{"contacts":{"ann@acme.test":{"x":1},"+1 555 010 1234":2}}`, `{"contacts":{"[REDACTED]":{"x":1},"[REDACTED]":2}}`},
		{"escaped member name", `{"ann\u0040acme.test":1,"é ann@acme.test":2}`, `{"[REDACTED]":1,"é [REDACTED]":2}`},
		{"array", `{"cc":["ann@acme.test","x"]}`, `{"cc":["[REDACTED]","x"]}`},
		{"top-level", `"ann@acme.test"`, `"[REDACTED]"`},
		{"unicode text", `{"n":"Grüße an ann@acme.test 🎁"}`, `{"n":"Grüße an [REDACTED] 🎁"}`},
		{"number not scanned", `{"n":15550101234}`, `{"n":15550101234}`},
	})
	partial := opts(Options{Detect: []string{"email", "phone"}, Strategy: "partial"})
	runCases(t, partial, ModeJSON, []maskCase{
		{"partial", `{"note":"ann@acme.test or +1 (555) 010-1234"}`, `{"note":"a***@acme.test or +* (***) ***-1234"}`},
	})
	hash := opts(Options{Detect: []string{"email"}, Strategy: "hash"})
	runCases(t, hash, ModeJSON, []maskCase{
		{"hash", `{"note":"to ann\u0040acme.test"}`, `{"note":"to ` + hashToken([]byte(testKey), []byte("ann@acme.test")) + `"}`},
	})
	null := opts(Options{Detect: []string{"email"}, Strategy: "null"})
	runCases(t, null, ModeJSON, []maskCase{
		{"null", `{"note":"to ann@acme.test","b":"x","ann@acme.test":1}`, `{"note":null,"b":"x","[REDACTED]":1}`},
	})
	remove := opts(Options{Detect: []string{"email"}, Strategy: "remove"})
	runCases(t, remove, ModeJSON, []maskCase{
		{"remove", `{"a":1,"note":"to ann@acme.test","b":"x","ann@acme.test":{"y":1},"c":["z@y.test","k"]}`, `{"a":1,"b":"x","c":["k"]}`},
		{"remove escaped", `{"n\u00e9":"to ann\u0040acme.test","b":"\u00e9"}`, `{"b":"\u00e9"}`},
	})
	// Without detect, text passes (documented).
	runCases(t, opts(Options{}), ModeJSON, []maskCase{
		{"no detect", `{"note":"ann@acme.test"}`, `{"note":"ann@acme.test"}`},
	})
}

func TestLongValuesFailClosed(t *testing.T) {
	cfg := opts(Options{Detect: []string{"email"}, MaxValueBytes: 1024})
	long := strings.Repeat("é", 600) // 1200 bytes, no escapes but not ASCII: slow path
	got := mustMask(t, cfg, ModeJSON, `{"a":"`+long+`","b":"`+strings.Repeat("x", 2000)+`"}`)
	want := `{"a":"[REDACTED]","b":"[REDACTED]"}`
	if got != want {
		t.Errorf("got %.80s", got)
	}
	// The limits do not depend on how the input is split.
	ws := strings.Repeat(" ", 3000)
	for _, o := range []Options{
		{Detect: []string{"email"}, MaxValueBytes: 512},
		{Detect: []string{"email"}, Strategy: "remove", MaxValueBytes: 512},
		{Strategy: "remove", MaxValueBytes: 512},
	} {
		cfg := opts(o)
		in := `{"` + strings.Repeat("n", 600) + `":1,` + ws + `"b":[` + ws + `],"c":{` + ws + `},"` +
			strings.Repeat("é", 300) + `":2,"d":"` + strings.Repeat("x", 600) + `","e":[` + ws + `1,` + ws + `"y"]}`
		want, _, err := maskAll(cfg, ModeJSON, []byte(in), 0)
		if err != nil || !json.Valid([]byte(want)) {
			t.Fatal(err, want)
		}
		for _, chunk := range []int{1, 7, 100, 1000} {
			if got, _, err := maskAll(cfg, ModeJSON, []byte(in), chunk); err != nil || got != want {
				t.Fatalf("%+v chunk %d:\ngot  %q\nwant %q", o, chunk, got, want)
			}
		}
	}
	// partial on a long value keeps only the first character.
	p := opts(Options{Strategy: "partial"})
	if got := mustMask(t, p, ModeJSON, `{"name":"`+strings.Repeat("ab@", 500)+`x.test"}`); got != `{"name":"a***"}` {
		t.Errorf("partial long: %s", got)
	}
}

func TestModes(t *testing.T) {
	cfg := opts(Options{})
	runCases(t, cfg, ModeNDJSON, []maskCase{
		{"lines", "{\"email\":\"a\"}\n{\"name\":\"b\"}\n\n  \n[1]\r\n\"x\"\n7", "{\"email\":\"[REDACTED]\"}\n{\"name\":\"[REDACTED]\"}\n\n  \n[1]\r\n\"x\"\n7"},
		{"empty", "", ""},
		{"trailing newline", "{}\n", "{}\n"},
	})
	runCases(t, cfg, ModeJSONSeq, []maskCase{
		{"records", "\x1e{\"email\":\"a\"}\n\x1e[\n1]\n\x1e\x1e  7\n", "\x1e{\"email\":\"[REDACTED]\"}\n\x1e[\n1]\n\x1e\x1e  7\n"},
		{"empty", "", ""},
	})
	bad := []struct {
		mode Mode
		in   string
	}{
		{ModeNDJSON, "{\"a\":\n1}\n"},
		{ModeNDJSON, "{\"a\":1} {\"b\":2}\n"},
		{ModeNDJSON, "{\"a\":1}\n{\"b\":"},
		{ModeNDJSON, "1 2\n"},
		{ModeJSONSeq, "{\"a\":1}"},
		{ModeJSONSeq, "\x1e{\"a\":\x1e1}"},
		{ModeJSONSeq, "\x1e1 2"},
		{ModeJSON, "{} {}"},
		{ModeJSON, "{}\n{}"},
	}
	for _, b := range bad {
		if out, _, err := maskAll(cfg, b.mode, []byte(b.in), 0); err == nil {
			t.Errorf("mode %d %q: no error, out %q", b.mode, b.in, out)
		}
	}
	_, s, _ := maskAll(cfg, ModeNDJSON, []byte("1\n2\n\n3"), 0)
	if s.Stats().Records != 3 {
		t.Errorf("records = %d", s.Stats().Records)
	}
}

func TestInvalid(t *testing.T) {
	cfg := opts(Options{Detect: []string{"email"}})
	cases := []string{
		``, ` `, `{`, `[`, `}`, `]`, `[}`, `{]`, `{"a":01}`, `01`, `-01`, `.5`, `+1`, `1.`, `-`, `1e`, `1e+`, `1.e5`,
		`[1,]`, `{"a":1,}`, `{,}`, `[,1]`, `{"a" 1}`, `{"a":1 "b":2}`, `[1 2]`, `{1:2}`, `{"a"}`, `{"a":}`,
		`tru`, `truex`, `nul`, `nulll`, `True`, `NaN`, `Infinity`, `"\x"`, `"\u12"`, `"\u12G4"`, "\"a\tb\"", "\"a\nb\"",
		`"abc`, `{"email":"abc`, `{}x`, `{}{}`, `"\'"`, "\"\xff\"", "\"\xc0\xaf\"", "\"\xed\xa0\x80\"", "\"\xe2\x82\"",
		"\"\xf8\x88\x80\x80\x80\"", "\xEF\xBB{}", "{}\xEF\xBB\xBF", "{\"a\":[}", "\x00", `{"a":"b"]`, `[1}`,
		`{"email":tru}`, `{"email":"\q"}`, "{\"\xff\":1}",
	}
	for _, in := range cases {
		out, _, err := maskAll(cfg, ModeJSON, []byte(in), 0)
		if err == nil {
			t.Errorf("%q: accepted, out %q", in, out)
			continue
		}
		if !strings.Contains(err.Error(), "offset") {
			t.Errorf("%q: error without offset: %v", in, err)
		}
		if json.Valid([]byte(in)) && utf8.ValidString(in) {
			t.Errorf("%q: rejected but encoding/json accepts it", in)
		}
	}
	// Valid oddities are accepted.
	for _, in := range []string{`"\ud800"`, `"\udc00\ud800x"`, `"\u0000"`, `[[[]]]`, ` 0 `, `-0.0e-0`, `"\/"`, `{"":""}`} {
		if _, _, err := maskAll(cfg, ModeJSON, []byte(in), 0); err != nil {
			t.Errorf("%q: %v", in, err)
		}
	}
}

func TestDepth(t *testing.T) {
	cfg := opts(Options{MaxDepth: 10})
	if _, _, err := maskAll(cfg, ModeJSON, []byte(strings.Repeat("[", 10)+strings.Repeat("]", 10)), 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := maskAll(cfg, ModeJSON, []byte(strings.Repeat("[", 11)+strings.Repeat("]", 11)), 0); err == nil {
		t.Fatal("depth 11 accepted")
	}
	deep := []byte(strings.Repeat(`{"a":[`, 100000))
	if _, _, err := maskAll(opts(Options{}), ModeJSON, deep, 0); err == nil {
		t.Fatal("100000 levels accepted")
	}
}
