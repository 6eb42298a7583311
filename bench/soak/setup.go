package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/scopegate/scopegate/internal/testpki"

	"github.com/scopegate/scopegate/bench/internal/childproc"
)

// Client certificate choices of a request.
const (
	certNone = iota
	certAlpha
	certBeta
	certGamma
	numCerts
)

var certNames = [numCerts]string{"none", "alpha", "beta", "gamma"}

// env is everything the run set up.
type env struct {
	cfg      *config
	procs    *childproc.Group
	dir      string // absolute work directory
	caddyBin string // absolute
	caddyLog string

	caddyPid  int
	caddyDone chan struct{} // closed when `caddy run` exits

	redis *redisServer
	up    *upstream
	sites [2]*site

	roots       *x509.CertPool
	clientCerts [numCerts][]tls.Certificate

	faults faultState
	quiet  quietGate

	workers []*worker
	upConns map[string]int64 // Caddy's upstream connections at each quiet point
	start   time.Time        // when the load started
}

// site is one of the two gateway sites and its key store.
type site struct {
	name   string // "file" or "redis"
	port   int
	redis  bool
	store  []string // CLI flags naming the store
	settle time.Duration
	keys   map[string]string // base key name -> plaintext key ("principal" -> id)
	churn  churnPool
}

func (s *site) url(path string) string { return fmt.Sprintf("https://localhost:%d%s", s.port, path) }

func (e *env) path(name string) string { return filepath.Join(e.dir, name) }

// soakMarker marks a work directory as this program's, so a later run may
// wipe it.
const soakMarker = ".soak-workdir"

func setup(ctx context.Context, cfg *config, procs *childproc.Group) (*env, error) {
	dir, err := filepath.Abs(cfg.out)
	if err != nil {
		return nil, err
	}
	bin, err := filepath.Abs(cfg.caddyBin)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("caddy binary: %v (run bench/soak.sh, which builds it)", err)
	}
	redisBin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errors.New("redis-server is not on PATH (apt-get install redis-server)")
	}
	for _, p := range []int{cfg.portBase, cfg.portBase + 1, cfg.adminPort} {
		if !childproc.PortFree(p) {
			return nil, fmt.Errorf("port 127.0.0.1:%d is in use (set PORT_BASE / ADMIN_PORT)", p)
		}
	}
	// The work directory is wiped: refuse one that holds anything but an
	// earlier run's files.
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		if _, err := os.Stat(filepath.Join(dir, soakMarker)); err != nil {
			return nil, fmt.Errorf("%s is not empty and not an earlier soak run's directory: refusing to wipe it", dir)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "redis"), 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, soakMarker), []byte("bench/soak work directory, wiped by every run\n"), 0o644); err != nil {
		return nil, err
	}
	e := &env{cfg: cfg, procs: procs, dir: dir, caddyBin: bin, caddyLog: filepath.Join(dir, "caddy.log")}
	step := func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, "%s soak: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, a...))
	}

	step("certificates, upstream bodies (%d MiB), redis-server", cfg.bigMiB)
	if err := e.makePKI(); err != nil {
		return nil, err
	}
	if e.up, err = newUpstream(cfg.bigMiB); err != nil {
		return nil, err
	}
	rport, err := freePort()
	if err != nil {
		return nil, err
	}
	e.redis = &redisServer{bin: redisBin, dir: filepath.Join(dir, "redis"), port: rport, procs: procs}
	if err := e.redis.start(); err != nil {
		return e, fmt.Errorf("redis: %v", err)
	}
	e.sites[0] = &site{name: "file", port: cfg.portBase, store: []string{"--keys", e.path("keys.json")}, settle: cfg.settleFile}
	e.sites[1] = &site{name: "redis", port: cfg.portBase + 1, redis: true, store: []string{"--redis", e.redis.url()}, settle: cfg.settleRedis}

	step("keys in both stores through %s scoped-key", filepath.Base(bin))
	for _, s := range e.sites {
		if err := e.makeKeys(ctx, s); err != nil {
			return e, err
		}
	}

	step("caddy run (sites :%d keys file, :%d redis; admin :%d)", cfg.portBase, cfg.portBase+1, cfg.adminPort)
	if err := e.startCaddy(ctx); err != nil {
		return e, err
	}
	if err := e.smoke(ctx); err != nil {
		return e, fmt.Errorf("smoke test: %v", err)
	}
	return e, nil
}

