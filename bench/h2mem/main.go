// Command h2mem measures Caddy's live heap (after two forced GCs, via the
// admin API) while many short HTTP/2 connections hit one route of
// a caddy binary with scopegate. It starts the binary on
// 127.0.0.1 (site 9790, upstream 9791, admin 9792; -port moves them),
// opens -conns TLS connections (a new one for each -reqs requests, closed
// after) and prints the heap every -every connections, then every 30 s of
// idle time up to -settle. Heap profiles go to -out for
// `go tool pprof -base heap0.pb.gz heap1.pb.gz`.
//
// Routes: /deny (scoped_auth denies, 401 missing_key, body unread),
// /open (public rule, upstream reads the body), /bare (respond 401, body
// unread), /noread (proxy, upstream ignores the body), /big (public rule,
// redact, 2.4 MB JSON response), /bigbare (the same without our handlers).
//
//	go build -o bench/out/caddy ./cmd/caddy
//	go run ./bench/h2mem -path /deny -size 1048576 -conns 1200   # flat
//	go run ./bench/h2mem -path /big -size 65536 -conns 600 -abort 65536 -settle 90s
//	go run ./bench/h2mem -path /bigbare -size 65536 -conns 600 -abort 65536 -settle 90s
//
// Finding: denials do not retain memory. Responses the client abandons
// mid-way (-abort: RST_STREAM) pin their connection's buffers for Caddy's
// write_idle timeout (1 min by default), with or without our handlers:
// see ./xnet for the mechanism without Caddy.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// Ports: -port (default 9790) for the site, +1 the upstream, +2 admin.
var sitePort, upPort, adminPort int

var caddyfile = `{
	admin 127.0.0.1:%[3]d
	default_bind 127.0.0.1
	auto_https disable_redirects
	skip_install_trust
	storage file_system %[4]s/storage
	order scoped_auth before respond
	%[5]s
}
https://localhost:%[1]d {
	tls internal
	route /deny/* {
		scoped_auth {
			keys_file %[4]s/keys.json
			rule * /deny/* gifts:send
		}
		respond "never"
	}
	route /open/* {
		scoped_auth {
			keys_file %[4]s/keys.json
			rule * /open/* public
		}
		reverse_proxy 127.0.0.1:%[2]d
	}
	route /bare/* {
		respond 401
	}
	route /noread/* {
		reverse_proxy 127.0.0.1:%[2]d
	}
	route /bigbare/* {
		reverse_proxy 127.0.0.1:%[2]d
	}
	route /big/* {
		scoped_auth {
			keys_file %[4]s/keys.json
			rule * /big/* public
		}
		redact
		reverse_proxy 127.0.0.1:%[2]d
	}
}
`

