package caddyauth

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/scopegate/scopegate/caddyauth/internal/keyring"
)

// This file is `caddy scoped-key explain`: for one request described on the
// command line, which scoped_auth handler judges it, which rule matches,
// what permission it needs, and the first check that fails, in the order
// the handler checks (SPEC section 3). Every decision is made by the
// module's own code (inspect, matchRule, the keyring's Binding, ValidAt,
// Grants, AllowsAccount) on handlers decoded and provisioned from the
// adapted config; the checks themselves are in explain_checks.go.

// Exit statuses of explain: 0 when the request would be allowed (public
// included, and shadow mode), 1 when it would be denied, 2 when the
// command could not tell (bad flags, unreadable config or store).
const (
	explainExitDenied = 1
	explainExitError  = 2
)

// skExitError is an error with the exit status caddy should end with. It
// unwraps to caddycmd's own exit error, which caddy's main reads.
type skExitError struct {
	code  int
	msg   string
	inner error
}

func (e *skExitError) Error() string { return e.msg }
func (e *skExitError) Unwrap() error { return e.inner }

// ExitCode is the process exit status for this error.
func (e *skExitError) ExitCode() int { return e.code }

func skExit(code int, err error) *skExitError {
	// caddycmd's exit error type is unexported; WrapCommandFuncForCobra
	// makes one (for codes above 1) without logging anything.
	inner := caddycmd.WrapCommandFuncForCobra(func(caddycmd.Flags) (int, error) { return code, nil })(&cobra.Command{}, nil)
	return &skExitError{code: code, msg: strings.Join(strings.Fields(err.Error()), " "), inner: inner}
}

// explainInput is the request described by the flags.
type explainInput struct {
	configFile, adapter string
	keysFile, redisURL  string
	method, target      string
	siteHost, sitePort  string
	account             string
	hasAccount          bool
	headers             http.Header
	keyID               string
	certFile            string
	chain               []*x509.Certificate
	at                  time.Time
	jsonOut             bool
}

// url parses the request target as Go's HTTP server parses a request line.
func (in *explainInput) url() *neturl.URL {
	u, _ := neturl.ParseRequestURI(in.target) // checked in parse
	return u
}

func (c *scopedKeyCLI) explainCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "explain --config Caddyfile (--key-id ID | --cert PEM) --method M --path P [flags]",
		Short: "Explains why a request with a key is allowed or denied",
		Long: `
Explains how scoped_auth would judge one request: which handler in the
config judges it (and where it is), which rule matches, the permission it
needs, and every check in the handler's order (SPEC section 3) as ok, FAIL
or skip, ending with the answer the handler would give (e.g. 403
insufficient_scope) and a hint of the fix. It never needs the secret: give
the key's public id (--key-id), the 16 characters after sg_.

The config is adapted like 'caddy adapt' (Caddyfile by default, --adapter
json for JSON). Routing uses Caddy's own matchers and rewrites, so the
handler found is the one a request reaches. With --site HOST[:PORT] the
request is routed as Caddy routes it for that Host (and, with a port, only
on servers listening there); without it, every site block that reaches a
scoped_auth handler is explained.

The key is looked up in --keys FILE or --redis URL when given, otherwise in
each handler's own keys_file or redis. --cert PEM is the client's
certificate chain, leaf first: explain treats it as verified by Caddy's
TLS (it does not check it against the site's trust pool), but it does
follow the site's client_auth mode (request and require do not verify, so
scoped_auth never counts such a certificate). Without --key-id and with
--cert, the certificate-principal path is explained.

Things explain cannot know are mentioned, not guessed: TLS early data
(425), the secret the client really sends, store errors at request time.

Exit status: 0 allowed (public and shadow mode included), 1 denied, 2 the
command could not tell (bad flag, unreadable config or store, unknown id).
`,
		Example: `  caddy scoped-key explain --config /etc/caddy/Caddyfile --key-id k7q2m4x5w3p5z6c2 \
      --method POST --path /v1/budgets/b1/spend --account acme-us
  caddy scoped-key explain --config caddy.json --adapter json --site api.acme.test \
      --cert client.pem --method GET --path /v1/gifts --json`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := skNoArgs(cmd, args); err != nil {
				return skExit(explainExitError, err)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.runExplain(cmd)
		},
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return skExit(explainExitError, err) })
	fl := cmd.Flags()
	fl.String("config", "", "the Caddy config `FILE` (a Caddyfile unless --adapter says otherwise)")
	fl.String("adapter", "caddyfile", "the config adapter `NAME` (caddyfile; json for a JSON config)")
	fl.String("keys", "", "look keys up in this keys `FILE` instead of each handler's store")
	fl.String("redis", "", "look keys up in this Redis `URL` instead of each handler's store")
	fl.String("key-id", "", "the public `ID` of the key (16 characters after sg_); never the key itself")
	fl.String("method", "GET", "the request `METHOD`")
	fl.String("path", "", "the request `TARGET`: path and optional ?query, as sent (escapes kept)")
	fl.String("account", "", "the `ACCOUNT` the request names (placed where each handler reads it)")
	fl.String("cert", "", "the client certificate chain in `PEM`, leaf first (treated as verified)")
	fl.String("site", "", "route as Caddy does for this `HOST[:PORT]` (default: explain every site)")
	fl.StringArray("header", nil, "an extra request header `'Name: value'`; repeatable")
	fl.String("at", "", "judge validity at `TIME` (RFC 3339 or a duration from now; default now)")
	fl.Bool("json", false, "print one JSON object instead of lines")
	return cmd
}

