package main

import (
	"fmt"
	"strings"
)

// variant is one measured setup: which site the load targets and which
// mitigations are on.
type variant struct {
	name string
	ours bool // the scopegate site (scoped_auth + redact); else the bare one

	// Client side.
	idem  bool // POSTs carry an Idempotency-Key: Go's transport may replay them
	retry bool // the client retries once an idempotent request that failed before any response byte
	h2    bool // every load kind over HTTP/2 (the new-connection kind too)

	// Server side.
	migrate bool // net.ipv4.tcp_migrate_req=1 (private network namespace only)
	sdelay  bool // global shutdown_delay 2s
	grace   bool // global grace_period 10s
	idle    bool // servers { timeouts { idle 1s } }
}

// mitigations lists the accepted "+name" suffixes and what they mean.
var mitigations = map[string]string{
	"idem":    "client: Idempotency-Key header on POSTs (Go's transport then replays them like GETs)",
	"retry":   "client: one retry of an idempotent request (GET, POST with +idem) that failed before any response byte, on a new connection",
	"h2":      "client: HTTP/2 for every load kind",
	"migrate": "kernel: net.ipv4.tcp_migrate_req=1",
	"sdelay":  "Caddy: global shutdown_delay 2s",
	"grace":   "Caddy: global grace_period 10s",
	"idle":    "Caddy: servers { timeouts { idle 1s } }",
}

func parseVariant(s string) (variant, error) {
	parts := strings.Split(s, "+")
	v := variant{name: s}
	switch parts[0] {
	case "bare":
	case "ours":
		v.ours = true
	default:
		return v, fmt.Errorf("variant %q: must start with bare or ours", s)
	}
	for _, m := range parts[1:] {
		switch m {
		case "idem":
			v.idem = true
		case "retry":
			v.retry = true
		case "h2":
			v.h2 = true
		case "migrate":
			v.migrate = true
		case "sdelay":
			v.sdelay = true
		case "grace":
			v.grace = true
		case "idle":
			v.idle = true
		default:
			return v, fmt.Errorf("variant %q: unknown mitigation %q", s, m)
		}
	}
	return v, nil
}

// mitigationKey is the variant's name without its site: the key that pairs
// "bare+X" with "ours+X" in the report.
func (v variant) mitigationKey() string {
	if i := strings.IndexByte(v.name, '+'); i >= 0 {
		return v.name[i+1:]
	}
	return "none"
}
