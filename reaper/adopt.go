package reaper

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"
)

// Labels reaperd gives a meaning to on a sandbox itself, at the provider.
const (
	// LabelKeep, set to "true" on a sandbox (Daytona label, E2B metadata,
	// Modal tag, Runloop metadata), means no adoption rule ever adopts it.
	LabelKeep = "reaperd.keep"
	// LabelManaged, set to "true" at create time, says that an agent
	// registers the sandbox with a reaperd. Such a sandbox is never
	// adopted: untracked here, it is tracked by another daemon, or its
	// registration is on its way.
	LabelManaged = "reaperd.managed"
	// LabelRule is the label an adopted entry carries: the rule's name.
	LabelRule = "reaperd.rule"
)

// AdoptAction is what an adoption rule does with the sandboxes it matches.
type AdoptAction string

const (
	// AdoptReport lists and counts matching sandboxes, and does nothing
	// else. It is the default.
	AdoptReport AdoptAction = "report"
	// AdoptReap adopts each matching sandbox as an entry that is due at
	// once, which the engine then closes like any other.
	AdoptReap AdoptAction = "reap"
)

// DefaultAdoptGrace is how young an untracked sandbox may be and still be
// left alone by every rule, whatever its min_age: its registration may be
// on its way.
const DefaultAdoptGrace = 10 * time.Minute

// DefaultMinAge is a rule's min_age when it gives none.
const DefaultMinAge = time.Hour

// AdoptRule selects untracked sandboxes by what their provider reports.
// Every selector that is set must match.
type AdoptRule struct {
	// Name identifies the rule in reports, logs and the adopted entry's
	// LabelRule label: "openhands/daytona" for a preset's rule, else
	// "adopt-N" (N the rule's position in the config, from 1).
	Name string `json:"name"`
	// Provider is the provider whose sandboxes the rule considers.
	Provider string `json:"provider"`
	// Labels maps label keys to patterns: "*" matches any value (the key
	// must be present), "abc*" a prefix, anything else the exact value.
	Labels map[string]string `json:"labels,omitempty"`
	// NameGlob matches the sandbox's name (path.Match syntax). Empty
	// matches any name, including none.
	NameGlob string `json:"name_glob,omitempty"`
	// App is the Modal app the sandbox belongs to; empty matches any.
	App string `json:"app,omitempty"`
	// Template is the template, snapshot or blueprint; empty matches any.
	Template string `json:"template,omitempty"`
	// States are the provider's own state names; empty matches any live
	// state.
	States []string `json:"states,omitempty"`
	// MinAge is how old the sandbox must be. Zero means DefaultMinAge.
	MinAge time.Duration `json:"min_age"`
	// MinIdle is how long since the provider last saw activity in the
	// sandbox (Daytona reports it). Zero means no condition; a sandbox
	// whose provider reports no activity time never matches a rule that
	// sets it.
	MinIdle time.Duration `json:"min_idle,omitempty"`
	// Action is what the rule does; empty means AdoptReport.
	Action AdoptAction `json:"action"`
	// SessionLabel names the label whose value is recorded as the adopted
	// entry's session. Empty records none.
	SessionLabel string `json:"session_label,omitempty"`
}

// Validate checks a rule and fills in its defaults.
func (r *AdoptRule) Validate() error {
	if r.Provider == "" {
		return errors.New("provider is required (or a preset)")
	}
	switch r.Action {
	case "":
		r.Action = AdoptReport
	case AdoptReport, AdoptReap:
	default:
		return fmt.Errorf("action %q: use %q or %q", r.Action, AdoptReport, AdoptReap)
	}
	if r.MinAge < 0 || r.MinIdle < 0 {
		return errors.New("min_age and min_idle must not be negative")
	}
	if r.MinAge == 0 {
		r.MinAge = DefaultMinAge
	}
	if r.NameGlob != "" {
		if _, err := path.Match(r.NameGlob, ""); err != nil {
			return fmt.Errorf("name %q: %w", r.NameGlob, err)
		}
	}
	for k := range r.Labels {
		if strings.TrimSpace(k) == "" {
			return errors.New("labels holds an empty key")
		}
	}
	if slices.Contains(r.States, "") {
		return errors.New("states holds an empty name")
	}
	if r.Action == AdoptReap && !r.Selective() {
		return fmt.Errorf("action reap would close every untracked %s sandbox older than %s: add labels, name, app, template, states or min_idle", r.Provider, r.MinAge)
	}
	return nil
}