// runExplain is `caddy scoped-key explain`.
func (c *scopedKeyCLI) runExplain(cmd *cobra.Command) error {
	in, err := c.explainFlags(cmd.Flags())
	if err != nil {
		return skExit(explainExitError, err)
	}
	rep, err := explain(cmd.Context(), in)
	if err != nil {
		return skExit(explainExitError, err)
	}
	out := cmd.OutOrStdout()
	if in.jsonOut {
		enc := json.NewEncoder(out)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		err = enc.Encode(rep)
	} else {
		err = rep.print(out)
	}
	if err != nil {
		return skExit(explainExitError, err)
	}
	if !rep.Allowed {
		// The explanation is the message: no "Error:" line.
		cmd.SilenceErrors = true
		return skExit(explainExitDenied, errors.New("the request would be denied"))
	}
	return nil
}

func (c *scopedKeyCLI) explainFlags(fl *pflag.FlagSet) (*explainInput, error) {
	str := func(name string) string { v, _ := fl.GetString(name); return v }
	in := &explainInput{
		configFile: str("config"),
		adapter:    str("adapter"),
		keysFile:   str("keys"),
		redisURL:   str("redis"),
		method:     str("method"),
		target:     str("path"),
		account:    str("account"),
		hasAccount: fl.Changed("account"),
		headers:    http.Header{},
		certFile:   str("cert"),
		at:         c.now(),
	}
	in.jsonOut, _ = fl.GetBool("json")
	switch {
	case in.configFile == "":
		return nil, errors.New("give the Caddy config with --config FILE")
	case in.keysFile != "" && in.redisURL != "":
		return nil, errors.New("give either --keys or --redis, not both")
	case in.target == "":
		return nil, errors.New("give the request path with --path (e.g. /v1/gifts)")
	case in.method == "":
		return nil, errors.New("--method: empty method")
	}
	if !strings.HasPrefix(in.target, "/") {
		return nil, fmt.Errorf("--path %q: want the path as sent, starting with / (e.g. /v1/gifts?limit=5)", skShort(in.target))
	}
	if _, err := neturl.ParseRequestURI(in.target); err != nil {
		return nil, fmt.Errorf("--path: Go's HTTP server rejects this request target before Caddy runs (400): %v", err)
	}
	if id := str("key-id"); id != "" {
		if _, err := skID(id); err != nil {
			return nil, fmt.Errorf("--key-id: %v", err)
		}
		in.keyID = id
	}
	if site := str("site"); site != "" {
		site = strings.TrimPrefix(strings.TrimPrefix(site, "https://"), "http://")
		site = strings.TrimSuffix(site, "/")
		if h, p, err := net.SplitHostPort(site); err == nil {
			in.siteHost, in.sitePort = h, p
		} else {
			in.siteHost = site
		}
		if in.siteHost == "" || strings.ContainsAny(in.siteHost, "/ ") {
			return nil, fmt.Errorf("--site %q: want HOST or HOST:PORT", skShort(site))
		}
	}
	for _, h := range fl.Lookup("header").Value.(pflag.SliceValue).GetSlice() {
		name, value, ok := strings.Cut(h, ":")
		name = strings.TrimSpace(name)
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return nil, fmt.Errorf("--header %q: want 'Name: value'", skShort(h))
		}
		value = strings.TrimSpace(value)
		for _, field := range strings.Fields(value) {
			if _, isKey := keyring.ParseKey(field); isKey || strings.HasPrefix(field, "sg_") {
				return nil, errors.New("--header: do not pass keys to explain; give the key's id with --key-id")
			}
		}
		in.headers.Add(name, value)
	}
	if at := str("at"); at != "" {
		t, err := time.Parse(time.RFC3339, at)
		if err != nil {
			d, derr := skParseDuration(at)
			if derr != nil {
				return nil, fmt.Errorf("--at %q: want an RFC 3339 time or a duration from now (e.g. 24h, 7d, -1h)", skShort(at))
			}
			t = in.at.Add(d)
		}
		in.at = t
	}
	if in.certFile != "" {
		chain, err := skReadCerts("--cert", in.certFile)
		if err != nil {
			return nil, err
		}
		in.chain = chain
	}
	return in, nil
}

