package caddyredact

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Collectors are created once per process and registered with every
// config's registry, so counts survive reloads.
var (
	metricsOnce       sync.Once
	redactFieldsTotal prometheus.Counter
	redactBytesTotal  prometheus.Counter
)

func registerMetrics(reg *prometheus.Registry) error {
	metricsOnce.Do(func() {
		redactFieldsTotal = prometheus.NewCounter(prometheus.CounterOpts{
			Name: "scopegate_redact_fields_total",
			Help: "Values masked (or removed) by redact.",
		})
		redactBytesTotal = prometheus.NewCounter(prometheus.CounterOpts{
			Name: "scopegate_redact_bytes_total",
			Help: "Response body bytes read by redact's masker.",
		})
	})
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{redactFieldsTotal, redactBytesTotal} {
		if err := reg.Register(c); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
			return err
		}
	}
	return nil
}