// Selective reports whether the rule selects on anything besides the
// provider and age. Validate refuses a reap rule that does not: it would
// reap every untracked sandbox of the provider, other teams' included.
func (r *AdoptRule) Selective() bool {
	return len(r.Labels) > 0 || r.NameGlob != "" || r.App != "" || r.Template != "" || len(r.States) > 0 || r.MinIdle > 0
}

// Match reports whether the rule selects sb, a sandbox of provider that is
// age old, at now.
func (r *AdoptRule) Match(provider string, sb Sandbox, age time.Duration, now time.Time) bool {
	if provider != r.Provider || age < r.MinAge {
		return false
	}
	for k, pat := range r.Labels {
		v, ok := sb.Labels[k]
		if !ok || !matchValue(pat, v) {
			return false
		}
	}
	if r.NameGlob != "" {
		if ok, _ := path.Match(r.NameGlob, sb.Name); !ok {
			return false
		}
	}
	if r.App != "" && r.App != sb.App {
		return false
	}
	if r.Template != "" && r.Template != sb.Template {
		return false
	}
	if len(r.States) > 0 && !slices.Contains(r.States, sb.State) {
		return false
	}
	if r.MinIdle > 0 && (sb.LastActivityAt.IsZero() || now.Sub(sb.LastActivityAt) < r.MinIdle) {
		return false
	}
	return true
}

func matchValue(pattern, v string) bool {
	if prefix, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(v, prefix)
	}
	return pattern == v
}

// Unadoptable says why no rule may adopt sb, whatever it matches: it is
// labelled LabelKeep or LabelManaged. Empty when rules may adopt it.
func Unadoptable(sb Sandbox) string {
	switch {
	case strings.EqualFold(sb.Labels[LabelKeep], "true"):
		return "labelled " + LabelKeep + "=true: never adopted"
	case strings.EqualFold(sb.Labels[LabelManaged], "true"):
		return "labelled " + LabelManaged + "=true: an agent registers it with a reaperd (another host's?)"
	}
	return ""
}

// Preset is a named set of adoption rules for a framework that creates
// sandboxes without registering them.
type Preset struct {
	Name string
	// Rules are the preset's rules, one per provider it knows; Action is
	// left empty (report) so that reaping is always the operator's choice.
	Rules []AdoptRule
	// Note says what the preset cannot cover.
	Note string
}

// Presets lists the built-in presets. The facts behind each are in the
// README's "Adoption rules" section.
func Presets() []Preset {
	return []Preset{
		{
			Name: "openhands",
			Rules: []AdoptRule{
				// OpenHands' Daytona runtime labels its sandbox with the
				// session id, and on close only stops it unless told to
				// delete it: stopped and archived sandboxes pile up.
				{Name: "openhands/daytona", Provider: "daytona", Labels: map[string]string{"OpenHands_SID": "*"},
					States: []string{"stopped", "archived"}},
				// Its Runloop runtime names the devbox after the session
				// and sets metadata container-name=openhands-runtime-<sid>.
				{Name: "openhands/runloop", Provider: "runloop", Labels: map[string]string{"container-name": "openhands-runtime-*"}},
				// Its Modal runtime runs its sandboxes in the app
				// "openhands".
				{Name: "openhands/modal", Provider: "modal", App: "openhands"},
			},
			Note: "OpenHands' E2B sandboxes carry no metadata: only registration protects them",
		},
		{
			Name:  "swe-rex",
			Rules: []AdoptRule{{Name: "swe-rex/modal", Provider: "modal", App: "swe-rex"}},
		},
		{
			Name:  "deepagents",
			Rules: []AdoptRule{{Name: "deepagents/modal", Provider: "modal", App: "deepagents-sandbox"}},
		},
	}
}

// LookupPreset returns the preset named name.
func LookupPreset(name string) (Preset, bool) {
	for _, p := range Presets() {
		if p.Name == name {
			return p, true
		}
	}
	return Preset{}, false
}