// explainReport is the whole answer (also the --json output).
type explainReport struct {
	Request  explainRequestInfo `json:"request"`
	Sites    []*explainSiteOut  `json:"sites"`
	Allowed  bool               `json:"allowed"`
	Notes    []string           `json:"notes,omitempty"`
	NotFound string             `json:"not_guarded,omitempty"`
}

type explainRequestInfo struct {
	Method      string   `json:"method"`
	Target      string   `json:"target"`
	Site        string   `json:"site,omitempty"`
	KeyID       string   `json:"key_id,omitempty"`
	Account     *string  `json:"account,omitempty"`
	Certificate []string `json:"certificate,omitempty"`
	At          string   `json:"at"`
}

type explainSiteOut struct {
	Site     string               `json:"site"`
	Handlers []*explainHandlerOut `json:"handlers"`
	Outcome  explainOutcomeOut    `json:"outcome"`
	Notes    []string             `json:"notes,omitempty"`
	Missed   int                  `json:"handlers_not_reached"`
}

type explainHandlerOut struct {
	Location   string            `json:"location"`
	ConfigPath string            `json:"config_path"`
	Store      string            `json:"store"`
	Checks     []explainCheckOut `json:"checks"`
	Outcome    explainOutcomeOut `json:"outcome"`
	Fix        string            `json:"fix,omitempty"`
	Notes      []string          `json:"notes,omitempty"`
}

type explainCheckOut struct {
	Check  string `json:"check"`
	Status string `json:"status"` // ok, FAIL, skip
	Detail string `json:"detail"`
}

type explainOutcomeOut struct {
	Allowed         bool   `json:"allowed"`
	Status          int    `json:"status,omitempty"`
	Error           string `json:"error,omitempty"`
	WWWAuthenticate string `json:"www_authenticate,omitempty"`
	Shadow          bool   `json:"shadow,omitempty"`
	Text            string `json:"text"`
}

