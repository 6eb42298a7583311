// Command bare is Caddy with its standard modules only: the baseline the
// benchmark compares scopegate's build (cmd/caddy) against.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

func main() { caddycmd.Main() }
