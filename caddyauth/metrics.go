package caddyauth

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scopegate/scopegate/caddyauth/internal/keyring"
)

// Collectors are created once per process and registered with every
// config's registry, so counts survive reloads.
var (
	metricsOnce        sync.Once
	authRequestsTotal  *prometheus.CounterVec
	keysFileErrorTotal prometheus.Counter
	authCacheTotal     *prometheus.CounterVec
	// cacheCounters are authCacheTotal's series, resolved once, as the
	// Redis store counts them.
	cacheCounters keyring.CacheCounters
)

func initMetrics() {
	metricsOnce.Do(func() {
		authRequestsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scopegate_auth_requests_total",
			Help: "Requests judged by scoped_auth, by result (allowed, public, or the error code).",
		}, []string{"result"})
		keysFileErrorTotal = prometheus.NewCounter(prometheus.CounterOpts{
			Name: "scopegate_keys_file_errors_total",
			Help: "Failed attempts to load a changed keys file; the last good set stays in force.",
		})
		authCacheTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scopegate_auth_cache_total",
			Help: "Key lookups of the Redis store, by outcome: hit and negative_hit (answered by the cache with a key, or with \"no such key\"), miss (answered by Redis), error (not answered: 503).",
		}, []string{"outcome"})
		cacheCounters = keyring.CacheCounters{
			Hit:         authCacheTotal.WithLabelValues("hit"),
			Miss:        authCacheTotal.WithLabelValues("miss"),
			NegativeHit: authCacheTotal.WithLabelValues("negative_hit"),
			Error:       authCacheTotal.WithLabelValues("error"),
		}
		bindCounters()
	})
}

func registerMetrics(reg *prometheus.Registry) error {
	initMetrics()
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{authRequestsTotal, keysFileErrorTotal, authCacheTotal} {
		if err := reg.Register(c); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
			return err
		}
	}
	return nil
}
