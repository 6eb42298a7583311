// Package scopegate plugs every scopegate module into a Caddy build. xcaddy
// imports a plugin by its module path, so
//
//	xcaddy build v2.11.9 --with github.com/scopegate/scopegate
//
// gets scoped_auth and redact through this package.
package scopegate

import (
	// http.handlers.scoped_auth and the `caddy scoped-key` command.
	_ "github.com/scopegate/scopegate/caddyauth"

	// http.handlers.redact.
	_ "github.com/scopegate/scopegate/caddyredact"
)
