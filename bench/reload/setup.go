package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/scopegate/scopegate/internal/testpki"

	"github.com/scopegate/scopegate/bench/internal/childproc"
)

// env is everything the run set up.
type env struct {
	cfg       *config
	procs     *childproc.Group
	dir       string
	caddyBin  string
	caddyDone chan struct{}
	gen       int // config generation (the comment that makes each reload a change)

	roots      *x509.CertPool
	clientCert []tls.Certificate
	key        string // a valid key for the scopegate site
}

// workMarker marks a work directory as this program's, so a later run may
// wipe it.
const workMarker = ".reload-workdir"

// body is the response of both sites: small JSON with fields redact masks
// (so that, on our site, the masker really works on every response).
const body = `{"id":1,"name":"Ada Lovelace","email":"ada@example.com","phone":"+44 20 7946 0958","plan":"gold"}`

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
		return nil, fmt.Errorf("caddy binary: %v (bench/reload.sh builds it)", err)
	}
	for _, p := range []int{cfg.portBase, cfg.portBase + 1, cfg.adminPort} {
		if !childproc.PortFree(p) {
			return nil, fmt.Errorf("port 127.0.0.1:%d is in use (set PORT_BASE / ADMIN_PORT)", p)
		}
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		if _, err := os.Stat(filepath.Join(dir, workMarker)); err != nil {
			return nil, fmt.Errorf("%s is not empty and not an earlier run's directory: refusing to wipe it", dir)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, workMarker), []byte("bench/reload work directory, wiped by every run\n"), 0o644); err != nil {
		return nil, err
	}
	e := &env{cfg: cfg, procs: procs, dir: dir, caddyBin: bin}
	if err := e.makePKI(); err != nil {
		return nil, err
	}
	e.key, err = childproc.Run(ctx, 30*time.Second, dir, bin, "scoped-key", "new", "--keys", e.path("keys.json"),
		"--name", "reload bench", "--scope", "gifts:read,gifts:send")
	if err != nil {
		return nil, err
	}
	logf("caddy run (bare :%d, ours :%d, admin :%d)", cfg.portBase, cfg.portBase+1, cfg.adminPort)
	if err := e.startCaddy(ctx, cfg.variants[0]); err != nil {
		return nil, err
	}
	return e, nil
}

func (e *env) path(name string) string { return filepath.Join(e.dir, name) }

func (e *env) makePKI() error {
	ca, err := testpki.NewCA("scopegate reload bench CA")
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
	leaf, err := ca.Client("alpha", testpki.URIs("spiffe://reload.test/alpha"))
	if err != nil {
		return err
	}
	e.clientCert = []tls.Certificate{leaf.TLSCertificate()}
	e.roots = ca.Pool()
	return nil
}

