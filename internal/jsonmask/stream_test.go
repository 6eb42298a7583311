package jsonmask

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// leakDoc plants canaries ("SEC", "S\u0045C" raw, digits 98765) only where
// a masking rule applies, in every shape: escaped names, numbers,
// containers, detected substrings, PII member names, a long string that
// spans chunks, and pretty-printing.
var leakDoc = strings.Join([]string{
	`{"id":1,"email":"SEC-a1@acme.test","em\u0061il":"S\u0045C-a2",`,
	"\n  \"phone\" : 98765123 ,\n  \"name\":{\"first\":\"SEC-n1\",\"list\":[\"SEC-n2\",98765432,true,null,{\"x\":\"SEC-n3\"}],\"pub\":\"kept-value\"},",
	`"note":"hi SECx@acme.test there, call +1 (555) 987-6543","contacts":{"SECy@acme.test":1,"ok":2},`,
	`"data":[{"notes":"SEC-p1","n":1},{"notes":"SEC-p2"}],"emails":["SEC-e1@x.test","S\u0045C-e2"],`,
	`"long_email":"SEC` + strings.Repeat("x", 3000) + `","names":["SEC é 🎁 \ud83c\udf81"],"public":{"support_email":"help@acme.test"},`,
	`"cc":["SECz@acme.test"],"t":[1,2.5e3,-0,"plain \u00e9 text"],"ſsn":"SEC-f1","ssn":98765999}`,
}, "")

var leakOptions = []Options{
	{Detect: []string{"email", "phone"}, Paths: []string{"$.data[*].notes"}, Keep: []string{"$.public"}, Fields: []string{"ssn"}},
	{Strategy: "partial", Detect: []string{"email", "phone"}, Paths: []string{"$.data[*].notes"}, Keep: []string{"$.public"}, Fields: []string{"ssn"}},
	{Strategy: "hash", Detect: []string{"email", "phone"}, Paths: []string{"$.data[*].notes"}, Keep: []string{"$.public"}, Fields: []string{"ssn"}},
	{Strategy: "null", Detect: []string{"email", "phone"}, Paths: []string{"$.data[*].notes"}, Keep: []string{"$.public"}, Fields: []string{"ssn"}},
	{Strategy: "remove", Detect: []string{"email", "phone"}, Paths: []string{"$.data[*].notes"}, Keep: []string{"$.public"}, Fields: []string{"ssn"}},
	{Strategy: "remove", Detect: []string{"email", "phone"}, Paths: []string{"$.data[*].notes"}, Keep: []string{"$.public", "$.name.pub"}, Fields: []string{"ssn"}, MaxValueBytes: 1024},
}

func leaks(out string) string {
	for _, c := range []string{"SEC", `S\u0045C`, "98765"} {
		if strings.Contains(out, c) {
			return c
		}
	}
	return ""
}

func TestNoLeakFullDocument(t *testing.T) {
	if !json.Valid([]byte(leakDoc)) {
		t.Fatal("leakDoc invalid")
	}
	for i, o := range leakOptions {
		cfg := opts(o)
		out, _, err := maskAll(cfg, ModeJSON, []byte(leakDoc), 0)
		if err != nil {
			t.Fatalf("options %d: %v", i, err)
		}
		if c := leaks(out); c != "" {
			t.Errorf("options %d: %q leaked:\n%s", i, c, out)
		}
		if !json.Valid([]byte(out)) {
			t.Errorf("options %d: invalid output:\n%s", i, out)
		}
		if i == 5 && !strings.Contains(out, `"name":{"pub":"kept-value"}`) {
			t.Errorf("keep inside a removed member lost:\n%s", out)
		}
		if !strings.Contains(out, "help@acme.test") || !strings.Contains(out, `plain \u00e9 text`) {
			t.Errorf("options %d: kept or plain data lost:\n%s", i, out)
		}
	}
}

// TestTruncationNeverLeaks cuts the document at every byte offset: Close
// must fail, and no canary byte sequence may have been written.
func TestTruncationNeverLeaks(t *testing.T) {
	doc := []byte(leakDoc)
	for i, o := range leakOptions {
		cfg := opts(o)
		for _, chunk := range []int{0, 1, 7, 64} {
			if chunk == 1 && testing.Short() {
				continue
			}
			for k := 0; k < len(doc); k++ {
				out, _, err := maskAll(cfg, ModeJSON, doc[:k], chunk)
				if err == nil {
					t.Fatalf("options %d chunk %d: truncation at %d accepted", i, chunk, k)
				}
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("options %d: error %v is not ErrInvalid", i, err)
				}
				if c := leaks(out); c != "" {
					t.Fatalf("options %d chunk %d: truncation at %d leaked %q:\n%s", i, chunk, k, c, out)
				}
			}
		}
	}
}

