package caddyauth

import (
	"net/http"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// The handler's cost per request with the Redis store, to compare with
// BenchmarkAllowed (the same request against the in-memory keys-file set):
//
//	go test -run '^$' -bench 'Allowed(Redis.*)?$' -benchmem ./caddyauth/

// BenchmarkAllowedRedisWarm: the key is in the cache.
func BenchmarkAllowedRedisWarm(b *testing.B) {
	env := newRedisUnitEnv(b, time.Hour)
	benchmarkServe(b, env.unitEnv, "GET", "/v1/gifts/g1", nil, "Authorization", "Bearer "+env.keys["R"], "X-Account-ID", "acme-us")
}

// BenchmarkAllowedRedisCold: every request misses the cache (it is
// cleared first) and makes one Redis round trip.
func BenchmarkAllowedRedisCold(b *testing.B) {
	env := newRedisUnitEnv(b, time.Hour)
	cold := func(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
		env.redis.ClearCache()
		return env.h.ServeHTTP(w, r, next)
	}
	benchmarkLoop(b, env.unitEnv, cold, "GET", "/v1/gifts/g1", nil, "Authorization", "Bearer "+env.keys["R"], "X-Account-ID", "acme-us")
}
