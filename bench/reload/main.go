// Command reload measures connection-level failures during `caddy reload`
// under load, for a bare Caddy site and the same site with scopegate's
// handlers (scoped_auth + redact), in the same run and alternating, with
// and without mitigations. See "Reloads under load: bare Caddy vs
// scopegate" in bench/README.md; bench/reload.sh builds and runs it.
//
// One Caddy process serves both sites (bare on PORT_BASE, ours on
// PORT_BASE+1) in every config generation, so both see exactly the same
// reloads; a variant only decides which site the load targets, which
// client behaviour it uses and which global options the configs carry.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/scopegate/scopegate/bench/internal/childproc"
)

// config is the command line.
type config struct {
	caddyBin    string
	out         string
	variants    []variant
	duration    time.Duration // per variant, split over rounds
	rounds      int
	workers     int
	reloadEvery time.Duration
	portBase    int
	adminPort   int
	privateNet  bool // in a private network namespace: tcp_migrate_req may be toggled
}

func main() {
	cfg := &config{}
	var variants string
	flag.StringVar(&cfg.caddyBin, "caddy", "bench/out/caddy", "caddy binary built from ./cmd/caddy")
	flag.StringVar(&cfg.out, "out", "bench/out/reload", "work directory (wiped)")
	flag.StringVar(&variants, "variants", "bare,ours", "comma-separated variants: bare|ours, each optionally +mitigation (+idem +retry +h2 +migrate +sdelay +grace +idle)")
	flag.DurationVar(&cfg.duration, "duration", 30*time.Second, "load time per variant")
	flag.IntVar(&cfg.rounds, "rounds", 2, "the variants alternate this many times (each slice: duration/rounds)")
	flag.IntVar(&cfg.workers, "workers", 8, "concurrent clients, spread over the four load kinds")
	flag.DurationVar(&cfg.reloadEvery, "reload-every", 2*time.Second, "interval of caddy reload --force")
	flag.IntVar(&cfg.portBase, "port-base", envInt("PORT_BASE", 9760), "bare site on this port, ours on the next")
	flag.IntVar(&cfg.adminPort, "admin-port", envInt("ADMIN_PORT", 3760), "Caddy's admin API port")
	flag.BoolVar(&cfg.privateNet, "private-netns", false, "running in a private network namespace (set by reload.sh): toggle net.ipv4.tcp_migrate_req per variant")
	flag.Parse()

	for _, s := range strings.Split(variants, ",") {
		v, err := parseVariant(strings.TrimSpace(s))
		if err != nil {
			fmt.Fprintln(os.Stderr, "reload:", err)
			os.Exit(2)
		}
		if v.migrate && !cfg.privateNet {
			fmt.Fprintf(os.Stderr, "reload: variant %s needs -private-netns (reload.sh runs the program in one when it can)\n", v.name)
			os.Exit(2)
		}
		cfg.variants = append(cfg.variants, v)
	}
	if cfg.rounds < 1 || cfg.duration < time.Second || cfg.workers < 4 {
		fmt.Fprintln(os.Stderr, "reload: need -rounds >= 1, -duration >= 1s, -workers >= 4")
		os.Exit(2)
	}

	// Hard deadline: the load plus generous setup and teardown time.
	total := time.Duration(len(cfg.variants))*cfg.duration + 90*time.Second
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	ctx, cancelDeadline := context.WithTimeout(ctx, total)
	defer cancelDeadline()

	procs := &childproc.Group{}
	rc := run(ctx, cfg, procs)
	procs.StopAll()
	if ctx.Err() == context.DeadlineExceeded {
		fmt.Fprintln(os.Stderr, "reload: hard deadline reached")
		rc = 3
	}
	os.Exit(rc)
}

func run(ctx context.Context, cfg *config, procs *childproc.Group) int {
	e, err := setup(ctx, cfg, procs)
	if err != nil {
		fmt.Fprintln(os.Stderr, "reload: setup:", err)
		return 2
	}
	results, err := e.runAll(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "reload:", err)
		if ctx.Err() != nil {
			return 130
		}
		return 2
	}
	rep := buildReport(cfg, results)
	rep.print(os.Stdout)
	data, _ := json.MarshalIndent(rep, "", "  ")
	_ = os.WriteFile(filepath.Join(e.dir, "summary.json"), append(data, '\n'), 0o644)
	fmt.Printf("\nsummary.json, Caddyfiles and caddy.log: %s\n", e.dir)
	return 0
}

func envInt(name string, def int) int {
	var n int
	if _, err := fmt.Sscan(os.Getenv(name), &n); err == nil && n > 0 {
		return n
	}
	return def
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "%s reload: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, a...))
}
