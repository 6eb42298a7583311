// Command caddy is Caddy with its standard modules and scopegate's
// scoped_auth and redact handlers.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// Caddy's standard modules.
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	// scopegate: every module of this repository.
	_ "github.com/scopegate/scopegate"
)

func main() { caddycmd.Main() }
