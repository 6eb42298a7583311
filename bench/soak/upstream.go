package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// The PII in every upstream body: the surnames, the e-mail domain and the
// phone prefix occur only inside PII fields (name, firstName, lastName,
// email, contactEmail, phone, workPhone), so a masked body must contain
// none of them and an unmasked one all of them.
var (
	firstNames = []string{"Zephyrine", "Orlando", "Marisol", "Tobias"}
	lastNames  = []string{"Quillfeather", "Brightwater", "Undergrove", "Ashcombe"}
	piiMarkers = [][]byte{
		[]byte("Quillfeather"), []byte("Brightwater"), []byte("Undergrove"), []byte("Ashcombe"),
		[]byte("@acme.test"), []byte("555-01"),
	}
	// idMarker counts records: ids are not PII and survive masking, so a
	// masked body has exactly as many as the upstream's.
	idMarker = []byte(`"id":"`)
)

// upstream is the API behind the gateway: an httptest server on
// 127.0.0.1 with fixed JSON bodies. It records, per X-Soak-Id, that a
// request reached it, with the X-Key-Id the gateway set and whether a
// credential leaked through.
type upstream struct {
	srv    *httptest.Server
	bodies map[string][]byte // path -> body as the upstream sends it (decoded)
	ids    map[string]int    // path -> number of idMarker in the body
	bigGz  []byte

	seenMu   sync.Mutex
	seen     map[string]seenInfo // X-Soak-Id -> what arrived (every attempt of a request shares the id)
	requests atomic.Int64
	conns    atomic.Int64 // open connections from Caddy
}

type seenInfo struct {
	keyID    string
	auth     bool // an Authorization header reached the upstream (on any arrival)
	arrivals int  // how many times the request arrived (a retry or replay may deliver it twice)
}

func person(i int) map[string]any {
	f, l := firstNames[i%len(firstNames)], lastNames[(i/len(firstNames))%len(lastNames)]
	return map[string]any{
		"name":  f + " " + l,
		"email": strings.ToLower(f+"."+l) + "@acme.test",
		"phone": fmt.Sprintf("+1 202-555-01%02d", i%100),
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// giftsBody: gifts with a nested recipient.
func giftsBody() []byte {
	var gifts []any
	for i := range 8 {
		gifts = append(gifts, map[string]any{
			"id": fmt.Sprintf("gift_%03d", i), "amount": 25 + i, "currency": "USD", "status": "sent",
			"recipient": person(i + 3), "contactEmail": person(i)["email"],
		})
	}
	return mustJSON(map[string]any{"data": gifts, "has_more": false})
}

// employee is one record of the employees lists.
func employee(i int) map[string]any {
	p := person(i)
	return map[string]any{
		"id": fmt.Sprintf("emp_%06d", i), "firstName": firstNames[i%len(firstNames)],
		"lastName": lastNames[(i/len(firstNames))%len(lastNames)], "email": p["email"],
		"workPhone": p["phone"], "department": "Logistics", "title": "Coordinator", "level": i % 7,
		"active": true,
	}
}

func employeesBody(n int) []byte {
	list := make([]any, n)
	for i := range list {
		list[i] = employee(i)
	}
	return mustJSON(map[string]any{"employees": list, "count": n})
}

// bigBody is an employees list of at least size bytes.
func bigBody(size int) []byte {
	one := len(mustJSON(employee(123456))) + 1
	return employeesBody(size/one + 1)
}

func meBody() []byte {
	p := person(5)
	return mustJSON(map[string]any{"id": "usr_me", "name": p["name"], "email": p["email"], "role": "api"})
}

// postGiftBody is the answer to POST /v1/gifts: it says how many body
// bytes arrived, so the client can check the request body went through.
func postGiftBody(received int64) []byte {
	return mustJSON(map[string]any{
		"id": "gift_new", "status": "queued", "received": received,
		"recipient": map[string]any{"id": "rcp_1", "name": person(1)["name"], "email": person(1)["email"], "phone": person(1)["phone"]},
	})
}

func newUpstream(bigMiB int) (*upstream, error) {
	u := &upstream{seen: map[string]seenInfo{}, bodies: map[string][]byte{
		"/v1/gifts":       giftsBody(),
		"/v1/employees":   employeesBody(20),
		"/v1/me":          meBody(),
		"/healthz":        []byte(`{"status":"ok"}`),
		"/v1/big/cl":      bigBody(bigMiB << 20),
		"POST /v1/gifts":  postGiftBody(0),
		"/v1/extra/gifts": giftsBody(),
	}}
	u.bodies["/v1/big/chunked"] = u.bodies["/v1/big/cl"]
	u.bodies["/v1/big/gzip"] = u.bodies["/v1/big/cl"]
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	if _, err := zw.Write(u.bodies["/v1/big/gzip"]); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	u.bigGz = gz.Bytes()
	u.ids = map[string]int{}
	for p, b := range u.bodies {
		u.ids[p] = bytes.Count(b, idMarker)
		if p != "/healthz" && !hasPII(b) {
			return nil, fmt.Errorf("upstream body %s has no PII marker", p)
		}
	}
	u.srv = httptest.NewUnstartedServer(http.HandlerFunc(u.serve))
	u.srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			u.conns.Add(1)
		case http.StateClosed, http.StateHijacked:
			u.conns.Add(-1)
		}
	}
	u.srv.Start()
	return u, nil
}

