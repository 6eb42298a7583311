package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/scopegate/scopegate/bench/internal/childproc"
)

// report is what the run prints and writes to summary.json.
type report struct {
	Started      string            `json:"started"`
	LoadAvg      string            `json:"load_average"`
	PerVariant   float64           `json:"seconds_per_variant"`
	Rounds       int               `json:"rounds"`
	Workers      int               `json:"workers"`
	ReloadEvery  string            `json:"reload_every"`
	MigrateKnob  string            `json:"tcp_migrate_req_outside_variants"`
	Variants     []variantReport   `json:"variants"`
	Ratios       []ratio           `json:"ratios_ours_to_bare"`
	Mitigations  map[string]string `json:"mitigations"`
	FailureKinds []string          `json:"failure_kinds"`
	LoadKinds    []string          `json:"load_kinds"`
}

type variantReport struct {
	Name      string            `json:"name"`
	Seconds   float64           `json:"seconds"`
	Reloads   int               `json:"reloads"`
	ReloadMS  [2]float64        `json:"reload_ms_min_max"`
	Total     counts            `json:"total"`
	ByKind    map[string]counts `json:"by_load_kind"`
	Statuses  map[int]int64     `json:"non_2xx_statuses"`
	Examples  []string          `json:"examples"`
	PerMinute float64           `json:"failures_per_minute"`
}

// ratio compares ours with bare under the same mitigations.
type ratio struct {
	Mitigations string  `json:"mitigations"`
	Bare        int64   `json:"bare_failures"`
	Ours        int64   `json:"ours_failures"`
	BarePerReq  float64 `json:"bare_failures_per_10k_requests"`
	OursPerReq  float64 `json:"ours_failures_per_10k_requests"`
	BareReloads int     `json:"bare_reloads"`
	OursReloads int     `json:"ours_reloads"`
	Ratio       string  `json:"ratio_ours_bare_per_request"`
	RatioReload string  `json:"ratio_ours_bare_per_reload"`
}

func buildReport(cfg *config, results []*result) *report {
	rep := &report{
		Started:      time.Now().UTC().Format(time.RFC3339),
		LoadAvg:      childproc.LoadAvg(),
		PerVariant:   cfg.duration.Seconds(),
		Rounds:       cfg.rounds,
		Workers:      cfg.workers,
		ReloadEvery:  cfg.reloadEvery.String(),
		Mitigations:  mitigations,
		FailureKinds: failNames[:],
		LoadKinds:    kindNames[:],
	}
	if b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_migrate_req"); err == nil {
		rep.MigrateKnob = strings.TrimSpace(string(b))
	}
	byName := map[string]*variantReport{}
	for _, r := range results {
		vr := variantReport{Name: r.v.name, Seconds: r.seconds, Reloads: r.reloads, ByKind: map[string]counts{},
			Statuses: r.statuses, Examples: r.examples}
		for k := range r.kinds {
			vr.Total.add(&r.kinds[k])
			vr.ByKind[kindNames[k]] = r.kinds[k]
		}
		if len(r.reloadMS) > 0 {
			s := append([]float64(nil), r.reloadMS...)
			sort.Float64s(s)
			vr.ReloadMS = [2]float64{s[0], s[len(s)-1]}
		}
		if r.seconds > 0 {
			vr.PerMinute = float64(vr.Total.failures()) * 60 / r.seconds
		}
		rep.Variants = append(rep.Variants, vr)
		byName[r.v.name] = &rep.Variants[len(rep.Variants)-1]
	}
	seen := map[string]bool{}
	for _, r := range results {
		key := r.v.mitigationKey()
		if seen[key] {
			continue
		}
		seen[key] = true
		suffix := ""
		if key != "none" {
			suffix = "+" + key
		}
		b, o := byName["bare"+suffix], byName["ours"+suffix]
		if b == nil || o == nil {
			continue
		}
		ra := ratio{Mitigations: key, Bare: b.Total.failures(), Ours: o.Total.failures(), BareReloads: b.Reloads, OursReloads: o.Reloads,
			BarePerReq: per10k(b.Total.failures(), b.Total.Requests), OursPerReq: per10k(o.Total.failures(), o.Total.Requests)}
		switch {
		case ra.BarePerReq > 0:
			ra.Ratio = fmt.Sprintf("%.2f", ra.OursPerReq/ra.BarePerReq)
		case ra.OursPerReq == 0:
			ra.Ratio = "0/0"
		default:
			ra.Ratio = "inf"
		}
		ra.RatioReload = "0/0"
		if br, or := perReload(ra.Bare, b.Reloads), perReload(ra.Ours, o.Reloads); br > 0 {
			ra.RatioReload = fmt.Sprintf("%.2f", or/br)
		} else if or > 0 {
			ra.RatioReload = "inf"
		}
		rep.Ratios = append(rep.Ratios, ra)
	}
	return rep
}

