package engine

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/reaperd/reaperd/reaper"
)

// Collector returns a Prometheus collector of the ledger's state, read
// when scraped: entries by provider and state (from the ledger's counts,
// whatever its size), and per provider the age of its oldest closing entry
// and the number of closes stuck on a permanent refusal (from the closing
// index, in proportion to the closing entries).
func (e *Engine) Collector() prometheus.Collector {
	e.init()
	return &ledgerCollector{e: e,
		entries: prometheus.NewDesc("reaperd_entries", "Entries in the ledger, by provider and state.",
			[]string{"provider", "state"}, nil),
		oldest: prometheus.NewDesc("reaperd_oldest_closing_seconds",
			"How long each provider's longest-closing entry has been closing (0 when none is): alert when closes do not complete.",
			[]string{"provider"}, nil),
		stuck: prometheus.NewDesc("reaperd_stuck_entries",
			"Closing entries whose provider refused the close for good (no more attempts; an operator must act).",
			[]string{"provider"}, nil),
		up: prometheus.NewDesc("reaperd_ledger_readable",
			"1 when the ledger could be read for this scrape, else 0 (the other ledger metrics are then missing).", nil, nil),
	}
}

type ledgerCollector struct {
	e                          *Engine
	entries, oldest, stuck, up *prometheus.Desc
}

func (c *ledgerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.entries
	ch <- c.oldest
	ch <- c.stuck
	ch <- c.up
}

func (c *ledgerCollector) Collect(ch chan<- prometheus.Metric) {
	e := c.e
	entries := map[string]map[reaper.State]int{}
	oldest := map[string]time.Time{}
	stuck := map[string]int{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := e.Store.View(ctx, func(tx reaper.Tx) error {
		if err := tx.Counts(func(p string, st reaper.State, n int) error {
			if entries[p] == nil {
				entries[p] = map[reaper.State]int{}
			}
			entries[p][st] = n
			return nil
		}); err != nil {
			return err
		}
		return tx.Closing("", func(ent *reaper.Entry) error {
			if o, ok := oldest[ent.Provider]; !ok || ent.ClosingSince.Before(o) {
				oldest[ent.Provider] = ent.ClosingSince
			}
			if ent.Stuck {
				stuck[ent.Provider]++
			}
			return nil
		})
	})
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	// Every known provider gets a series, so that alerts see zeros.
	now := e.clock.Now()
	for _, p := range e.providerNames() {
		for _, st := range []reaper.State{reaper.StateActive, reaper.StateClosing, reaper.StateClosed, reaper.StateReleased} {
			ch <- prometheus.MustNewConstMetric(c.entries, prometheus.GaugeValue, float64(entries[p][st]), p, string(st))
		}
		delete(entries, p)
		age := 0.0
		if o, ok := oldest[p]; ok && !o.IsZero() {
			age = max(0, now.Sub(o).Seconds())
		}
		ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, age, p)
		ch <- prometheus.MustNewConstMetric(c.stuck, prometheus.GaugeValue, float64(stuck[p]), p)
	}
	// Entries of providers no longer configured.
	for p, byState := range entries {
		for st, n := range byState {
			ch <- prometheus.MustNewConstMetric(c.entries, prometheus.GaugeValue, float64(n), p, string(st))
		}
	}
}
