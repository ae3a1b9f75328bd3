package reaper

import (
	"strings"
	"testing"
	"time"
)

func TestAdoptRuleMatch(t *testing.T) {
	now := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	rule := AdoptRule{Provider: "daytona", Labels: map[string]string{"OpenHands_SID": "*", "team": "ml*", "env": "ci"},
		NameGlob: "openhands-*", States: []string{"stopped", "archived"}, MinAge: 2 * time.Hour, MinIdle: 30 * time.Minute}
	base := Sandbox{ID: "x", Name: "openhands-abc", State: "stopped",
		Labels:         map[string]string{"OpenHands_SID": "s1", "team": "ml-research", "env": "ci"},
		LastActivityAt: now.Add(-time.Hour)}
	tests := []struct {
		name     string
		provider string
		change   func(*Sandbox)
		age      time.Duration
		want     bool
	}{
		{"all match", "daytona", nil, 3 * time.Hour, true},
		{"other provider", "e2b", nil, 3 * time.Hour, false},
		{"too young", "daytona", nil, time.Hour, false},
		{"key missing", "daytona", func(s *Sandbox) { delete(s.Labels, "OpenHands_SID") }, 3 * time.Hour, false},
		{"any value, even empty", "daytona", func(s *Sandbox) { s.Labels["OpenHands_SID"] = "" }, 3 * time.Hour, true},
		{"prefix mismatch", "daytona", func(s *Sandbox) { s.Labels["team"] = "ops" }, 3 * time.Hour, false},
		{"exact mismatch", "daytona", func(s *Sandbox) { s.Labels["env"] = "ci2" }, 3 * time.Hour, false},
		{"name mismatch", "daytona", func(s *Sandbox) { s.Name = "mine" }, 3 * time.Hour, false},
		{"state mismatch", "daytona", func(s *Sandbox) { s.State = "started" }, 3 * time.Hour, false},
		{"recently active", "daytona", func(s *Sandbox) { s.LastActivityAt = now.Add(-time.Minute) }, 3 * time.Hour, false},
		{"activity unknown", "daytona", func(s *Sandbox) { s.LastActivityAt = time.Time{} }, 3 * time.Hour, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sb := base
			sb.Labels = map[string]string{}
			for k, v := range base.Labels {
				sb.Labels[k] = v
			}
			if tt.change != nil {
				tt.change(&sb)
			}
			if got := rule.Match(tt.provider, sb, tt.age, now); got != tt.want {
				t.Errorf("Match = %v, want %v", got, tt.want)
			}
		})
	}
	modal := AdoptRule{Provider: "modal", App: "swe-rex", MinAge: time.Hour}
	if !modal.Match("modal", Sandbox{App: "swe-rex"}, 2*time.Hour, now) || modal.Match("modal", Sandbox{App: "other"}, 2*time.Hour, now) {
		t.Error("app selector")
	}
	e2b := AdoptRule{Provider: "e2b", Template: "code-interpreter-v1", MinAge: time.Hour}
	if !e2b.Match("e2b", Sandbox{Template: "code-interpreter-v1"}, 2*time.Hour, now) || e2b.Match("e2b", Sandbox{Template: "base"}, 2*time.Hour, now) {
		t.Error("template selector")
	}
}

func TestAdoptRuleValidate(t *testing.T) {
	tests := []struct {
		rule AdoptRule
		err  string
	}{
		{AdoptRule{Provider: "daytona", App: "x"}, ""},
		{AdoptRule{}, "provider is required"},
		{AdoptRule{Provider: "daytona", Action: "delete"}, `action "delete"`},
		{AdoptRule{Provider: "daytona", MinAge: -time.Second}, "negative"},
		{AdoptRule{Provider: "daytona", NameGlob: "[x"}, "name"},
		{AdoptRule{Provider: "daytona", States: []string{""}}, "empty"},
		{AdoptRule{Provider: "daytona", Action: AdoptReap}, "every untracked daytona sandbox"},
		{AdoptRule{Provider: "daytona", Action: AdoptReap, States: []string{"archived"}}, ""},
	}
	for _, tt := range tests {
		r := tt.rule
		err := r.Validate()
		if (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("Validate(%+v) = %v, want an error containing %q", tt.rule, err, tt.err)
		}
		if err == nil && (r.Action == "" || r.MinAge == 0) {
			t.Errorf("Validate left defaults unset: %+v", r)
		}
	}
}

func TestUnadoptable(t *testing.T) {
	for labels, want := range map[string]bool{"": false, LabelKeep + "=true": true, LabelKeep + "=TRUE": true,
		LabelKeep + "=false": false, LabelManaged + "=true": true} {
		sb := Sandbox{Labels: map[string]string{}}
		if k, v, ok := strings.Cut(labels, "="); ok {
			sb.Labels[k] = v
		}
		if got := Unadoptable(sb) != ""; got != want {
			t.Errorf("Unadoptable(%q) = %v, want %v", labels, got, want)
		}
	}
}

func TestPresetsAreValid(t *testing.T) {
	for _, p := range Presets() {
		for _, r := range p.Rules {
			r.Action = AdoptReap
			if err := r.Validate(); err != nil {
				t.Errorf("preset %s rule %s with action reap: %v", p.Name, r.Name, err)
			}
			if !strings.HasPrefix(r.Name, p.Name+"/") {
				t.Errorf("preset %s rule named %q", p.Name, r.Name)
			}
		}
	}
}

func TestDecideAdopted(t *testing.T) {
	now := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	e := &Entry{Provider: "p", ID: "x", State: StateActive, Adopted: "openhands/daytona", ExpiresAt: now, Session: "sid-from-label"}
	if d := Decide(e, nil, now); d.Action != ActionClose || d.Reason != ReasonAdopted {
		t.Errorf("Decide(adopted) = %+v, want close, adopted", d)
	}
	e.Keep = true
	if d := Decide(e, nil, now); d.Action != ActionSkip {
		t.Errorf("Decide(adopted, keep) = %+v, want skip: a keep tag wins", d)
	}
}