// TestSplitInvariance feeds the document split at every offset, and in
// small chunks: the output is identical to a single write.
func TestSplitInvariance(t *testing.T) {
	docs := []string{leakDoc, string(denseDoc(3000)), string(longDoc(3000))}
	for i, o := range append(leakOptions, Options{}, Options{Strategy: "null"}, Options{Strategy: "hash"}, Options{Strategy: "partial"}, Options{Strategy: "remove"}) {
		cfg := opts(o)
		for d, doc := range docs {
			want, _, err := maskAll(cfg, ModeJSON, []byte(doc), 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, chunk := range []int{1, 2, 3, 5, 13, 100} {
				got, _, err := maskAll(cfg, ModeJSON, []byte(doc), chunk)
				if err != nil || got != want {
					t.Fatalf("options %d doc %d chunk %d: %v\ngot  %.300s\nwant %.300s", i, d, chunk, err, got, want)
				}
			}
			for k := 1; k < len(doc); k++ {
				var out bytes.Buffer
				s := cfg.NewStream(&out)
				s.Write([]byte(doc[:k]))
				s.Write([]byte(doc[k:]))
				if err := s.Close(); err != nil || out.String() != want {
					t.Fatalf("options %d doc %d split %d: %v", i, d, k, err)
				}
			}
		}
	}
}

func TestReaderAPIAndReset(t *testing.T) {
	cfg := opts(Options{})
	var out bytes.Buffer
	st, err := cfg.Copy(&out, strings.NewReader(`{"email":"x","a":[1]}`), ModeJSON)
	if err != nil || out.String() != `{"email":"[REDACTED]","a":[1]}` || st.Fields != 1 || st.BytesIn != 21 {
		t.Fatalf("%v %q %+v", err, out.String(), st)
	}
	if _, err := cfg.Copy(io.Discard, strings.NewReader(`{"email":"x"`), ModeJSON); err == nil {
		t.Fatal("truncated accepted")
	}
	// A stream reused after an error behaves like a new one.
	s := cfg.NewStream(io.Discard)
	s.Write([]byte(`{"a":x`))
	if s.Close() == nil {
		t.Fatal("invalid accepted")
	}
	out.Reset()
	s.Reset(&out, ModeNDJSON)
	s.Write([]byte("{\"name\":\"a\"}\n[]\n"))
	if err := s.Close(); err != nil || out.String() != "{\"name\":\"[REDACTED]\"}\n[]\n" {
		t.Fatalf("%v %q", err, out.String())
	}
	if _, err := s.Write([]byte("1")); err == nil {
		t.Fatal("write after close accepted")
	}
}

type failWriter struct{ n int }

func (w *failWriter) Write(p []byte) (int, error) {
	if w.n <= 0 {
		return 0, errors.New("sink broken")
	}
	w.n--
	return len(p), nil
}

func TestDestinationError(t *testing.T) {
	cfg := opts(Options{})
	s := cfg.NewStream(&failWriter{n: 1})
	doc := denseDoc(200 << 10)
	var err error
	for off := 0; off < len(doc) && err == nil; off += 1000 {
		_, err = s.Write(doc[off : off+1000])
	}
	if err == nil || err.Error() != "sink broken" {
		t.Fatalf("err = %v", err)
	}
	if _, err2 := s.Write([]byte(" ")); err2 == nil || s.Close() == nil {
		t.Fatal("error not sticky")
	}
}

func TestConcurrentStreams(t *testing.T) {
	cfg := opts(leakOptions[0])
	want, _, _ := maskAll(cfg, ModeJSON, []byte(leakDoc), 0)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; r < 20; r++ {
				got, _, err := maskAll(cfg, ModeJSON, []byte(leakDoc), 17+g)
				if err != nil || got != want {
					errs <- fmt.Errorf("goroutine %d: %v", g, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestAllocations checks that a reused stream allocates nothing per
// document, whatever its size.
func TestAllocations(t *testing.T) {
	doc := append(denseDoc(256<<10), ` `...)
	doc = append(doc[:len(doc)-2], `,"name":[true,false,1.5,"x"]} `...)
	for _, o := range []Options{{}, {Detect: []string{"email", "phone"}}, {Strategy: "hash"}, {Strategy: "partial"}, {Strategy: "null"},
		{Strategy: "remove", Paths: []string{"$.**.tags"}, Keep: []string{"$.company"}}} {
		cfg := opts(o)
		s := cfg.NewStream(io.Discard)
		feed := func() {
			s.Reset(io.Discard, ModeJSON)
			for off := 0; off < len(doc); off += 4096 {
				if _, err := s.Write(doc[off:min(off+4096, len(doc))]); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		}
		feed()
		if a := testing.AllocsPerRun(5, feed); a > 0 {
			t.Errorf("%+v: %.1f allocations per document", o, a)
		}
	}
}

// genReader yields a large array of records without holding it (and
// without allocating per record, so the test measures the masker).
type genReader struct {
	n, max int
	buf    []byte
	store  []byte
	closed bool
}

func (g *genReader) Read(p []byte) (int, error) {
	for len(g.buf) == 0 {
		switch {
		case g.closed:
			return 0, io.EOF
		case g.n == 0:
			g.buf = []byte("[")
		case g.n > g.max:
			g.buf, g.closed = []byte("]"), true
		default:
			b := g.store[:0]
			if g.n > 1 {
				b = append(b, ',')
			}
			b = append(b, `{"id":`...)
			b = strconv.AppendInt(b, int64(g.n), 10)
			b = append(b, `,"email":"u`...)
			b = strconv.AppendInt(b, int64(g.n), 10)
			b = append(b, `@acme.test","note":"call +1 555 010 `...)
			b = strconv.AppendInt(b, int64(1000+g.n%9000), 10)
			b = append(b, `","tags":["a","b"]}`...)
			g.store, g.buf = b, b
		}
		g.n++
	}
	n := copy(p, g.buf)
	g.buf = g.buf[n:]
	return n, nil
}

func TestBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 40 MB")
	}
	cfg := opts(Options{Detect: []string{"email", "phone"}})
	s := cfg.NewStream(io.Discard)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if _, err := s.ReadFrom(&genReader{max: 500000}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if s.Stats().BytesIn < 40<<20 {
		t.Fatalf("only %d bytes", s.Stats().BytesIn)
	}
	if d := after.TotalAlloc - before.TotalAlloc; d > 4<<20 {
		t.Errorf("allocated %d bytes for a %d-byte stream", d, s.Stats().BytesIn)
	}
	t.Logf("%d bytes in, %d fields, %d bytes allocated", s.Stats().BytesIn, s.Stats().Fields, after.TotalAlloc-before.TotalAlloc)
}
