package caddyredact_test

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// ub is one canned upstream behaviour of the catalogue.
type ub struct {
	status  int
	ct      string // "" → application/json; "none" → no Content-Type at all
	ce      string // Content-Encoding
	body    []byte
	hdr     []string      // more response headers
	chunk   int           // > 0: no Content-Length; the body goes in pieces of chunk bytes, each flushed
	pause   time.Duration // between pieces (only to make separate reads likely, never asserted)
	cl      int           // > 0: this Content-Length instead of the body's (a lie: the upstream closes short)
	trailer []string      // name, value… sent as trailers after the body
}

// serve answers with the behaviour. Every answer carries X-Upstream (a 502
// must not) and the validators and digests of the unmasked body (a masked
// answer must not).
func (u ub) serve(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	switch u.ct {
	case "":
		h.Set("Content-Type", "application/json")
	case "none":
		h["Content-Type"] = nil // no sniffing by net/http
	default:
		h.Set("Content-Type", u.ct)
	}
	if u.ce != "" {
		h.Set("Content-Encoding", u.ce)
	}
	h.Set("X-Upstream", "1")
	h.Set("Etag", fmt.Sprintf(`"unmasked-%d"`, len(u.body)))
	h.Set("Last-Modified", "Mon, 02 Jan 2006 15:04:05 GMT")
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Md5", "Q2hlY2sgSW50ZWdyaXR5IQ==")
	h.Set("Digest", "sha-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=")
	h.Set("Content-Digest", "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:")
	h.Set("Repr-Digest", "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:")
	for i := 0; i+1 < len(u.hdr); i += 2 {
		h.Set(u.hdr[i], u.hdr[i+1])
	}
	var names []string
	for i := 0; i+1 < len(u.trailer); i += 2 {
		names = append(names, u.trailer[i])
	}
	if len(names) > 0 {
		h.Set("Trailer", strings.Join(names, ", "))
	}
	status := u.status
	if status == 0 {
		status = http.StatusOK
	}
	if u.chunk == 0 && status != http.StatusNoContent && status != http.StatusNotModified {
		n := len(u.body)
		if u.cl > 0 {
			n = u.cl
		}
		h.Set("Content-Length", strconv.Itoa(n))
	}
	w.WriteHeader(status)
	if u.chunk == 0 {
		_, _ = w.Write(u.body)
	} else {
		for b := u.body; len(b) > 0; {
			n := min(u.chunk, len(b))
			if _, err := w.Write(b[:n]); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			b = b[n:]
			if u.pause > 0 && len(b) > 0 {
				time.Sleep(u.pause)
			}
		}
	}
	for i := 0; i+1 < len(u.trailer); i += 2 {
		h.Set(u.trailer[i], u.trailer[i+1])
	}
}

func gzBytes(b []byte) []byte {
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	_, _ = zw.Write(b)
	_ = zw.Close()
	return out.Bytes()
}

func zlibBytes(b []byte) []byte {
	var out bytes.Buffer
	zw := zlib.NewWriter(&out)
	_, _ = zw.Write(b)
	_ = zw.Close()
	return out.Bytes()
}

func zstdBytes(b []byte) []byte {
	enc, _ := zstd.NewWriter(nil)
	defer enc.Close()
	return enc.EncodeAll(b, nil)
}

// syncToken numbers the requests of the streaming-order row.
var syncToken int

