package jsonmask

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// bufferTaker collects the buffers a Stream hands over and gives back new
// ones of the same capacity.
type bufferTaker struct {
	t      *testing.T
	out    bytes.Buffer
	size   int
	taken  int
	failAt int // > 0: the failAt-th TakeBuffer fails
}

func (bt *bufferTaker) TakeBuffer(full []byte) ([]byte, error) {
	bt.taken++
	if bt.failAt > 0 && bt.taken >= bt.failAt {
		return nil, errors.New("client went away")
	}
	if len(full) == 0 || len(full) > bt.size {
		bt.t.Errorf("handed a buffer of %d bytes (capacity %d)", len(full), bt.size)
	}
	bt.out.Write(full)
	return make([]byte, 0, bt.size), nil
}

// TestBufferTaker: with a taker the output is the same bytes as written to
// a destination, whatever the chunking and the value sizes (values larger
// than the buffer included), in whole buffers no larger than given; back
// without it, the Stream writes to its destination again.
func TestBufferTaker(t *testing.T) {
	cfgs := []*Config{MustCompile(Options{}), MustCompile(Options{Strategy: "hash", HashKey: []byte("k"), Detect: []string{"email"}})}
	docs := [][]byte{denseDoc(200 << 10), longDoc(100 << 10),
		[]byte(`{"a":"` + strings.Repeat("x", 40<<10) + `","email":"` + strings.Repeat("y", 20<<10) + `"}`)}
	for ci, cfg := range cfgs {
		for di, doc := range docs {
			want, _, err := maskAll(cfg, ModeJSON, doc, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, chunk := range []int{1 << 20, 32 << 10, 777} {
				var dst bytes.Buffer
				bt := &bufferTaker{t: t, size: 8 << 10}
				s := cfg.NewStream(&dst)
				s.SetBufferTaker(bt, make([]byte, 0, bt.size))
				half := len(doc) / 2
				for p := doc[:half]; len(p) > 0; p = p[min(len(p), chunk):] {
					if _, err := s.Write(p[:min(len(p), chunk)]); err != nil {
						t.Fatal(err)
					}
				}
				if prev := s.SetBufferTaker(nil, nil); cap(prev) != bt.size {
					t.Fatalf("SetBufferTaker returned a buffer of capacity %d", cap(prev))
				}
				for p := doc[half:]; len(p) > 0; p = p[min(len(p), chunk):] {
					if _, err := s.Write(p[:min(len(p), chunk)]); err != nil {
						t.Fatal(err)
					}
				}
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				if got := bt.out.String() + dst.String(); got != want {
					t.Fatalf("config %d doc %d chunk %d: output differs (%d bytes, want %d)", ci, di, chunk, len(got), len(want))
				}
				if s.Stats().BytesOut != int64(len(want)) {
					t.Fatalf("BytesOut %d, want %d", s.Stats().BytesOut, len(want))
				}
			}
		}
	}
	// A taker that fails stops the Stream with its error.
	bt := &bufferTaker{t: t, size: 8 << 10, failAt: 2}
	s := MustCompile(Options{}).NewStream(nil)
	s.SetBufferTaker(bt, make([]byte, 0, bt.size))
	var err error
	for p := denseDoc(100 << 10); len(p) > 0 && err == nil; p = p[min(len(p), 4096):] {
		_, err = s.Write(p[:min(len(p), 4096)])
	}
	if err == nil || !strings.Contains(err.Error(), "client went away") {
		t.Fatalf("a failing taker gave %v", err)
	}
}
