package main

import (
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/reaperd/reaperd/engine"
	"github.com/reaperd/reaperd/reaper"
)

// PriceConfig is one [prices.PROVIDER] table. It replaces the prices
// reaperd ships for the provider, whole.
type PriceConfig struct {
	// Source says where the figures come from, for the report.
	Source  string     `toml:"source"`
	Running RateConfig `toml:"running"`
	Stopped RateConfig `toml:"stopped"`
}

// RateConfig is a price per hour in US dollars for each resource; an
// absent key is free.
type RateConfig struct {
	VCPU      float64            `toml:"vcpu_hour"`
	MemoryGiB float64            `toml:"memory_gib_hour"`
	DiskGiB   float64            `toml:"disk_gib_hour"`
	GPU       map[string]float64 `toml:"gpu_hour"`
}

func (r RateConfig) rate() reaper.Rate {
	return reaper.Rate{VCPU: r.VCPU, MemoryGiB: r.MemoryGiB, DiskGiB: r.DiskGiB, GPU: maps.Clone(r.GPU)}
}

// PriceOverrideConfig is one [[price_override]] table: prices for the
// sandboxes whose labels match, in place of their provider's.
type PriceOverrideConfig struct {
	Provider  string             `toml:"provider"`
	Labels    map[string]string  `toml:"labels"`
	State     string             `toml:"state"`
	VCPU      *float64           `toml:"vcpu_hour"`
	MemoryGiB *float64           `toml:"memory_gib_hour"`
	DiskGiB   *float64           `toml:"disk_gib_hour"`
	GPU       map[string]float64 `toml:"gpu_hour"`
}

// ReportConfig is the [report] table.
type ReportConfig struct {
	// SavedHorizon caps the saved figure of each reaped sandbox. Empty
	// means 7 days.
	SavedHorizon Duration `toml:"saved_horizon"`
	// Cleanup replaces, per provider, what the provider does by itself
	// with a sandbox nobody deletes.
	Cleanup map[string]CleanupConfig `toml:"cleanup"`
}

// CleanupConfig is one [report.cleanup.PROVIDER] table; see
// reaper.Cleanup.
type CleanupConfig struct {
	Running     Duration `toml:"running"`
	FromStart   bool     `toml:"from_start"`
	ThenStopped bool     `toml:"then_stopped"`
	Stopped     bool     `toml:"stopped"`
}

// pricing returns the prices and saving rules reports use: the ones
// reaperd ships, replaced by the config's.
func (c *Config) pricing() (*reaper.Pricing, error) {
	p := &reaper.Pricing{Providers: map[string]reaper.PriceList{}, Cleanup: map[string]reaper.Cleanup{},
		Horizon: reaper.Duration(c.Report.SavedHorizon)}
	for _, k := range providerKinds {
		if k.prices != nil {
			p.Providers[k.name] = *k.prices
		}
		p.Cleanup[k.name] = k.cleanup
	}
	for _, name := range slices.Sorted(maps.Keys(c.Prices)) {
		if !slices.Contains(providerNames, name) {
			return nil, fmt.Errorf("[prices.%s]: unknown provider: use one of %s", name, strings.Join(providerNames, ", "))
		}
		pc := c.Prices[name]
		p.Providers[name] = reaper.PriceList{Running: pc.Running.rate(), Stopped: pc.Stopped.rate(),
			Source: cmp(pc.Source, "the configuration's [prices."+name+"]")}
	}
	for i, o := range c.PriceOverrides {
		if o.Provider != "" && !slices.Contains(providerNames, o.Provider) {
			return nil, fmt.Errorf("[[price_override]] #%d: provider %q: use one of %s", i+1, o.Provider, strings.Join(providerNames, ", "))
		}
		if err := reaper.ValidateLabels(o.Labels); err != nil {
			return nil, fmt.Errorf("[[price_override]] #%d: %w", i+1, err)
		}
		p.Overrides = append(p.Overrides, reaper.PriceOverride{Provider: o.Provider, Labels: o.Labels, State: reaper.RunState(o.State),
			VCPU: o.VCPU, MemoryGiB: o.MemoryGiB, DiskGiB: o.DiskGiB, GPU: o.GPU})
	}
	for _, name := range slices.Sorted(maps.Keys(c.Report.Cleanup)) {
		if !slices.Contains(providerNames, name) {
			return nil, fmt.Errorf("[report.cleanup.%s]: unknown provider: use one of %s", name, strings.Join(providerNames, ", "))
		}
		cc := c.Report.Cleanup[name]
		if cc.Running < 0 {
			return nil, fmt.Errorf("[report.cleanup.%s] running %s: use a duration of 0 (until the horizon) or more", name, time.Duration(cc.Running))
		}
		p.Cleanup[name] = reaper.Cleanup{Running: reaper.Duration(cc.Running), FromStart: cc.FromStart, ThenStopped: cc.ThenStopped,
			Stopped: cc.Stopped, Rule: cleanupRule(cc)}
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// cleanupRule states a configured cleanup rule in words.
func cleanupRule(c CleanupConfig) string {
	var s string
	switch {
	case c.Running == 0:
		s = "a running sandbox runs until the horizon"
	case c.FromStart:
		s = fmt.Sprintf("a running sandbox ends %s after its start", reaper.FormatAge(time.Duration(c.Running)))
	default:
		s = fmt.Sprintf("a running sandbox runs %s more", reaper.FormatAge(time.Duration(c.Running)))
	}
	if c.Running > 0 && c.ThenStopped {
		s += ", then bills as stopped"
	}
	if c.Stopped {
		return "configured: " + s + "; a stopped one bills on as stopped"
	}
	return "configured: " + s + "; a stopped one costs nothing more"
}

func cmp(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// applyPricing gives the engine the config's prices.
func applyPricing(eng *engine.Engine, c *Config, logger *slog.Logger) error {
	p, err := c.pricing()
	if err != nil {
		return err
	}
	eng.SetPricing(p)
	var priced []string
	for _, name := range providerNames {
		if _, ok := p.Providers[name]; ok {
			priced = append(priced, name)
		}
	}
	logger.Debug("report prices", "priced", strings.Join(priced, ","))
	return nil
}