// lcHandlers returns the upstream's scenarios by path.
func lcHandlers() map[string]http.HandlerFunc {
	doc := []byte(lcDoc)
	big := []byte(lcBig)
	hs := map[string]ub{
		// Plain JSON, framed (Content-Length) and chunked.
		"/doc":         {body: doc},
		"/doc-chunked": {body: doc, chunk: 7},
		"/big":         {body: big},
		"/public":      {body: doc, hdr: []string{"Cache-Control", "public, max-age=600"}},
		"/big-slow":    {body: big, chunk: 512, pause: time.Millisecond, cl: len(big)},
		// Content encodings (A1, A2, A3, A4).
		"/gzip":          {ce: "gzip", body: gzBytes(doc)},
		"/x-gzip":        {ce: "x-gzip", body: gzBytes(doc)},
		"/GZIP":          {ce: "GZIP", body: gzBytes(doc)},
		"/deflate":       {ce: "deflate", body: zlibBytes(doc)},
		"/zstd":          {ce: "zstd", body: zstdBytes(doc)},
		"/identity":      {ce: "identity", body: doc},
		"/br":            {ce: "br", body: []byte("\x1b\x00 not really brotli " + lcDoc)},
		"/compress":      {ce: "compress", body: doc},
		"/stacked":       {ce: "gzip, gzip", body: gzBytes(gzBytes(doc))},
		"/gzip-chunked":  {ce: "gzip", body: gzBytes(big), chunk: 300},
		"/gzip-corrupt":  {ce: "gzip", body: corrupt(gzBytes(doc))},
		"/gzip-trailer":  {ce: "gzip", body: gzBytes(doc)[:len(gzBytes(doc))-4]},
		"/gzip-cutbig":   {ce: "gzip", body: gzBytes(big)[:len(gzBytes(big))/2]},
		"/gzip-bomb":     {ce: "gzip", body: gzBytes([]byte(`{"pad":"` + strings.Repeat("a", 16<<20) + `","email":"zorb.quix@hidden-mail.test","name":"Zorbulon"}`))},
		"/gzip-nojson":   {ce: "gzip", ct: "text/plain", body: gzBytes([]byte("Zorbulon Quixter, zorb.quix@hidden-mail.test"))},
		"/gzip-chunkbad": {ce: "gzip", body: corrupt(gzBytes(big)), chunk: 200},
		// Ranges (A7, A8).
		"/206":        {status: 206, hdr: []string{"Content-Range", "bytes 0-40/200"}, body: doc[:41]},
		"/byteranges": {status: 206, ct: "multipart/byteranges; boundary=XB", body: []byte("--XB\r\nContent-Type: application/json\r\nContent-Range: bytes 0-40/200\r\n\r\n" + lcDoc[:41] + "\r\n--XB--\r\n")},
		"/multipart":  {ct: "multipart/mixed; boundary=XB", body: []byte("--XB\r\nContent-Type: application/json\r\n\r\n" + lcDoc + "\r\n--XB--\r\n")},
		// Streaming (D1, C4).
		"/ndjson-flush": {ct: "application/x-ndjson", chunk: 90, pause: 5 * time.Millisecond,
			body: []byte(strings.Repeat(`{"n":1,"email":"zorb.quix@hidden-mail.test","name":"Zorbulon Quixter"}`+"\n", 4))},
		"/ndjson-split": {ct: "application/x-ndjson", chunk: 11, pause: 2 * time.Millisecond,
			body: []byte(`{"email":"zorb.quix@hidden-mail.test"}` + "\n" + `{"name":"Zorbulon","phone":"+1 (415) 555-0199"}` + "\n")},
		"/sse": {ct: "text/event-stream", chunk: 64,
			body: []byte("data: {\"email\":\"zorb.quix@hidden-mail.test\"}\n\ndata: {\"name\":\"Zorbulon\"}\n\n")},
		// Framing lies (B1, G4).
		"/cl-short":      {body: []byte(`{"id":1,"email":"zorb.quix@hidd`), cl: 1000},
		"/cl-short-big":  {body: []byte(lcBigPrefix + `{"id":1,"email":"zorb.quix@hidd`), cl: 10000},
		"/trunc-chunked": {body: []byte(`{"id":1,"email":"zorb.quix@hidden`), chunk: 10},
		// Validators on bodiless answers (B5, B6).
		"/204": {status: 204},
		"/304": {status: 304},
		// Content types (C1, C2, C3, C5).
		"/vnd":          {ct: "application/vnd.api+json; charset=utf-8", body: doc},
		"/problem":      {status: 422, ct: "application/problem+json", body: []byte(`{"title":"invalid","detail":"the address is taken","email":"zorb.quix@hidden-mail.test"}`)},
		"/upper":        {ct: "APPLICATION/JSON; Charset=UTF-8", body: doc},
		"/ndjson":       {ct: "application/x-ndjson", body: []byte(`{"email":"zorb.quix@hidden-mail.test"}` + "\n\n" + `{"name":"Zorbulon"}` + "\n")},
		"/jsonl":        {ct: "application/jsonl", body: []byte(`{"email":"zorb.quix@hidden-mail.test"}` + "\r\n" + `{"name":"Quixter"}`)},
		"/seq":          {ct: "application/json-seq", body: []byte("\x1e" + `{"email":"zorb.quix@hidden-mail.test"}` + "\n\x1e" + `{"name":"Zorbulon"}` + "\n")},
		"/notype-obj":   {ct: "none", body: doc},
		"/notype-arr":   {ct: "none", body: []byte(`[` + lcDoc + `]`)},
		"/notype-bom":   {ct: "none", body: append([]byte("\xEF\xBB\xBF \n"), doc...)},
		"/notype-text":  {ct: "none", body: []byte("Zorbulon Quixter <zorb.quix@hidden-mail.test>")},
		"/json-bom":     {body: append([]byte("\xEF\xBB\xBF"), doc...)},
		"/text-json":    {ct: "text/plain; charset=utf-8", body: doc},
		"/html-json":    {ct: "text/html", body: doc},
		"/octet-json":   {ct: "application/octet-stream", body: doc},
		"/csv":          {ct: "text/csv", body: []byte("name,email\nZorbulon Quixter,zorb.quix@hidden-mail.test\n")},
		"/text":         {ct: "text/plain", body: []byte("Zorbulon Quixter, zorb.quix@hidden-mail.test")},
		"/xml":          {ct: "application/xml", body: []byte("<p><name>Zorbulon</name><email>zorb.quix@hidden-mail.test</email></p>")},
		"/empty-text":   {ct: "text/plain"},
		"/empty-json":   {},
		"/error500":     {status: 500, body: []byte(`{"error":"db","name":"Zorbulon","email":"zorb.quix@hidden-mail.test"}`)},
		"/error400echo": {status: 400, body: []byte(`{"error":"email zorb.quix@hidden-mail.test is invalid","field":"email"}`)},
		"/errpage":      {status: 500, body: []byte(`{"error":"upstream failure","contact":{"name":"Zorbulon Quixter","email":"zorb.quix@hidden-mail.test"}}`)},
		"/trailers":     {body: doc, chunk: 64, trailer: []string{"Content-Digest", "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:", "X-Rows", "1"}},
		"/trailer-pii":  {body: doc, chunk: 64, trailer: []string{"X-Debug-Email", "zorb.quix@hidden-mail.test"}},
		// JSON semantics (E, F).
		"/escaped":         {body: []byte(`{"em\u0061il":"zorb.quix@hidden-mail.test","\u0065mail":"Zorbulon","e\u006Dail":"Quixter","\ud83d\ude00email":"zorb.quix@hidden-mail.test","\u004e\u0041\u004d\u0045":"Zorbulon"}`)},
		"/spellings":       {body: []byte(`{"email":"Zorbulon","Email":"Zorbulon","EMAIL":"Zorbulon","e-mail":"Zorbulon","e_mail":"Zorbulon","email_address":"Zorbulon","emailAddress":"Zorbulon","E-Mail-Address":"Zorbulon","email.address":"Zorbulon","e mail":"Zorbulon","contactEmail":"Zorbulon","home_phone":"Zorbulon","workPhone":"Zorbulon","cellphone":"Zorbulon","FirstName":"Zorbulon","LAST_NAME":"Zorbulon","display-name":"Zorbulon"}`)},
		"/dupes":           {body: []byte(`{"email":"zorb.quix@hidden-mail.test","email":"Zorbulon","x":{"name":"Quixter","name":"Quixter"}}`)},
		"/types":           {body: []byte(`{"phone":15550199123,"mobile":true,"name":{"first":"Zorbulon","last":"Quixter","n":[1,2]},"names":["Zorbulon","Quixter"],"email":null,"home_phone":-15550199,"fullname":1.5e3,"phones":[{"x":"zorb.quix@hidden-mail.test"}]}`)},
		"/note":            {body: []byte(`{"note":"call zorb.quix@hidden-mail.test or +1 (415) 555-0199","ok":true}`)},
		"/invalid":         {body: []byte(`{"email":"zorb.quix@hidden-mail.test",,}`)},
		"/invalid-chunked": {body: []byte(`{"email":"zorb.quix@hidden-mail.test","x":tru}`), chunk: 8},
		"/invalid-big":     {body: []byte(lcBig[:len(lcBig)-2] + `,,"email":"zorb.quix@hidden-mail.test"}`)},
		"/trailing":        {body: []byte(`{"a":1}xyz "zorb.quix@hidden-mail.test"`)},
		"/twodocs":         {body: []byte(`{"a":1}{"email":"zorb.quix@hidden-mail.test","note":"Zorbulon"}`)},
		"/deep":            {body: []byte(strings.Repeat(`{"a":[`, 50000) + strings.Repeat(`]}`, 50000))},
		"/longstring":      {body: []byte(`{"notes":"` + strings.Repeat("a", 8<<20) + `","email":"zorb.quix@hidden-mail.test","n":1e400}`)},
		"/longsecret":      {body: []byte(`{"email":"` + strings.Repeat("zorb.quix@hidden-mail.test", 100000) + `"}`)},
		"/utf8-invalid":    {body: []byte("{\"email\":\"zorb.quix@hidden-mail.test\",\"note\":\"bad \xff\xfe bytes\",\"name\":\"Quixter\"}")},
		"/utf8-surrogates": {body: []byte(`{"s":"\ud83d\ude00","lone":"\ud800","rev":"\ude00\ud83d","name":"Zorb\u00e9lon Quixter","\ud800email":"zorb.quix@hidden-mail.test","note":"caf\u00e9 ü"}`)},
		"/numbers":         {body: []byte(`{"a":123456789012345678901234567890,"b":-0,"c":1e400,"d":-1.5E-07,"e":9007199254740993,"f":0.1000000000000000055511151231257827,"email":"zorb.quix@hidden-mail.test"}`)},
		"/whitespace":      {body: []byte("{\r\n  \"email\" :  \"zorb.quix@hidden-mail.test\" ,\r\n\t\"name\"\t:\"Zorbulon\"\r\n}\r\n")},
		"/topscalar":       {body: []byte(`"zorb.quix@hidden-mail.test"`)},
		"/toparray":        {body: []byte(`["zorb.quix@hidden-mail.test","+1 (415) 555-0199"]`)},
		"/keys":            {body: []byte(`{"contacts":{"zorb.quix@hidden-mail.test":{"since":2020},"+1 (415) 555-0199":1}}`)},
		"/cc":              {body: []byte(`{"cc":["zorb.quix@hidden-mail.test","Hello"],"bcc":"x"}`)},
		"/preset-misses":   {body: []byte(`{"support_email":"zorb.quix@hidden-mail.test","billingEmail":"Zorbulon","recipientEmail":"Quixter","contact_phone":"+1 (415) 555-0199","mobileNumber":"Zorbulon","surname":"Quixter","preferred_name":"Zorbulon","legalName":"Quixter","phone2":"P2-visible","msisdn":"MSISDN-visible","tel":"TEL-visible","nickname":"NICK-visible","username":"USER-visible","dob":"DOB-visible","filename":"FILE-visible","hostname":"HOST-visible","companyName":"COMPANY-visible"}`)},
		"/padding":         {body: []byte(`{"e` + strings.Repeat("_", 10000) + `mail":"zorb.quix@hidden-mail.test","` + strings.Repeat("-", 5000) + `name":"Zorbulon"}`)},
		"/fold":            {body: []byte(`{"ſsn":"SSN-SECRET-1","\u017fsn":"SSN-SECRET-2","S_S_N":"SSN-SECRET-3","\u212Aey":"KEY-SECRET-4","ｅｍａｉｌ":"FULLWIDTH-visible"}`)},
		"/longname":        {body: []byte(`{"` + strings.Repeat("x", 5000) + `":"LONGNAME-visible","` + strings.Repeat("x", 5000) + `email":"zorb.quix@hidden-mail.test"}`)},
		"/keepconflict":    {body: []byte(`{"company":{"name":"Acme Corp"},"employees":[{"name":"Zorbulon"}],"name":"Quixter"}`)},
		"/onebyte":         {body: []byte(`{"em\u0061il":"zorb.quix@hidden-mail.test","phone":15550199123,"name":"Zor\"bulon","ok":-12.5e+3,"list":["x",null,true]}`), chunk: 1},
		"/onebyte-once":    {body: []byte(`{"em\u0061il":"zorb.quix@hidden-mail.test","phone":15550199123,"name":"Zor\"bulon","ok":-12.5e+3,"list":["x",null,true]}`)},
		"/straddle":        {body: []byte(`{"pad":"` + strings.Repeat("a", 1000) + `","email":"zorb.quix@hidden-mail.test","more":"` + strings.Repeat("b", 2000) + `","name":"Zorbulon"}`)},
		// Strategies and detectors (H, J3).
		"/short":    {body: []byte(`{"email":"a@b.c","phone":"123","name":"Z","firstname":"Zo"}`)},
		"/hashsame": {body: []byte(`{"email":"zorb.quix@hidden-mail.test","contactEmail":"zorb.quix\u0040hidden-mail.test","phone":15550199123,"home_phone":"15550199123"}`)},
		"/overlap":  {body: []byte(`{"note":"see https://x.test/u/zorb.quix@hidden-mail.test?ref=zorb.quix@hidden-mail.test.uk and zorb.quix@hidden-mail.testing, tel +1 (415) 555-0199/+1 (415) 555-0199"}`)},
		"/escnote":  {body: []byte(`{"note":"write to zorb.quix\u0040hidden-mail.test or \u002B1 (415) 555\u002D0199"}`)},
		"/len1":     {body: []byte(`{"email":"ab@hidden-mail.test","name":"Zo"}`)},
		"/len2":     {body: []byte(`{"email":"abcdefghijklmnopqrstuvwxyz@hidden-mail.test","name":"Zorbulon Quixter the Third"}`)},
	}
	out := map[string]http.HandlerFunc{}
	for path, u := range hs {
		out[path] = u.serve
	}
	// 103 Early Hints, then the body (B6).
	out["/hints"] = func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		ub{body: []byte(lcDoc)}.serve(w, r)
	}
	// The upstream honours Range if it ever gets one (A7).
	out["/ranged"] = func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Range") != "" {
			ub{status: 206, hdr: []string{"Content-Range", fmt.Sprintf("bytes 0-40/%d", len(lcDoc))}, body: []byte(lcDoc[:41])}.serve(w, r)
			return
		}
		ub{body: []byte(lcDoc)}.serve(w, r)
	}
	// Conditional requests (B5): any If-None-Match or If-Modified-Since
	// gets a 304 with the unmasked body's validators (it must never arrive).
	out["/conditional"] = func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("If-None-Match") != "" || r.Header.Get("If-Modified-Since") != "" {
			ub{status: 304}.serve(w, r)
			return
		}
		ub{body: []byte(lcDoc)}.serve(w, r)
	}
	// An upstream that accepts a websocket upgrade (B7): it must never be
	// reached through redact.
	out["/ws"] = func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "" {
			ub{body: []byte(lcDoc)}.serve(w, r)
			return
		}
		w.Header().Set("Upgrade", "websocket")
		w.Header().Set("Connection", "Upgrade")
		w.WriteHeader(http.StatusSwitchingProtocols)
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = brw.WriteString(lcDoc)
		_ = brw.Flush()
	}
	// Streaming order (D1): the first record must reach the client before
	// the upstream writes the second. The client signals after reading
	// line 1; the upstream waits for the signal (at most 10 s, then it
	// writes "sync":false and the row fails).
	out["/sync"] = func(w http.ResponseWriter, r *http.Request) {
		ch := lcSyncChan(r.URL.Query().Get("t"))
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.Header().Set("X-Upstream", "1")
		_, _ = io.WriteString(w, `{"n":1,"email":"zorb.quix@hidden-mail.test"}`+"\n")
		w.(http.Flusher).Flush()
		got := true
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			got = false
		}
		fmt.Fprintf(w, `{"n":2,"sync":%t,"name":"Zorbulon"}`+"\n", got)
	}
	return out
}

// corrupt flips bytes in the middle of a compressed body.
func corrupt(b []byte) []byte {
	b = bytes.Clone(b)
	for i := len(b) / 3; i < len(b)/3+8 && i < len(b); i++ {
		b[i] ^= 0x5a
	}
	return b
}

func lcSyncChan(token string) chan struct{} {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	ch := lc.sync[token]
	if ch == nil {
		ch = make(chan struct{})
		lc.sync[token] = ch
	}
	return ch
}

// syncRead reads the first line, signals the upstream, then reads the rest.
func syncRead(token string) func(t *testing.T, body io.Reader) ([]byte, error) {
	return func(t *testing.T, body io.Reader) ([]byte, error) {
		var got []byte
		buf := make([]byte, 4096)
		for !bytes.Contains(got, []byte("\n")) {
			n, err := body.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				return got, err
			}
		}
		close(lcSyncChan(token))
		rest, err := io.ReadAll(body)
		return append(got, rest...), err
	}
}