func (e *env) makePKI() error {
	ca, err := testpki.NewCA("scopegate soak CA")
	if err != nil {
		return err
	}
	server, err := ca.Server("localhost", "127.0.0.1")
	if err != nil {
		return err
	}
	if _, err := ca.Write(e.dir, "ca", false); err != nil {
		return err
	}
	if _, _, err := server.Write(e.dir, "server"); err != nil {
		return err
	}
	for i := certAlpha; i < numCerts; i++ {
		leaf, err := ca.Client(certNames[i], testpki.URIs("spiffe://soak.test/"+certNames[i]))
		if err != nil {
			return err
		}
		if _, _, err := leaf.Write(e.dir, certNames[i]); err != nil {
			return err
		}
		e.clientCerts[i] = []tls.Certificate{leaf.TLSCertificate()}
	}
	e.roots = ca.Pool()
	return nil
}

// scopedKey runs `caddy scoped-key SUB <store flags> ARGS...` with the
// real binary and returns what it printed.
func (e *env) scopedKey(ctx context.Context, s *site, sub string, args ...string) (string, error) {
	full := append(append([]string{"scoped-key", sub}, s.store...), args...)
	return childproc.Run(ctx, 30*time.Second, e.dir, e.caddyBin, full...)
}

// makeKeys creates the base keys of a site's store.
func (e *env) makeKeys(ctx context.Context, s *site) error {
	s.keys = map[string]string{}
	specs := []struct {
		name string
		args []string
	}{
		{"ro_us", []string{"--name", "soak read-only acme-us", "--scope", "read_only", "--account", "acme-us"}},
		{"pii", []string{"--name", "soak read-only with PII", "--scope", "read_only", "--pii"}},
		{"bound", []string{"--name", "soak bound to alpha", "--scope", "employees:read,gifts:read", "--cert", e.path("alpha.pem")}},
		{"writer", []string{"--name", "soak writer", "--scope", "gifts:send,gifts:read", "--account", "acme-us", "--account", "acme-eu"}},
		{"revoked", []string{"--name", "soak revoked at setup", "--scope", "read_only"}},
		{"principal", []string{"--name", "soak gamma principal", "--scope", "employees:read,gifts:read", "--cert", e.path("gamma.pem"), "--no-secret"}},
	}
	for _, sp := range specs {
		out, err := e.scopedKey(ctx, s, "new", sp.args...)
		if err != nil {
			return fmt.Errorf("%s store: %v", s.name, err)
		}
		s.keys[sp.name] = out
	}
	if _, err := e.scopedKey(ctx, s, "revoke", keyID(s.keys["revoked"])); err != nil {
		return fmt.Errorf("%s store: %v", s.name, err)
	}
	// The load makes unknown keys and wrong secrets itself: check that its
	// key format agrees with the CLI's, or every "unknown key" would really
	// be a malformed one.
	if k := s.keys["ro_us"]; !wellFormed(k) {
		return fmt.Errorf("the CLI's key %s… does not pass this program's format check (keys.go out of date?)", k[:19])
	}
	return nil
}