// explain judges the request against every site of the config it reaches.
func explain(ctx context.Context, in *explainInput) (*explainReport, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	ec, err := loadExplainConfig(in.configFile, in.adapter)
	if err != nil {
		return nil, err
	}
	w := newExplainWalker()
	defer w.close()
	sites, err := w.sites(ec, in)
	if err != nil {
		return nil, fmt.Errorf("--config %s: %v", in.configFile, err)
	}
	stores := newExplainStores(in)
	defer stores.close()

	rep := &explainReport{Allowed: true, Request: explainRequestInfo{
		Method: in.method, Target: in.target, KeyID: in.keyID, At: in.at.UTC().Format(time.RFC3339),
	}}
	if in.siteHost != "" {
		rep.Request.Site = in.siteHost
		if in.sitePort != "" {
			rep.Request.Site = net.JoinHostPort(in.siteHost, in.sitePort)
		}
	}
	if in.hasAccount {
		rep.Request.Account = &in.account
	}
	for i, cert := range in.chain {
		role := "issuer"
		if i == 0 {
			role = "leaf"
		}
		rep.Request.Certificate = append(rep.Request.Certificate, fmt.Sprintf("%s %s (sha256 %s)", role, cert.Subject.String(), keyring.HexDigest(keyring.LeafSHA256(cert))))
	}
	if in.chain != nil {
		rep.Notes = append(rep.Notes, "the --cert chain is treated as verified by Caddy's TLS client_auth: explain does not check it against the site's trust pool")
		if now := in.at; now.Before(in.chain[0].NotBefore) || now.After(in.chain[0].NotAfter) {
			rep.Notes = append(rep.Notes, fmt.Sprintf("the leaf certificate is valid from %s to %s only: Caddy's TLS would refuse it before any handler runs",
				in.chain[0].NotBefore.UTC().Format(time.RFC3339), in.chain[0].NotAfter.UTC().Format(time.RFC3339)))
		}
	}
	if ec.errorHandlers > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d scoped_auth handler(s) inside handle_errors are not explained (they run only after an error)", ec.errorHandlers))
	}
	found := false
	for _, site := range sites {
		so := &explainSiteOut{Site: site.name, Notes: site.notes, Missed: site.missed}
		allowed := true
		var prev *explainRun
		for _, hit := range site.hits {
			run, err := newExplainRun(ctx, in, hit, stores, prev)
			if err != nil {
				return nil, fmt.Errorf("%s: %v", hit.path, err)
			}
			found = found || run.byID != nil
			ho := run.judge()
			so.Handlers = append(so.Handlers, ho)
			if !ho.Outcome.Allowed {
				allowed = false
				so.Outcome = ho.Outcome
				break // the chain stops at the first denial
			}
			so.Outcome = ho.Outcome
			prev = run
		}
		if allowed && len(site.hits) > 1 {
			so.Outcome.Text = "allowed by every scoped_auth handler on the way"
		}
		rep.Allowed = rep.Allowed && allowed
		rep.Sites = append(rep.Sites, so)
	}
	if in.keyID != "" && !found && len(stores.names) > 0 {
		return nil, fmt.Errorf("unknown key id %s in %s", in.keyID, stores.describe())
	}
	if len(sites) == 0 {
		rep.NotFound = fmt.Sprintf("no scoped_auth handler is reached by %s %s: the %d handler(s) in the config are behind routes (hosts, paths, ports) this request does not match, so scoped_auth does not judge it", in.method, in.target, ec.total)
		if in.siteHost == "" {
			rep.NotFound += " (give --site HOST[:PORT] to route for one site)"
		}
	}
	return rep, nil
}

