// Command download measures the end-to-end cost of redact: it generates a
// large dense JSON document (employees and gifts with nested recipients),
// serves it as the upstream (-serve, a process of its own like a real API
// server), then downloads it repeatedly through two Caddy routes —
// reverse_proxy alone, and redact + reverse_proxy — interleaved A/B, and
// prints the
// median time of each and their ratio. With -pid (the Caddy process) it
// also prints the CPU time Caddy spent per download, user plus system, from
// /proc (Linux): on a shared machine that is steadier than wall time, and
// it shows whether a slower download is CPU or waiting. Everything is on
// 127.0.0.1 and bounded by -rounds.
//
//	go run ./bench/download -url-plain http://127.0.0.1:18480/plain/doc.json -url-redact http://127.0.0.1:18480/redact/doc.json
//	go run ./bench/download -gen bench/out/doc.json -size 64   # write the document (MiB)
//	go run ./bench/download -serve 127.0.0.1:18481 -dir bench/out -for 10m
//
// The upstream serves DIR/doc.json at /doc.json with a Content-Length (as
// a file server does) and at /chunked/doc.json without one, in 32 KiB
// writes (as an API server streaming its JSON does: HTTP/1.1 chunked, and
// reverse_proxy then flushes after every write).
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

func main() {
	gen := flag.String("gen", "", "write the document to this file and exit")
	sizeMiB := flag.Int("size", 64, "document size in MiB (with -gen)")
	plain := flag.String("url-plain", "", "URL without redact")
	redacted := flag.String("url-redact", "", "URL with redact")
	rounds := flag.Int("rounds", 10, "downloads of each variant (at most 100)")
	pid := flag.Int("pid", 0, "Caddy's process id: also report its CPU time per download")
	serve := flag.String("serve", "", "serve -dir as the upstream on this address (127.0.0.1 only)")
	dir := flag.String("dir", ".", "directory holding doc.json (with -serve)")
	serveFor := flag.Duration("for", 10*time.Minute, "stop serving after this long (with -serve)")
	flag.Parse()
	if *serve != "" {
		if err := upstream(*serve, *dir, *serveFor); err != nil {
			log.Fatal(err)
		}
		return
	}
	if *gen != "" {
		if err := generate(*gen, *sizeMiB<<20); err != nil {
			log.Fatal(err)
		}
		return
	}
	if *plain == "" || *redacted == "" || *rounds < 1 || *rounds > 100 {
		log.Fatal("need -url-plain, -url-redact and 1 <= -rounds <= 100")
	}
	client := &http.Client{Timeout: 120 * time.Second, Transport: &http.Transport{DisableCompression: true}}
	var tPlain, tRedact, cPlain, cRedact []time.Duration
	var bytesPlain, bytesRedact int64
	for i := 0; i < *rounds; i++ {
		order := []string{*plain, *redacted}
		if i%2 == 1 {
			order[0], order[1] = order[1], order[0]
		}
		for _, u := range order {
			c0 := cpuTime(*pid)
			d, n, err := fetch(client, u)
			if err != nil {
				log.Fatal(err)
			}
			c := cpuTime(*pid) - c0
			if u == *plain {
				tPlain, cPlain, bytesPlain = append(tPlain, d), append(cPlain, c), n
			} else {
				tRedact, cRedact, bytesRedact = append(tRedact, d), append(cRedact, c), n
			}
		}
	}
	mp, mr := median(tPlain), median(tRedact)
	fmt.Printf("plain:  %d bytes, median %v (%.0f MB/s)\n", bytesPlain, mp, float64(bytesPlain)/mp.Seconds()/1e6)
	fmt.Printf("redact: %d bytes, median %v (%.0f MB/s)\n", bytesRedact, mr, float64(bytesRedact)/mr.Seconds()/1e6)
	fmt.Printf("time ratio redact/plain (median of %d rounds): %.2f\n", *rounds, float64(mr)/float64(mp))
	if *pid != 0 {
		cp, cr := median(cPlain), median(cRedact)
		fmt.Printf("Caddy CPU per download: plain %v, redact %v, ratio %.2f\n", cp, cr, float64(cr)/float64(cp))
	}
}

// cpuTime is the CPU time process pid has run so far, summed over its
// threads from /proc/PID/task/*/schedstat (nanoseconds; /proc/PID/stat
// counts 10 ms ticks). Go runtimes keep their threads, so none is lost
// between two readings. 0 without a pid.
func cpuTime(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	tasks, err := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/schedstat")
	if err != nil || len(tasks) == 0 {
		log.Fatalf("process %d: no /proc/PID/task/*/schedstat", pid)
	}
	var total time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // the thread ended
		}
		f := strings.Fields(string(b))
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			log.Fatalf("%s: unexpected format", t)
		}
		total += time.Duration(ns)
	}
	return total
}

// upstream serves doc.json until the time is up.
func upstream(addr, dir string, limit time.Duration) error {
	if host, _, err := net.SplitHostPort(addr); err != nil || host != "127.0.0.1" {
		return fmt.Errorf("-serve %q: want 127.0.0.1:PORT", addr)
	}
	path := filepath.Join(dir, "doc.json")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /doc.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		http.ServeFile(w, r, path)
	})
	mux.HandleFunc("GET /chunked/doc.json", func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Open(path)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer f.Close()
		w.Header().Set("Content-Type", "application/json")
		buf := make([]byte, 32<<10)
		for {
			n, err := f.Read(buf)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	})
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	time.AfterFunc(limit, func() { _ = srv.Close() })
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		return err
	}
	return nil
}

func fetch(c *http.Client, url string) (time.Duration, int64, error) {
	start := time.Now()
	resp, err := c.Get(url)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return 0, 0, err
	}
	if resp.StatusCode != 200 {
		return 0, 0, fmt.Errorf("%s: status %d", url, resp.StatusCode)
	}
	return time.Since(start), n, nil
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// generate writes a dense API document: short strings, about one string
// every 12 bytes, PII in names, emails and phones.
func generate(path string, size int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	fmt.Fprint(w, `{"employees":[`)
	n := 0
	for i := 0; n < size; i++ {
		if i > 0 {
			w.WriteByte(',')
		}
		k, _ := fmt.Fprintf(w, `{"id":"e%d","name":"Ann Lee %d","email":"ann%d@acme.test","phone":"+1 415 555 %04d","dept":"ops","gifts":[{"id":"g%d","sku":"mug","recipient":{"name":"Bo %d","email":"bo%d@ex.test"},"st":"ok"}]}`, i, i, i, i%10000, i, i, i)
		n += k + 1
	}
	fmt.Fprint(w, `]}`)
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Close()
}