// caddyfile renders config generation gen. Generations differ by a comment
// only, except that from generation 2 on a rule for GET /v1/extra* exists.
func (e *env) caddyfile(gen int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# scopegate soak test: config generation %d (written by bench/soak)\n", gen)
	debug := ""
	if os.Getenv("CADDY_DEBUG") == "1" {
		debug = "\n\tdebug" // DEBUG logs (TLS handshake errors among them) in caddy.log
	}
	if e.cfg.writeIdle > 0 {
		debug += fmt.Sprintf("\n\tservers {\n\t\ttimeouts {\n\t\t\twrite_idle %v\n\t\t}\n\t}", e.cfg.writeIdle)
	}
	fmt.Fprintf(&b, `{
	admin 127.0.0.1:%d
	default_bind 127.0.0.1
	auto_https disable_redirects
	skip_install_trust
	storage file_system %s%s
}
`, e.cfg.adminPort, e.path("storage"), debug)
	for _, s := range e.sites {
		store := "keys_file " + e.path("keys.json")
		if s.redis {
			store = fmt.Sprintf("redis %s\n\t\tcache_ttl %v", e.redis.url(), e.cfg.cacheTTL)
		}
		extra := "\t\t# rule GET /v1/extra* gifts:read  (added by generation 2)\n"
		if gen >= 2 {
			extra = "\t\trule GET /v1/extra* gifts:read\n"
		}
		fmt.Fprintf(&b, `
https://localhost:%d {
	tls %s %s {
		client_auth {
			mode verify_if_given
			trust_pool file %s
		}
	}
	scoped_auth {
		%s
		account header X-Account-ID
		strip_headers X-Key-Id
		rule GET,HEAD /v1/gifts* gifts:read
		rule POST /v1/gifts gifts:send
		rule GET /v1/employees* employees:read
		rule GET /v1/big/* employees:read
		rule * /v1/me authenticated
		rule * /healthz public
%s	}
	redact
	reverse_proxy %s {
		header_up X-Key-Id {http.auth.key.id}
	}
}
`, s.port, e.path("server.pem"), e.path("server-key.pem"), e.path("ca.pem"), store, extra, e.up.srv.Listener.Addr())
	}
	return b.String()
}

func (e *env) writeConfig(gen int) (string, error) {
	p := e.path(fmt.Sprintf("Caddyfile.gen%d", gen))
	return p, os.WriteFile(p, []byte(e.caddyfile(gen)), 0o600)
}

// caddyEnv keeps Caddy's autosave and data inside the work directory.
func (e *env) caddyEnv() []string {
	return append(os.Environ(), "XDG_DATA_HOME="+e.path("xdg-data"), "XDG_CONFIG_HOME="+e.path("xdg-config"))
}

func (e *env) startCaddy(ctx context.Context) error {
	cf, err := e.writeConfig(0)
	if err != nil {
		return err
	}
	logf, err := os.Create(e.caddyLog)
	if err != nil {
		return err
	}
	cmd := exec.Command(e.caddyBin, "run", "--config", cf, "--adapter", "caddyfile")
	cmd.Dir, cmd.Env = e.dir, e.caddyEnv()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = childproc.SysProcAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	e.procs.Add(cmd, "caddy")
	e.caddyPid = cmd.Process.Pid
	e.caddyDone = make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); e.procs.Remove(cmd); close(e.caddyDone) }()

	// Ready when both sites answer the public route over TLS.
	c := e.newClient(certNone, false)
	defer c.CloseIdleConnections()
	deadline := time.Now().Add(30 * time.Second)
	for _, s := range e.sites {
		for {
			select {
			case <-e.caddyDone:
				return errors.New("caddy exited during startup")
			case <-ctx.Done():
				return ctx.Err()
			default:
			}
			resp, err := c.Get(s.url("/healthz"))
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("site %s did not answer /healthz within 30s (last: %v)", s.name, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

// smoke sends a few requests serially before the load: a broken setup
// should fail here, with a clear message, not as thousands of wrong
// decisions.
func (e *env) smoke(ctx context.Context) error {
	e.start = time.Now()
	w := e.newWorker(0, 1)
	defer w.closeIdle()
	for _, s := range e.sites {
		for _, name := range []string{"gifts_masked", "gifts_pii", "big_masked", "unknown_key", "wrong_scope", "cert_mismatch", "principal", "ambiguous"} {
			c := caseByName(name)
			p := c.build(w, s)
			p.caseName, p.class = c.name, c.class
			before := w.stats.Failures
			w.judge(s, p, w.do(ctx, s, p))
			if w.stats.Failures > before {
				return fmt.Errorf("site %s: %s", s.name, w.stats.Examples[len(w.stats.Examples)-1])
			}
		}
	}
	return nil
}