// caddyfile renders a config generation for a variant. Both sites are
// always there and identical but for scoped_auth and redact; the variant
// only changes global options.
func (e *env) caddyfile(v variant) string {
	e.gen++
	var global []string
	if v.sdelay {
		global = append(global, "shutdown_delay 2s")
	}
	if v.grace {
		global = append(global, "grace_period 10s")
	}
	if v.idle {
		global = append(global, "servers {\n\t\ttimeouts {\n\t\t\tidle 1s\n\t\t}\n\t}")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# bench/reload: config generation %d (variant %s)\n", e.gen, v.name)
	fmt.Fprintf(&b, `{
	admin 127.0.0.1:%d
	default_bind 127.0.0.1
	auto_https disable_redirects
	skip_install_trust
	storage file_system %s
	%s
}
`, e.cfg.adminPort, e.path("storage"), strings.Join(global, "\n\t"))
	for i, ours := range []bool{false, true} {
		handlers := ""
		if ours {
			handlers = fmt.Sprintf(`	scoped_auth {
		keys_file %s
		rule GET,POST /v1/* gifts:read
	}
	redact
`, e.path("keys.json"))
		}
		fmt.Fprintf(&b, `
https://localhost:%d {
	tls %s %s {
		client_auth {
			mode verify_if_given
			trust_pool file %s
		}
	}
%s	header Content-Type application/json
	respond `+"`%s`"+` 200
}
`, e.cfg.portBase+i, e.path("server.pem"), e.path("server-key.pem"), e.path("ca.pem"), handlers, body)
	}
	return b.String()
}

func (e *env) writeConfig(v variant) (string, error) {
	p := e.path(fmt.Sprintf("Caddyfile.gen%d", e.gen+1))
	return p, os.WriteFile(p, []byte(e.caddyfile(v)), 0o600)
}

func (e *env) caddyEnv() []string {
	return append(os.Environ(), "XDG_DATA_HOME="+e.path("xdg-data"), "XDG_CONFIG_HOME="+e.path("xdg-config"))
}

func (e *env) startCaddy(ctx context.Context, v variant) error {
	cf, err := e.writeConfig(v)
	if err != nil {
		return err
	}
	logFile, err := os.Create(e.path("caddy.log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(e.caddyBin, "run", "--config", cf, "--adapter", "caddyfile")
	cmd.Dir, cmd.Env = e.dir, e.caddyEnv()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = childproc.SysProcAttr()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return err
	}
	e.procs.Add(cmd, "caddy")
	e.caddyDone = make(chan struct{})
	go func() { _ = cmd.Wait(); logFile.Close(); e.procs.Remove(cmd); close(e.caddyDone) }()

	// Ready when both sites answer.
	tr := &http.Transport{DialContext: dial127, TLSClientConfig: e.tlsConfig()}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for i := range 2 {
		for {
			select {
			case <-e.caddyDone:
				return errors.New("caddy exited during startup: see caddy.log")
			case <-ctx.Done():
				return ctx.Err()
			default:
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.url(i == 1, "/v1/ping"), nil)
			req.Header.Set("Authorization", "Bearer "+e.key)
			resp, err := c.Do(req)
			if err == nil {
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					// Our site masks; the bare one must not: a check that
					// the two sites really differ by our handlers.
					masked := !strings.Contains(string(got), "ada@example.com")
					if masked != (i == 1) {
						return fmt.Errorf("site %d answered %s: masking is not as expected", i, got)
					}
					break
				}
				err = fmt.Errorf("status %d: %s", resp.StatusCode, got)
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("site :%d did not answer within 30s (last: %v)", e.cfg.portBase+i, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

// reload runs `caddy reload --force` with a new generation of the
// variant's config.
func (e *env) reload(ctx context.Context, v variant) error {
	cf, err := e.writeConfig(v)
	if err != nil {
		return err
	}
	_, err = childproc.Run(ctx, 30*time.Second, e.dir, e.caddyBin, "reload", "--config", cf, "--adapter", "caddyfile",
		"--address", fmt.Sprintf("127.0.0.1:%d", e.cfg.adminPort), "--force")
	return err
}

func (e *env) url(ours bool, path string) string {
	port := e.cfg.portBase
	if ours {
		port++
	}
	return fmt.Sprintf("https://localhost:%d%s", port, path)
}

func (e *env) tlsConfig() *tls.Config {
	return &tls.Config{RootCAs: e.roots, ServerName: "localhost", Certificates: e.clientCert}
}

// dial127 always dials 127.0.0.1 (never ::1); the URL keeps "localhost"
// for SNI and Host, which Caddy requires to match with client_auth on.
func dial127(ctx context.Context, _, addr string) (net.Conn, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	return d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", port))
}

// setMigrate writes net.ipv4.tcp_migrate_req (per network namespace: only
// called in the private one reload.sh made).
func setMigrate(on bool) error {
	v := "0\n"
	if on {
		v = "1\n"
	}
	return os.WriteFile("/proc/sys/net/ipv4/tcp_migrate_req", []byte(v), 0o644)
}