func (u *upstream) close() { u.srv.Close() }

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	u.requests.Add(1)
	if id := r.Header.Get("X-Soak-Id"); id != "" {
		// Merged over arrivals: a credential on any of them counts, and
		// two arrivals with different X-Key-Id values never compare equal
		// to the key's id.
		keyID := r.Header.Get("X-Key-Id")
		u.seenMu.Lock()
		si, again := u.seen[id]
		if again && si.keyID != keyID {
			keyID = si.keyID + " then " + keyID
		}
		u.seen[id] = seenInfo{keyID: keyID, auth: si.auth || r.Header.Get("Authorization") != "", arrivals: si.arrivals + 1}
		u.seenMu.Unlock()
	}
	h := w.Header()
	h.Set("X-Soak-Upstream", "1")
	h.Set("Content-Type", "application/json")
	path := r.URL.Path
	switch {
	case r.Method == http.MethodPost && path == "/v1/gifts":
		n, _ := io.Copy(io.Discard, r.Body)
		body := postGiftBody(n)
		h.Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write(body)
	case r.Method != http.MethodGet:
		w.WriteHeader(http.StatusMethodNotAllowed)
		_, _ = w.Write([]byte(`{"error":"method"}`))
	case path == "/v1/employees":
		// Chunked: no Content-Length, two writes with a Flush between.
		b := u.bodies[path]
		_, _ = w.Write(b[:len(b)/2])
		w.(http.Flusher).Flush()
		_, _ = w.Write(b[len(b)/2:])
	case path == "/v1/big/chunked":
		b := u.bodies[path]
		for len(b) > 0 {
			n := min(len(b), 64<<10)
			if _, err := w.Write(b[:n]); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			b = b[n:]
		}
	case path == "/v1/big/gzip":
		// Encoded although the gateway asked for identity: redact must
		// decode it before masking.
		h.Set("Content-Encoding", "gzip")
		h.Set("Content-Length", strconv.Itoa(len(u.bigGz)))
		_, _ = w.Write(u.bigGz)
	default:
		b, ok := u.bodies[path]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"error":"not_found"}`))
			return
		}
		h.Set("Content-Length", strconv.Itoa(len(b)))
		_, _ = w.Write(b)
	}
}

// hasPII reports whether b contains any PII marker.
func hasPII(b []byte) bool {
	for _, m := range piiMarkers {
		if bytes.Contains(b, m) {
			return true
		}
	}
	return false
}

// take returns and forgets what the upstream saw of request id.
func (u *upstream) take(id string) (seenInfo, bool) {
	u.seenMu.Lock()
	defer u.seenMu.Unlock()
	v, ok := u.seen[id]
	delete(u.seen, id)
	return v, ok
}

// leftover returns and forgets every arrival that no answer took: requests
// that reached the upstream after their answer was judged (an attempt
// still in flight at Caddy when the client had given up on it).
func (u *upstream) leftover() map[string]seenInfo {
	u.seenMu.Lock()
	defer u.seenMu.Unlock()
	m := u.seen
	u.seen = map[string]seenInfo{}
	return m
}
