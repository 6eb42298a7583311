package caddyauth

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/rewrite"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// This file finds the scoped_auth handlers a request reaches in a Caddy
// config, for `caddy scoped-key explain`. Routing is decided by Caddy's own
// code wherever it runs outside a server: the config is adapted by Caddy's
// adapter, route matchers are Caddy's matcher modules (provisioned and
// evaluated on the request), rewrites are Caddy's rewrite handler, and the
// request is prepared by caddyhttp.PrepareRequest. Only the walk itself
// (route order, groups, terminal routes, subroutes) is done here.

// explainConfig is an adapted config, ready to be walked.
type explainConfig struct {
	servers []explainServer
	// errorHandlers counts scoped_auth handlers inside handle_errors,
	// which explain does not evaluate (they run only after an error).
	errorHandlers int
	// total counts every scoped_auth handler found.
	total int
}

type explainServer struct {
	name     string
	listen   []string
	routes   []json.RawMessage
	policies []explainTLSPolicy
}

// explainTLSPolicy is what explain reads of a TLS connection policy.
type explainTLSPolicy struct {
	Match struct {
		SNI []string `json:"sni,omitempty"`
	} `json:"match"`
	ClientAuth *struct {
		Mode       string          `json:"mode,omitempty"`
		CA         json.RawMessage `json:"ca,omitempty"`
		TrustedCAs []string        `json:"trusted_ca_certs,omitempty"`
		TrustedPEM []string        `json:"trusted_ca_certs_pem_files,omitempty"`
		Leaves     []string        `json:"trusted_leaf_certs,omitempty"`
	} `json:"client_authentication,omitempty"`
}

