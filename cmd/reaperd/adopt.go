package main

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/reaperd/reaperd/engine"
	"github.com/reaperd/reaperd/reaper"
)

// AdoptConfig is one [[adopt]] table: a rule, or a preset with overrides.
type AdoptConfig struct {
	// Preset names a built-in rule set (openhands, swe-rex, deepagents).
	// Action, min_age, min_idle and states override each of its rules;
	// no other selector may be given with it.
	Preset       string            `toml:"preset"`
	Provider     string            `toml:"provider"`
	Labels       map[string]string `toml:"labels"`
	Name         string            `toml:"name"`
	App          string            `toml:"app"`
	Template     string            `toml:"template"`
	States       []string          `toml:"states"`
	MinAge       Duration          `toml:"min_age"`
	MinIdle      Duration          `toml:"min_idle"`
	Action       string            `toml:"action"`
	SessionLabel string            `toml:"session_label"`
}

// adoptRules turns the [[adopt]] tables into validated rules, presets
// expanded. An error names the table ("[[adopt]] #2 (preset openhands)").
func (c *Config) adoptRules() ([]reaper.AdoptRule, error) {
	var out []reaper.AdoptRule
	names := map[string]bool{}
	for i, a := range c.Adopt {
		where := fmt.Sprintf("[[adopt]] #%d", i+1)
		var rules []reaper.AdoptRule
		if a.Preset != "" {
			where += " (preset " + a.Preset + ")"
			p, ok := reaper.LookupPreset(a.Preset)
			if !ok {
				var known []string
				for _, p := range reaper.Presets() {
					known = append(known, p.Name)
				}
				return nil, fmt.Errorf("%s: unknown preset: use one of %s", where, strings.Join(known, ", "))
			}
			if a.Provider != "" || len(a.Labels) > 0 || a.Name != "" || a.App != "" || a.Template != "" || a.SessionLabel != "" {
				return nil, fmt.Errorf("%s: a preset takes only action, min_age, min_idle and states; write a rule of your own to select otherwise", where)
			}
			for _, r := range p.Rules {
				if len(a.States) > 0 {
					r.States = a.States
				}
				rules = append(rules, r)
			}
		} else {
			if !slices.Contains(providerNames, a.Provider) {
				return nil, fmt.Errorf("%s: provider %q: use one of %s (or give a preset)", where, a.Provider, strings.Join(providerNames, ", "))
			}
			rules = []reaper.AdoptRule{{Name: fmt.Sprintf("adopt-%d", i+1), Provider: a.Provider, Labels: a.Labels,
				NameGlob: a.Name, App: a.App, Template: a.Template, States: a.States, SessionLabel: a.SessionLabel}}
		}
		for _, r := range rules {
			r.Action = reaper.AdoptAction(a.Action)
			r.MinAge, r.MinIdle = time.Duration(a.MinAge), time.Duration(a.MinIdle)
			if err := r.Validate(); err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			if names[r.Name] {
				return nil, fmt.Errorf("%s: rule %s is given twice", where, r.Name)
			}
			names[r.Name] = true
			out = append(out, r)
		}
	}
	return out, nil
}

// applyAdoption installs the adoption rules and says what they do.
func applyAdoption(eng *engine.Engine, c *Config, logger *slog.Logger) error {
	rules, err := c.adoptRules()
	if err != nil {
		return err
	}
	eng.SetAdoption(engine.Adoption{Rules: rules, Grace: time.Duration(c.AdoptGrace)})
	for _, r := range rules {
		logger.Info("adoption rule", "rule", r.Name, "provider", r.Provider, "action", string(r.Action), "min_age", r.MinAge)
	}
	if len(rules) > 0 && c.Discover != nil && !*c.Discover {
		logger.Warn("adoption rules are set but discover = false: sweeps do not list the providers, so the rules never run")
	}
	return nil
}