// print writes the report as readable lines.
func (rep *explainReport) print(out io.Writer) error {
	var b strings.Builder
	r := rep.Request
	fmt.Fprintf(&b, "request: %s %s", r.Method, r.Target)
	if r.Site != "" {
		fmt.Fprintf(&b, "  site %s", r.Site)
	}
	if r.KeyID != "" {
		fmt.Fprintf(&b, "  key id %s", r.KeyID)
	}
	if r.Account != nil {
		fmt.Fprintf(&b, "  account %q", *r.Account)
	}
	fmt.Fprintf(&b, "  at %s\n", r.At)
	for _, c := range r.Certificate {
		fmt.Fprintf(&b, "certificate: %s\n", c)
	}
	for _, s := range rep.Sites {
		fmt.Fprintf(&b, "\nsite %s\n", s.Site)
		for _, h := range s.Handlers {
			fmt.Fprintf(&b, "handler: %s\n", h.Location)
			fmt.Fprintf(&b, "  config: %s\n", h.ConfigPath)
			fmt.Fprintf(&b, "  store:  %s\n", h.Store)
			for _, c := range h.Checks {
				fmt.Fprintf(&b, "  %-4s  %-18s %s\n", c.Status, c.Check, c.Detail)
			}
			fmt.Fprintf(&b, "  outcome: %s\n", h.Outcome.Text)
			if h.Fix != "" {
				fmt.Fprintf(&b, "  fix: %s\n", h.Fix)
			}
			for _, n := range h.Notes {
				fmt.Fprintf(&b, "  note: %s\n", n)
			}
		}
		for _, n := range s.Notes {
			fmt.Fprintf(&b, "note: %s\n", n)
		}
		if s.Missed > 0 {
			fmt.Fprintf(&b, "note: %d other scoped_auth handler(s) of this site are behind routes this request does not match\n", s.Missed)
		}
		if len(s.Handlers) > 1 {
			fmt.Fprintf(&b, "site outcome: %s\n", s.Outcome.Text)
		}
	}
	if rep.NotFound != "" {
		fmt.Fprintf(&b, "\n%s\n", rep.NotFound)
	}
	if len(rep.Notes) > 0 {
		b.WriteString("\n")
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	if len(rep.Sites) > 1 {
		verdict := "allowed on every site"
		if !rep.Allowed {
			verdict = "denied on at least one site (give --site HOST[:PORT] for one answer)"
		}
		fmt.Fprintf(&b, "\nresult: %s\n", verdict)
	}
	_, err := io.WriteString(out, b.String())
	return err
}

// explainStores opens each store once: --keys/--redis for every handler,
// or each handler's own keys_file/redis.
type explainStores struct {
	in    *explainInput
	open  map[string]keyring.Store
	redis []*keyring.RedisStore
	names []string
}

func newExplainStores(in *explainInput) *explainStores {
	return &explainStores{in: in, open: map[string]keyring.Store{}}
}

func (s *explainStores) close() {
	for _, r := range s.redis {
		_ = r.Close()
	}
}

func (s *explainStores) describe() string {
	if len(s.names) == 0 {
		return "the key store"
	}
	return strings.Join(s.names, ", ")
}

// forHandler returns the store a handler looks keys up in, and its name.
func (s *explainStores) forHandler(ctx context.Context, h *ScopedAuth) (keyring.Store, string, error) {
	file, redisURL := s.in.keysFile, s.in.redisURL
	if file == "" && redisURL == "" {
		switch {
		case h.KeysFile != "" && h.Redis != "":
			return nil, "", errors.New("keys_file and redis are two key stores: set only one")
		case h.KeysFile != "":
			file = caddy.NewReplacer().ReplaceKnown(h.KeysFile, "")
		case h.Redis != "":
			redisURL = caddy.NewReplacer().ReplaceKnown(h.Redis, "")
		default:
			return nil, "", errors.New("no key store: the handler sets neither keys_file nor redis (give --keys or --redis)")
		}
	}
	name := "file " + file
	if redisURL != "" {
		name = "redis " + keyring.RedactURL(redisURL)
	}
	if st, ok := s.open[name]; ok {
		return st, name, nil
	}
	var st keyring.Store
	if redisURL != "" {
		rs, err := keyring.OpenRedisStore(keyring.RedisOptions{URL: redisURL, LookupTimeout: 5 * time.Second})
		if err != nil {
			return nil, "", fmt.Errorf("redis: %w", err)
		}
		s.redis = append(s.redis, rs)
		st = rs
		if s.in.chain != nil {
			// The RedisStore loads its denylist in the background; explain
			// reads it once, now, and compiles it with the same code.
			d, err := readRedisDenylist(ctx, redisURL)
			if err != nil {
				return nil, "", err
			}
			st = explainRedisStore{RedisStore: rs, denied: d}
		}
	} else {
		_, set, err := keyring.LoadFile(file)
		if err != nil {
			return nil, "", err
		}
		st = set
	}
	s.open[name] = st
	s.names = append(s.names, name)
	return st, name, nil
}

// explainRedisStore is the fleet store as explain uses it: lookups by the
// module's RedisStore, and the denylist as read when explain started.
type explainRedisStore struct {
	*keyring.RedisStore
	denied *keyring.Denylist
}

// Denylist implements keyring.DenylistSource.
func (s explainRedisStore) Denylist() *keyring.Denylist { return s.denied }

func readRedisDenylist(ctx context.Context, redisURL string) (*keyring.Denylist, error) {
	ed, err := keyring.OpenRedisEditor(redisURL)
	if err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	defer ed.Close()
	entries, err := ed.DeniedCerts(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the certificate denylist: %w", err)
	}
	return keyring.NewDenylist(entries)
}
