// Package testport shifts the fixed ports of the integration tests.
//
// The integration tests run a real Caddy on fixed loopback ports (its admin
// endpoint and sites are named in a Caddyfile). Two `go test` processes of the
// same package on one machine would fight over them; setting
// SCOPEGATE_TEST_PORT_OFFSET=N in one of them moves all of its ports by N.
package testport

import (
	"os"
	"strconv"
)

// Offset is added to every fixed port of the integration tests.
var Offset = offset()

func offset() int {
	n, err := strconv.Atoi(os.Getenv("SCOPEGATE_TEST_PORT_OFFSET"))
	if err != nil || n < 0 || n > 20000 {
		return 0
	}
	return n
}

// Port returns base moved by Offset.
func Port(base int) int { return base + Offset }
