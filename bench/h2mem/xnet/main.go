// Command xnet reproduces, without Caddy, the retention bench/h2mem finds:
// golang.org/x/net/http2's server, given a write deadline through
// http.ResponseController after the client reset the stream, arms a timer
// on the closed stream that nothing stops; until it fires, the timer holds
// the stream, its serverConn and the connection's buffers (framer read and
// write buffers, TLS input), even after the connection is closed. Caddy's
// IdleTimeoutWriter does exactly this: it clears the deadline after each
// successful write and arms it again before the next, and returns without
// clearing when that write fails. The handler below does the same.
//
//	go run ./bench/h2mem/xnet            # deadline 60s: heap grows with aborted streams
//	go run ./bench/h2mem/xnet -deadline 0  # no deadline calls: flat
package main

import (
	"bytes"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

func main() {
	deadline := flag.Duration("deadline", time.Minute, "write deadline armed before each write (0: none)")
	conns := flag.Int("conns", 600, "connections, each with 3 aborted large responses")
	flag.Parse()

	chunk := bytes.Repeat([]byte("x"), 16<<10)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		rc := http.NewResponseController(w)
		for range 200 { // 3.2 MB
			if *deadline > 0 {
				_ = rc.SetWriteDeadline(time.Now().Add(*deadline))
			}
			if _, err := w.Write(chunk); err != nil {
				return // like IdleTimeoutWriter.Write: no clear on error
			}
			if *deadline > 0 {
				_ = rc.SetWriteDeadline(time.Time{})
			}
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:9798")
	if err != nil {
		panic(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = ln
	// Caddy 2.11 configures HTTP/2 the same deprecated way (app.go).
	//lint:ignore SA1019 the x/net server is the one under test
	if err := http2.ConfigureServer(srv.Config, new(http2.Server)); err != nil {
		panic(err)
	}
	srv.TLS = srv.Config.TLSConfig
	srv.StartTLS()
	defer srv.Close()

	body := bytes.Repeat([]byte("y"), 64<<10)
	heap := func() float64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return float64(m.HeapAlloc) / (1 << 20)
	}
	fmt.Printf("deadline=%s conns=%4d heap=%5.1f MiB\n", *deadline, 0, heap())
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := 1; i <= *conns; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}
			c := &http.Client{Transport: tr, Timeout: 20 * time.Second}
			for range 3 {
				resp, err := c.Post(srv.URL, "application/octet-stream", bytes.NewReader(body))
				if err != nil {
					continue
				}
				_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
				resp.Body.Close() // RST_STREAM(CANCEL) mid-response
			}
			tr.CloseIdleConnections()
		}()
		if i%200 == 0 {
			wg.Wait()
			time.Sleep(200 * time.Millisecond)
			fmt.Printf("deadline=%s conns=%4d heap=%5.1f MiB goroutines=%d\n", *deadline, i, heap(), runtime.NumGoroutine())
		}
	}
	wg.Wait()
	if *deadline > 0 && *deadline <= 2*time.Minute {
		time.Sleep(*deadline + 5*time.Second)
		fmt.Printf("after %s: heap=%5.1f MiB\n", *deadline+5*time.Second, heap())
	}
}
