package caddyauth

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Collectors are created once per process and registered with every
// config's registry, so counts survive reloads.
var (
	metricsOnce        sync.Once
	authRequestsTotal  *prometheus.CounterVec
	keysFileErrorTotal prometheus.Counter
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
		bindCounters()
	})
}

func registerMetrics(reg *prometheus.Registry) error {
	initMetrics()
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{authRequestsTotal, keysFileErrorTotal} {
		if err := reg.Register(c); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
			return err
		}
	}
	return nil
}