func main() {
	bin := flag.String("caddy", "bench/out/caddy", "caddy binary with scopegate")
	path := flag.String("path", "/deny", "/deny (scoped_auth 401), /open (public, upstream reads body), /bare (respond 401), /noread (proxy, upstream does not read), /big (public, redact, 2.4 MB JSON response), /bigbare (same without our handlers)")
	conns := flag.Int("conns", 2000, "connections in all")
	reqs := flag.Int("reqs", 3, "requests per connection")
	par := flag.Int("par", 8, "concurrent connections")
	size := flag.Int("size", 256<<10, "request body bytes")
	every := flag.Int("every", 500, "measure every this many connections")
	h1 := flag.Bool("h1", false, "HTTP/1.1 instead of HTTP/2")
	out := flag.String("out", "", "directory for heap profiles (default: temp dir)")
	limit := flag.Duration("timeout", 4*time.Minute, "stop after this long")
	abort := flag.Int("abort", 0, "read only this many response bytes, then close the body (0: read all)")
	global := flag.String("global", "", `extra global options, e.g. "servers { timeouts { write_idle -1s } }"`)
	settle := flag.Duration("settle", 0, "after the load, measure again after this idle time (e.g. 70s, beyond Caddy's 1 min read/write idle timeouts)")
	flag.IntVar(&sitePort, "port", 9790, "site port; the upstream uses +1, the admin API +2")
	flag.Parse()
	upPort, adminPort = sitePort+1, sitePort+2

	ctx, cancel := context.WithTimeout(context.Background(), *limit)
	defer cancel()
	dir, err := os.MkdirTemp("", "h2mem")
	must(err)
	defer os.RemoveAll(dir)
	if *out == "" {
		*out = dir
	}
	must(os.WriteFile(filepath.Join(dir, "keys.json"), []byte(`{"keys":[]}`), 0o600))
	must(os.WriteFile(filepath.Join(dir, "Caddyfile"), fmt.Appendf(nil, caddyfile, sitePort, upPort, adminPort, dir, *global), 0o600))

	// The upstream reads the body on /open and ignores it on /noread.
	up := &http.Server{Addr: fmt.Sprintf("127.0.0.1:%d", upPort), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var n int64
		if r.URL.Path[:4] != "/nor" {
			n, _ = io.Copy(io.Discard, r.Body)
		}
		if r.URL.Path[:4] == "/big" {
			// a large JSON response, so the handler writes many DATA frames
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"rows":[`)
			for i := range 20000 {
				fmt.Fprintf(w, `{"i":%d,"name":"Ann Quillfeather","email":"a%d@acme.test","note":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"},`, i, i)
			}
			io.WriteString(w, `{}]}`)
			return
		}
		fmt.Fprintf(w, `{"received":%d}`, n)
	})}
	go up.ListenAndServe()
	defer up.Close()

	cmd := exec.CommandContext(ctx, *bin, "run", "--config", filepath.Join(dir, "Caddyfile"), "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	logf, _ := os.Create(filepath.Join(dir, "caddy.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	must(cmd.Start())
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	url := fmt.Sprintf("https://localhost:%d%s/x", sitePort, *path)
	body := bytes.Repeat([]byte("x"), *size)
	tlsCfg := &tls.Config{InsecureSkipVerify: true}
	newClient := func() (*http.Client, *http.Transport) {
		tr := &http.Transport{TLSClientConfig: tlsCfg.Clone(), ForceAttemptHTTP2: !*h1}
		if *h1 {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		return &http.Client{Transport: tr, Timeout: 20 * time.Second}, tr
	}
	// Wait for Caddy.
	for i := 0; ; i++ {
		c, tr := newClient()
		resp, err := c.Get(fmt.Sprintf("https://localhost:%d/bare/", sitePort))
		tr.CloseIdleConnections()
		if err == nil {
			resp.Body.Close()
			break
		}
		if i > 100 || ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "caddy did not start:", err)
			b, _ := os.ReadFile(filepath.Join(dir, "caddy.log"))
			os.Stderr.Write(b)
			os.Exit(1)
		}
		time.Sleep(100 * time.Millisecond)
	}

	proto := "h2"
	if *h1 {
		proto = "h1"
	}
	fmt.Printf("path=%s proto=%s body=%d reqs/conn=%d\n", *path, proto, *size, *reqs)
	fmt.Printf("conns=%6d heap=%6.1f MiB goroutines=%d\n", 0, heapMiB(filepath.Join(*out, "heap0.pb.gz")), goroutines())

	var done, errs atomic.Int64
	statuses := sync.Map{}
	next := make(chan struct{})
	var wg sync.WaitGroup
	for range *par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				c, tr := newClient()
				for range *reqs {
					req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
					resp, err := c.Do(req)
					if err != nil {
						errs.Add(1)
						continue
					}
					if *abort > 0 {
						io.CopyN(io.Discard, resp.Body, int64(*abort))
					} else {
						io.Copy(io.Discard, resp.Body)
					}
					resp.Body.Close()
					k := fmt.Sprintf("%d/%s", resp.StatusCode, resp.Proto)
					v, _ := statuses.LoadOrStore(k, new(atomic.Int64))
					v.(*atomic.Int64).Add(1)
				}
				tr.CloseIdleConnections()
				done.Add(1)
			}
		}()
	}
	for i := 1; i <= *conns && ctx.Err() == nil; i++ {
		next <- struct{}{}
		if i%*every == 0 {
			for done.Load() < int64(i) && ctx.Err() == nil {
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(300 * time.Millisecond) // let server goroutines finish
			name := ""
			if i+*every > *conns {
				name = filepath.Join(*out, "heap1.pb.gz")
				must(os.WriteFile(filepath.Join(*out, "goroutines.txt"), admin("/debug/pprof/goroutine?debug=1"), 0o644))
			}
			fmt.Printf("conns=%6d heap=%6.1f MiB goroutines=%d errors=%d\n", i, heapMiB(name), goroutines(), errs.Load())
		}
	}
	close(next)
	wg.Wait()
	if *settle > 0 && ctx.Err() == nil {
		for t := 30 * time.Second; t <= *settle && ctx.Err() == nil; t += 30 * time.Second {
			time.Sleep(30 * time.Second)
			fmt.Printf("after %s idle: heap=%6.1f MiB goroutines=%d\n", t, heapMiB(filepath.Join(*out, fmt.Sprintf("heap-idle-%03ds.pb.gz", int(t.Seconds())))), goroutines())
		}
	}
	statuses.Range(func(k, v any) bool { fmt.Printf("  %s x%d\n", k, v.(*atomic.Int64).Load()); return true })
	if *out != dir {
		fmt.Printf("profiles: go tool pprof -base %[1]s/heap0.pb.gz -inuse_space -top %[2]s %[1]s/heap1.pb.gz\n", *out, *bin)
	}
}

func admin(p string) []byte {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", adminPort, p))
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return b
}

// heapMiB forces two GCs through the pprof endpoint (saving the second
// profile to name if given) and returns HeapAlloc from expvar's memstats.
func heapMiB(name string) float64 {
	admin("/debug/pprof/heap?gc=1")
	p := admin("/debug/pprof/heap?gc=1")
	if name != "" {
		must(os.WriteFile(name, p, 0o644))
	}
	var v struct{ Memstats struct{ HeapAlloc uint64 } }
	_ = json.Unmarshal(admin("/debug/vars"), &v)
	return float64(v.Memstats.HeapAlloc) / (1 << 20)
}

func goroutines() int {
	b := admin("/debug/pprof/goroutine?debug=1")
	var n int
	fmt.Sscanf(string(b), "goroutine profile: total %d", &n)
	return n
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