func perReload(n int64, reloads int) float64 {
	if reloads == 0 {
		return 0
	}
	return float64(n) / float64(reloads)
}

func per10k(n, of int64) float64 {
	if of == 0 {
		return 0
	}
	return float64(n) * 10000 / float64(of)
}

func (rep *report) print(w io.Writer) {
	fmt.Fprintf(w, "\n== Reloads under load: %d workers, caddy reload --force every %s, %.0f s per variant in %d alternating slices; load average %s\n",
		rep.Workers, rep.ReloadEvery, rep.PerVariant, rep.Rounds, rep.LoadAvg)
	fmt.Fprintf(w, "failure kinds: 1 kept-alive POST no response | 2 kept-alive GET no response | 3 new conn reset at connect/TLS | 4 new conn no response after write\n\n")
	fmt.Fprintf(w, "%-22s %-18s %7s %7s %6s %5s %5s %5s %5s %5s %7s %7s\n",
		"variant", "load kind", "req", "2xx", "non2xx", "k1", "k2", "k3", "k4", "other", "replay", "retried")
	for _, v := range rep.Variants {
		for _, k := range rep.LoadKinds {
			c := v.ByKind[k]
			fmt.Fprintf(w, "%-22s %-18s %7d %7d %6d %5d %5d %5d %5d %5d %7d %7d\n",
				v.Name, k, c.Requests, c.OK, c.Non2xx, c.Fails[0], c.Fails[1], c.Fails[2], c.Fails[3], c.Fails[4], c.Replayed, c.Retried)
		}
		c := v.Total
		fmt.Fprintf(w, "%-22s %-18s %7d %7d %6d %5d %5d %5d %5d %5d %7d %7d   (%d reloads, %.0f-%.0f ms; %.1f failures/min; %d outside reload windows)\n\n",
			v.Name, "TOTAL", c.Requests, c.OK, c.Non2xx, c.Fails[0], c.Fails[1], c.Fails[2], c.Fails[3], c.Fails[4], c.Replayed, c.Retried,
			v.Reloads, v.ReloadMS[0], v.ReloadMS[1], v.PerMinute, c.OutOfReload)
	}
	if len(rep.Ratios) > 0 {
		fmt.Fprintf(w, "ours/bare, connection failures (per reload; per 10k requests):\n")
		for _, r := range rep.Ratios {
			fmt.Fprintf(w, "  %-20s bare %3d in %2d reloads (%.2f/reload, %5.1f/10k)  ours %3d in %2d reloads (%.2f/reload, %5.1f/10k)  ratio %s per reload, %s per request\n",
				r.Mitigations, r.Bare, r.BareReloads, perReload(r.Bare, r.BareReloads), r.BarePerReq,
				r.Ours, r.OursReloads, perReload(r.Ours, r.OursReloads), r.OursPerReq, r.RatioReload, r.Ratio)
		}
	}
	var ex []string
	for _, v := range rep.Variants {
		ex = append(ex, v.Examples...)
		for s, n := range v.Statuses {
			ex = append(ex, fmt.Sprintf("%s: %d answers with status %d", v.Name, n, s))
		}
	}
	if len(ex) > 0 {
		fmt.Fprintf(w, "\nexamples:\n")
		for i, e := range ex {
			if i == 30 {
				break
			}
			fmt.Fprintf(w, "  %s\n", e)
		}
	}
}