// loadExplainConfig reads and adapts the config file the way `caddy adapt`
// does: adapter "caddyfile" by default, "json" for a JSON config as is.
func loadExplainConfig(path, adapter string) (*explainConfig, error) {
	input, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--config: %v", err)
	}
	cfgJSON := input
	if adapter != "json" {
		a := caddyconfig.GetAdapter(adapter)
		if a == nil {
			return nil, fmt.Errorf("--adapter %q: no such config adapter (caddyfile, json, or one plugged into this caddy)", adapter)
		}
		out, _, err := a.Adapt(input, map[string]any{"filename": path})
		if err != nil {
			return nil, fmt.Errorf("--config %s: %v", path, err)
		}
		cfgJSON = out
	}
	var cfg struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Listen   []string                            `json:"listen"`
					Routes   []json.RawMessage                   `json:"routes"`
					Policies []explainTLSPolicy                  `json:"tls_connection_policies"`
					Errors   *struct{ Routes []json.RawMessage } `json:"errors"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(cfgJSON, &cfg); err != nil {
		return nil, fmt.Errorf("--config %s: %v", path, err)
	}
	ec := &explainConfig{}
	names := make([]string, 0, len(cfg.Apps.HTTP.Servers))
	for name := range cfg.Apps.HTTP.Servers {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		s := cfg.Apps.HTTP.Servers[name]
		ec.servers = append(ec.servers, explainServer{name: name, listen: s.Listen, routes: s.Routes, policies: s.Policies})
		ec.total += countScopedAuth(s.Routes)
		if s.Errors != nil {
			n := countScopedAuth(s.Errors.Routes)
			ec.errorHandlers += n
			ec.total += n
		}
	}
	if ec.total == 0 {
		return nil, fmt.Errorf("--config %s: no scoped_auth handler in this config", path)
	}
	return ec, nil
}

// countScopedAuth counts scoped_auth handlers at any depth of a JSON value.
func countScopedAuth(routes []json.RawMessage) int {
	n := 0
	var walk func(v any)
	walk = func(v any) {
		switch t := v.(type) {
		case map[string]any:
			if t["handler"] == "scoped_auth" {
				n++
			}
			for _, x := range t {
				walk(x)
			}
		case []any:
			for _, x := range t {
				walk(x)
			}
		}
	}
	for _, r := range routes {
		var v any
		if json.Unmarshal(r, &v) == nil {
			walk(v)
		}
	}
	return n
}

// explainHit is one scoped_auth handler the request reaches.
type explainHit struct {
	raw   json.RawMessage // the handler's JSON
	where string          // human-readable: the matchers on the way
	path  string          // JSON path in the adapted config
	r     *http.Request   // the request as the handler sees it (rewrites applied)
}

// explainSite is one server (and, without --site, one top-level route of
// it: a site block) with the handlers the request reaches there.
type explainSite struct {
	server  *explainServer
	name    string // e.g. "localhost on :9443"
	hits    []explainHit
	missed  int // scoped_auth handlers in this site the request does not reach
	tlsMode string
	notes   []string
}

// explainWalker walks routes with Caddy's matcher and rewrite modules.
type explainWalker struct {
	ctx    caddy.Context
	cancel context.CancelFunc
}

func newExplainWalker() *explainWalker {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	return &explainWalker{ctx: ctx, cancel: cancel}
}

func (w *explainWalker) close() { w.cancel() }

// sites returns, for each server (filtered by --site's port), the sites
// the request is routed through and the scoped_auth handlers it reaches.
// With a host (--site), the server's routes run as Caddy runs them; without
// one, each top-level route is a site of its own, asked with its first host.
func (w *explainWalker) sites(ec *explainConfig, in *explainInput) ([]*explainSite, error) {
	var out []*explainSite
	for i := range ec.servers {
		srv := &ec.servers[i]
		if in.sitePort != "" && !listensOn(srv.listen, in.sitePort) {
			continue
		}
		if in.siteHost != "" {
			site := &explainSite{server: srv, name: siteName(in.siteHost, srv)}
			r, err := w.request(in, srv, in.siteHost, site)
			if err != nil {
				return nil, err
			}
			if _, err := w.walk(srv.routes, 0, r, "apps.http.servers."+srv.name+".routes", nil, site); err != nil {
				return nil, err
			}
			if len(site.hits) > 0 {
				out = append(out, site)
			}
			continue
		}
		for j, raw := range srv.routes {
			hosts := topLevelHosts(raw)
			host := "localhost"
			if len(hosts) > 0 {
				host = strings.ReplaceAll(hosts[0], "*", "wildcard")
			}
			label := "any host"
			if len(hosts) > 0 {
				label = strings.Join(hosts, ", ")
			}
			site := &explainSite{server: srv, name: label + " on " + strings.Join(srv.listen, " ")}
			r, err := w.request(in, srv, host, site)
			if err != nil {
				return nil, err
			}
			if _, err := w.walk(srv.routes[j:j+1], j, r, "apps.http.servers."+srv.name+".routes", nil, site); err != nil {
				return nil, err
			}
			if len(site.hits) > 0 {
				out = append(out, site)
			}
		}
	}
	return out, nil
}

func siteName(host string, srv *explainServer) string {
	return host + " on " + strings.Join(srv.listen, " ")
}

// listensOn reports whether one of the listen addresses has this port.
func listensOn(listen []string, port string) bool {
	for _, l := range listen {
		if _, p, err := net.SplitHostPort(strings.TrimPrefix(strings.TrimPrefix(l, "tcp/"), "udp/")); err == nil && p == port {
			return true
		}
	}
	return false
}

func topLevelHosts(raw json.RawMessage) []string {
	var route struct {
		Match []struct {
			Host []string `json:"host"`
		} `json:"match"`
	}
	_ = json.Unmarshal(raw, &route)
	var hosts []string
	for _, m := range route.Match {
		hosts = append(hosts, m.Host...)
	}
	return hosts
}

// request builds the request as Caddy's server would hand it to the first
// route: PrepareRequest sets the replacer, the original URI (judged by the
// 400 catalogue too) and the request vars.
func (w *explainWalker) request(in *explainInput, srv *explainServer, host string, site *explainSite) (*http.Request, error) {
	r, err := http.NewRequest(in.method, "http://placeholder", nil)
	if err != nil {
		return nil, fmt.Errorf("--method %q: %v", skShort(in.method), err)
	}
	r.Method = in.method // NewRequest accepts lower case; keep it as given for the 400 check
	r.URL = in.url()
	r.RequestURI = in.target
	r.Host = host
	if in.sitePort != "" {
		r.Host = net.JoinHostPort(host, in.sitePort)
	}
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.1", 1, 1
	r.RemoteAddr = "192.0.2.1:50000" // TEST-NET-1: explain has no client address
	r.Header = in.headers.Clone()
	if len(srv.policies) > 0 || in.chain != nil {
		r.TLS = &tls.ConnectionState{HandshakeComplete: true, ServerName: host, Version: tls.VersionTLS13}
		site.tlsMode = clientAuthMode(srv.policies, host)
		if in.chain != nil {
			r.TLS.PeerCertificates = in.chain
			switch site.tlsMode {
			case "verify_if_given", "require_and_verify":
				r.TLS.VerifiedChains = [][]*x509.Certificate{in.chain}
			case "":
				site.notes = append(site.notes, "the site does not ask for client certificates (no client_auth for "+host+"): Caddy never sees the --cert certificate, so the explanation goes on without it")
			default:
				site.notes = append(site.notes, "client_auth mode "+site.tlsMode+" does not verify certificates: scoped_auth only counts verified ones, so the explanation goes on without --cert")
			}
		} else if site.tlsMode == "require_and_verify" {
			site.notes = append(site.notes, "client_auth mode require_and_verify: without a client certificate the TLS handshake fails before any handler runs")
		}
	}
	repl := caddy.NewReplacer()
	return caddyhttp.PrepareRequest(r, repl, httptest.NewRecorder(), nil), nil
}

// clientAuthMode is the client_auth mode of the TLS connection policy
// Caddy would pick for this server name ("" when none asks for
// certificates). Caddy's default mode is require_and_verify when trusted
// CAs are configured.
func clientAuthMode(policies []explainTLSPolicy, sni string) string {
	for _, p := range policies {
		if len(p.Match.SNI) > 0 && !slices.ContainsFunc(p.Match.SNI, func(s string) bool { return sniMatches(s, sni) }) {
			continue
		}
		ca := p.ClientAuth
		if ca == nil {
			return ""
		}
		if ca.Mode != "" {
			return ca.Mode
		}
		if len(ca.CA) > 0 || len(ca.TrustedCAs) > 0 || len(ca.TrustedPEM) > 0 || len(ca.Leaves) > 0 {
			return "require_and_verify"
		}
		return ""
	}
	return ""
}

func sniMatches(pattern, name string) bool {
	if strings.EqualFold(pattern, name) {
		return true
	}
	if strings.HasPrefix(pattern, "*.") {
		if i := strings.IndexByte(name, '.'); i > 0 {
			return strings.EqualFold(pattern[1:], name[i:])
		}
	}
	return false
}

// walk runs a route list on the request the way caddyhttp.RouteList does:
// in order, a route whose matchers fail is skipped, only the first
// matching route of a group runs, and a terminal route ends the list.
// Handlers: subroute is walked into, rewrite is applied (Caddy's own
// handler code), scoped_auth is recorded. Routes are numbered from first
// in paths. It reports whether a terminal route ended the list.
func (w *explainWalker) walk(routes []json.RawMessage, first int, r *http.Request, path string, where []string, site *explainSite) (bool, error) {
	groups := map[string]bool{}
	for i, raw := range routes {
		rpath := fmt.Sprintf("%s[%d]", path, first+i)
		var route caddyhttp.Route
		if err := json.Unmarshal(raw, &route); err != nil {
			return false, fmt.Errorf("%s: %v", rpath, err)
		}
		n := countScopedAuth([]json.RawMessage{raw})
		if route.Group != "" && groups[route.Group] {
			site.missed += n
			continue
		}
		if err := route.ProvisionMatchers(w.ctx); err != nil {
			return false, fmt.Errorf("%s: %v", rpath, err)
		}
		ok, err := route.MatcherSets.AnyMatchWithError(r)
		if err != nil {
			site.notes = append(site.notes, fmt.Sprintf("%s: a matcher failed (%v); treated as not matching, as Caddy does", rpath, err))
		}
		if !ok {
			site.missed += n
			continue
		}
		if route.Group != "" {
			groups[route.Group] = true
		}
		here := append(slices.Clip(where), describeMatchers(raw)...)
		for j, h := range route.HandlersRaw {
			hpath := fmt.Sprintf("%s.handle[%d]", rpath, j)
			var head struct {
				Handler string            `json:"handler"`
				Routes  []json.RawMessage `json:"routes"`
			}
			if err := json.Unmarshal(h, &head); err != nil {
				return false, fmt.Errorf("%s: %v", hpath, err)
			}
			switch head.Handler {
			case "scoped_auth":
				site.hits = append(site.hits, explainHit{raw: h, where: strings.Join(here, " › "), path: hpath, r: r.Clone(r.Context())})
			case "subroute":
				if _, err := w.walk(head.Routes, 0, r, hpath+".routes", here, site); err != nil {
					return false, err
				}
			case "rewrite":
				var m map[string]json.RawMessage
				if err := json.Unmarshal(h, &m); err != nil {
					return false, fmt.Errorf("%s: %v", hpath, err)
				}
				delete(m, "handler")
				cfg, err := json.Marshal(m)
				if err != nil {
					return false, err
				}
				mod, err := w.ctx.LoadModuleByID("http.handlers.rewrite", cfg)
				if err != nil {
					return false, fmt.Errorf("%s: %v", hpath, err)
				}
				repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
				mod.(*rewrite.Rewrite).Rewrite(r, repl)
			}
		}
		if route.Terminal {
			return true, nil
		}
	}
	return false, nil
}

// describeMatchers renders a route's matchers for the location line, e.g.
// "host localhost", "path /seg/*".
func describeMatchers(raw json.RawMessage) []string {
	var route struct {
		Match []map[string]json.RawMessage `json:"match"`
	}
	_ = json.Unmarshal(raw, &route)
	var sets []string
	for _, m := range route.Match {
		var parts []string
		for _, name := range slices.Sorted(maps.Keys(m)) {
			var list []string
			if json.Unmarshal(m[name], &list) == nil {
				parts = append(parts, name+" "+strings.Join(list, " "))
				continue
			}
			parts = append(parts, name+" "+string(bytes.TrimSpace(m[name])))
		}
		sets = append(sets, strings.Join(parts, ", "))
	}
	if len(sets) == 0 {
		return nil
	}
	return []string{strings.Join(sets, " or ")}
}

// decodeExplainHandler decodes a scoped_auth handler's JSON strictly, as
// Caddy does, and prepares its request checks and rules with the module's
// own provisioning code. The rule warnings (shadowed rules, prefixes) are
// returned for the output.
func decodeExplainHandler(raw json.RawMessage) (*ScopedAuth, []string, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, nil, err
	}
	delete(m, "handler")
	clean, err := json.Marshal(m)
	if err != nil {
		return nil, nil, err
	}
	h := new(ScopedAuth)
	if err := caddy.StrictUnmarshalJSON(clean, h); err != nil {
		return nil, nil, err
	}
	core, logs := observer.New(zapcore.WarnLevel) // shadowed rules; not the prefix hints
	h.logger = zap.New(core)
	if err := h.provisionRequest(); err != nil {
		return nil, nil, err
	}
	if err := h.provisionRules(); err != nil {
		return nil, nil, err
	}
	var warnings []string
	for _, e := range logs.All() {
		msg := e.Message
		ctx := e.ContextMap()
		if rule, ok := ctx["rule"]; ok {
			msg = fmt.Sprintf("rule %v (%v): %s", rule, ctx["path"], msg)
			if by, ok := ctx["shadowed_by"]; ok {
				msg += fmt.Sprintf(" (rule %v, %v)", by, ctx["shadowed_by_path"])
			}
			if ex, ok := ctx["example"]; ok {
				msg += fmt.Sprintf(", e.g. %v", ex)
			}
		}
		warnings = append(warnings, msg)
	}
	return h, warnings, nil
}
