package reaper

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// GroupBy names how a cost report groups sandboxes.
type GroupBy string

const (
	GroupByProvider GroupBy = "provider"
	GroupBySession  GroupBy = "session"
	GroupByOwner    GroupBy = "owner"
	GroupByReason   GroupBy = "reason"
	GroupByDay      GroupBy = "day"
	// GroupByLabelPrefix starts "label:KEY", grouping by a label's value.
	GroupByLabelPrefix = "label:"
)

// ParseGroupBy checks a group-by name: provider, session, owner, reason,
// day or label:KEY. Empty means provider.
func ParseGroupBy(s string) (GroupBy, error) {
	switch g := GroupBy(s); g {
	case "":
		return GroupByProvider, nil
	case GroupByProvider, GroupBySession, GroupByOwner, GroupByReason, GroupByDay:
		return g, nil
	}
	if k, ok := strings.CutPrefix(s, GroupByLabelPrefix); ok {
		if err := ValidateLabels(map[string]string{k: "x"}); err != nil || k == "" {
			return "", Errorf(EINVALID, "group by %q: %q is not a label key", s, k)
		}
		return GroupBy(s), nil
	}
	return "", Errorf(EINVALID, "group by %q: use provider, session, owner, reason, day or label:KEY", s)
}

// Label returns the label key of a label:KEY grouping, or "".
func (g GroupBy) Label() string {
	k, _ := strings.CutPrefix(string(g), GroupByLabelPrefix)
	if k == string(g) {
		return ""
	}
	return k
}

// ReportQuery asks for a cost report over [Since, Until).
type ReportQuery struct {
	Since, Until time.Time
	// Provider, when set, keeps that provider's sandboxes only.
	Provider string
	GroupBy  GroupBy
}

// Validate checks the window and the grouping.
func (q *ReportQuery) Validate() error {
	if q.Since.IsZero() || q.Until.IsZero() {
		return Errorf(EINVALID, "report: give both since and until")
	}
	if !q.Until.After(q.Since) {
		return Errorf(EINVALID, "report: until %s is not after since %s", q.Until.Format(time.RFC3339), q.Since.Format(time.RFC3339))
	}
	if q.Until.Sub(q.Since) > 3660*24*time.Hour {
		return Errorf(EINVALID, "report: a window of %s is more than ten years", q.Until.Sub(q.Since).Round(time.Hour))
	}
	if q.Provider != "" {
		if err := ValidateID("provider", q.Provider); err != nil {
			return err
		}
	}
	g, err := ParseGroupBy(string(q.GroupBy))
	if err != nil {
		return err
	}
	q.GroupBy = g
	return nil
}

// Rate is what a sandbox costs per hour in one state, in US dollars:
// per vCPU, per GiB of memory, per GiB of disk and per GPU of each type.
type Rate struct {
	VCPU      float64            `json:"vcpu_hour"`
	MemoryGiB float64            `json:"memory_gib_hour"`
	DiskGiB   float64            `json:"disk_gib_hour"`
	GPU       map[string]float64 `json:"gpu_hour,omitempty"`
}

// Hourly returns what a sandbox of size r costs per hour at this rate.
// The second result is false when the sandbox has a GPU type the rate
// does not price.
func (rt *Rate) Hourly(r *Resources) (float64, bool) {
	if r == nil {
		return 0, true
	}
	c := r.VCPU*rt.VCPU + r.MemoryGiB*rt.MemoryGiB + r.DiskGiB*rt.DiskGiB
	if r.GPUCount > 0 {
		p, ok := rt.GPU[r.GPU]
		if !ok {
			return c, false
		}
		c += float64(r.GPUCount) * p
	}
	return c, true
}

// PriceList is one provider's prices.
type PriceList struct {
	Running Rate `json:"running"`
	Stopped Rate `json:"stopped"`
	// Source says where the figures come from: a provider's published
	// list prices and the date they were read, or the operator's contract.
	Source string `json:"source"`
	// Default is set for the prices reaperd ships.
	Default bool `json:"default,omitempty"`
}

// PriceOverride replaces some prices for the sandboxes whose labels
// match: a GPU type, a negotiated tier. Nil fields keep the provider's.
type PriceOverride struct {
	// Provider, when set, limits the override to one provider.
	Provider string `json:"provider,omitempty"`
	// Labels must all match (key=value).
	Labels map[string]string `json:"labels"`
	// State, when set, limits the override to running or stopped.
	State     RunState           `json:"state,omitempty"`
	VCPU      *float64           `json:"vcpu_hour,omitempty"`
	MemoryGiB *float64           `json:"memory_gib_hour,omitempty"`
	DiskGiB   *float64           `json:"disk_gib_hour,omitempty"`
	GPU       map[string]float64 `json:"gpu_hour,omitempty"`
}

// Matches reports whether the override applies to a sandbox of the
// provider with these labels, in state st.
func (o *PriceOverride) Matches(provider string, labels map[string]string, st RunState) bool {
	if o.Provider != "" && o.Provider != provider {
		return false
	}
	if o.State != "" && o.State != st {
		return false
	}
	for k, v := range o.Labels {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// apply returns rt with the override's prices in place.
func (o *PriceOverride) apply(rt Rate) Rate {
	if o.VCPU != nil {
		rt.VCPU = *o.VCPU
	}
	if o.MemoryGiB != nil {
		rt.MemoryGiB = *o.MemoryGiB
	}
	if o.DiskGiB != nil {
		rt.DiskGiB = *o.DiskGiB
	}
	if len(o.GPU) > 0 {
		g := maps.Clone(rt.GPU)
		if g == nil {
			g = map[string]float64{}
		}
		maps.Copy(g, o.GPU)
		rt.GPU = g
	}
	return rt
}

// Cleanup is what a provider does by itself with a sandbox nobody
// deletes, for the "saved" figure: how long it keeps billing after
// reaperd closed it, had reaperd not.
type Cleanup struct {
	// Running is how long a running sandbox runs on. Zero means until
	// the horizon.
	Running Duration `json:"running"`
	// FromStart says Running counts from the sandbox's start (a timeout:
	// E2B, Modal); otherwise it counts from the close (an idle timer,
	// which starts when the agent stops using the sandbox: Daytona's
	// auto-stop, Runloop's keep-alive).
	FromStart bool `json:"from_start"`
	// ThenStopped says a running sandbox stops, not ends, when Running
	// passes, and then bills as stopped until the horizon (Daytona).
	ThenStopped bool `json:"then_stopped"`
	// Stopped says a stopped sandbox bills on, as stopped, until the
	// horizon (no provider deletes a stopped sandbox by itself by
	// default). When false, a stopped sandbox saves nothing.
	Stopped bool `json:"stopped"`
	// Rule is the rule in words, for the report.
	Rule string `json:"rule"`
}

// Pricing is every price and saving rule a report uses.
type Pricing struct {
	Providers map[string]PriceList `json:"providers"`
	Overrides []PriceOverride      `json:"overrides,omitempty"`
	Cleanup   map[string]Cleanup   `json:"cleanup"`
	// Horizon caps the saved figure of each reaped sandbox. Zero means
	// seven days.
	Horizon Duration `json:"horizon"`
}

// DefaultHorizon caps the saved figure of one reaped sandbox.
const DefaultHorizon = 7 * 24 * time.Hour

// HorizonOr returns the horizon, or the default.
func (p *Pricing) HorizonOr() time.Duration {
	if p == nil || p.Horizon <= 0 {
		return DefaultHorizon
	}
	return time.Duration(p.Horizon)
}

// RateFor returns the hourly rate of a provider's sandbox in state st with
// these labels, and false when the provider has no prices.
func (p *Pricing) RateFor(provider string, labels map[string]string, st RunState) (Rate, bool) {
	if p == nil {
		return Rate{}, false
	}
	pl, ok := p.Providers[provider]
	if !ok {
		return Rate{}, false
	}
	rt := pl.Running
	if st == RunStateStopped {
		rt = pl.Stopped
	}
	for i := range p.Overrides {
		if o := &p.Overrides[i]; o.Matches(provider, labels, st) {
			rt = o.apply(rt)
		}
	}
	return rt, true
}

// Validate checks that prices are numbers a price can be.
func (p *Pricing) Validate() error {
	check := func(where string, rt *Rate) error {
		for _, f := range []struct {
			name string
			v    float64
		}{{"vcpu_hour", rt.VCPU}, {"memory_gib_hour", rt.MemoryGiB}, {"disk_gib_hour", rt.DiskGiB}} {
			if f.v < 0 || f.v != f.v || f.v > 1e6 {
				return Errorf(EINVALID, "%s %s = %v: use a price in dollars per hour, 0 or more", where, f.name, f.v)
			}
		}
		for _, g := range slices.Sorted(maps.Keys(rt.GPU)) {
			if v := rt.GPU[g]; v < 0 || v != v || v > 1e6 {
				return Errorf(EINVALID, "%s gpu_hour.%s = %v: use a price in dollars per GPU-hour, 0 or more", where, g, v)
			}
		}
		return nil
	}
	for _, name := range slices.Sorted(maps.Keys(p.Providers)) {
		pl := p.Providers[name]
		if err := check(fmt.Sprintf("[prices.%s.running]", name), &pl.Running); err != nil {
			return err
		}
		if err := check(fmt.Sprintf("[prices.%s.stopped]", name), &pl.Stopped); err != nil {
			return err
		}
	}
	for i := range p.Overrides {
		o := &p.Overrides[i]
		where := fmt.Sprintf("[[price_override]] #%d", i+1)
		if len(o.Labels) == 0 {
			return Errorf(EINVALID, "%s: give labels to match, e.g. labels = { gpu = \"A100\" }", where)
		}
		if o.State != "" && o.State != RunStateRunning && o.State != RunStateStopped {
			return Errorf(EINVALID, "%s: state %q: use running or stopped", where, o.State)
		}
		var rt Rate
		rt = o.apply(rt)
		if err := check(where, &rt); err != nil {
			return err
		}
	}
	if p.Horizon < 0 {
		return Errorf(EINVALID, "[report] saved_horizon %s: use a duration of 0 (7 days) or more", p.Horizon)
	}
	return nil
}

// Report is a cost report over a window, computed from the audit log.
type Report struct {
	Since   time.Time `json:"since"`
	Until   time.Time `json:"until"`
	GroupBy GroupBy   `json:"group_by"`
	// Provider is the provider the report is limited to, if any.
	Provider string `json:"provider,omitempty"`
	// Currency is the unit of every cost: "USD".
	Currency string `json:"currency"`
	// Groups are sorted by cost, then hours, then key.
	Groups []ReportGroup `json:"groups"`
	// Total sums the groups; its sandbox count counts each sandbox once.
	Total ReportGroup `json:"total"`
	// Daily are the hours and cost of each day (UTC) and provider, for
	// charts; they ignore the grouping.
	Daily []DailyFigures `json:"daily"`
	// TopSessions and TopLabels are the ten sessions and label pairs
	// (key=value) whose tracked sandboxes cost most in the window.
	TopSessions []Ranked `json:"top_sessions"`
	TopLabels   []Ranked `json:"top_labels"`
	// TimeToReap counts the reaped sandboxes by time from due to closed:
	// each bucket holds those up to its bound and above the previous one;
	// the last has no bound.
	TimeToReap []Bucket `json:"time_to_reap"`
	// Live counts each provider's sandboxes at Until.
	Live map[string]LiveCounts `json:"live"`
	// Protected are the keep and attached sandboxes still running at
	// Until, oldest first.
	Protected []ReportSandbox `json:"protected"`
	// Untracked are the sandboxes nobody registered that were still
	// listed at Until, most costly first.
	Untracked []ReportSandbox `json:"untracked"`
	// Unpriced names each provider that had sandboxes in the window but
	// no prices, and why: its figures are hours, not dollars.
	Unpriced map[string]string `json:"unpriced,omitempty"`
	// SavedRule states how the saved figure is computed, per provider.
	SavedRule map[string]string `json:"saved_rule"`
	// Horizon caps the saved figure of one sandbox.
	Horizon Duration `json:"saved_horizon"`
	// Prices are the prices used.
	Prices map[string]PriceList `json:"prices"`
	// Events is how many audit events the report read; CompleteFrom is
	// the time of the oldest event kept in the ledger (retention prunes
	// older ones, except those of sandboxes still tracked).
	Events       int       `json:"events"`
	CompleteFrom time.Time `json:"complete_from,omitzero"`
	// Notes say what a reader should know about the figures.
	Notes []string `json:"notes,omitempty"`
}

// ReportGroup is one group's figures over the window.
type ReportGroup struct {
	Key string `json:"key"`
	// Sandboxes counts the tracked sandboxes with time in the window.
	Sandboxes int `json:"sandboxes"`
	// RunningHours and StoppedHours are sandbox-hours in the window.
	RunningHours float64 `json:"running_hours"`
	StoppedHours float64 `json:"stopped_hours"`
	// Cost is the estimated cost of those hours, in dollars, of the
	// priced providers; UnpricedHours are the hours no price covers.
	Cost          float64 `json:"cost"`
	UnpricedHours float64 `json:"unpriced_hours,omitempty"`
	// Closes counts the sandboxes that stopped being tracked in the
	// window, by reason: expired, orphaned-lease, orphaned-process,
	// session-ended, adopted, manual, gone (deleted by someone else) and
	// released (by the session itself).
	Closes map[Reason]int `json:"closes"`
	// Reaped counts the closes reaperd made (every reason but gone and
	// released); Saved is what they would have cost until the provider's
	// own cleanup, capped by the horizon.
	Reaped int     `json:"reaped"`
	Saved  float64 `json:"saved"`
	// Stuck counts the closes a provider refused for good, still
	// unresolved at the window's end.
	Stuck int `json:"stuck"`
	// TimeToReap is the time from due to closed of the reaped sandboxes.
	TimeToReap Percentiles `json:"time_to_reap"`
	// ProtectedRunning counts keep and attached sandboxes still running at
	// the window's end; ProtectedCost is their cost so far.
	ProtectedRunning int     `json:"protected_running"`
	ProtectedCost    float64 `json:"protected_cost"`
	// Untracked counts the sandboxes nobody registered, listed at some
	// time in the window; UntrackedHours and UntrackedCost are their
	// hours and cost in it.
	Untracked      int     `json:"untracked"`
	UntrackedHours float64 `json:"untracked_hours"`
	UntrackedCost  float64 `json:"untracked_cost"`
}

// Percentiles summarises durations, in seconds.
type Percentiles struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50_seconds"`
	P90   float64 `json:"p90_seconds"`
	P99   float64 `json:"p99_seconds"`
	Max   float64 `json:"max_seconds"`
}

// ReportSandbox is one sandbox a report names.
type ReportSandbox struct {
	Key      string   `json:"key"`
	Session  string   `json:"session,omitempty"`
	Keep     bool     `json:"keep,omitempty"`
	Attached bool     `json:"attached,omitempty"`
	RunState RunState `json:"run_state"`
	// Since is when it was registered or first seen; Age is how long
	// before the window's end.
	Since time.Time `json:"since"`
	Age   Duration  `json:"age"`
	// Cost is its estimated cost from Since to the window's end; Priced is
	// false when its provider has no prices.
	Cost   float64 `json:"cost"`
	Priced bool    `json:"priced"`
}

// LiveCounts are a provider's sandboxes at a report's end.
type LiveCounts struct {
	// Running and Stopped count the tracked sandboxes not yet closing;
	// Closing those reaperd is closing; Untracked those nobody registered.
	Running   int `json:"running"`
	Stopped   int `json:"stopped"`
	Closing   int `json:"closing"`
	Untracked int `json:"untracked"`
}

// DailyFigures are one provider's figures on one day.
type DailyFigures struct {
	Day           string  `json:"day"`
	Provider      string  `json:"provider"`
	RunningHours  float64 `json:"running_hours"`
	StoppedHours  float64 `json:"stopped_hours"`
	Cost          float64 `json:"cost"`
	UntrackedCost float64 `json:"untracked_cost"`
}

// Ranked is one line of a top-ten.
type Ranked struct {
	Key   string  `json:"key"`
	Hours float64 `json:"hours"`
	Cost  float64 `json:"cost"`
}

// Bucket is one bar of a histogram: Count values up to UpTo seconds (zero
// UpTo: no bound).
type Bucket struct {
	UpTo  float64 `json:"up_to_seconds"`
	Label string  `json:"label"`
	Count int     `json:"count"`
}

// FormatUSD formats a cost as a person reads it: "$1,234.56".
func FormatUSD(v float64) string {
	neg := v < 0
	if neg {
		v = -v
	}
	s := strconv.FormatFloat(v, 'f', 2, 64)
	whole, cents, _ := strings.Cut(s, ".")
	var b strings.Builder
	for i, c := range whole {
		if i > 0 && (len(whole)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	out := "$" + b.String() + "." + cents
	if neg {
		return "-" + out
	}
	return out
}

// FormatHours formats sandbox-hours to the hundredth: "358.00".
func FormatHours(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }

// ReapReasons are the close reasons a report counts, in the order it
// shows them.
var ReapReasons = []Reason{ReasonExpired, ReasonOrphanedLease, ReasonOrphanedProcess, ReasonSessionEnded,
	ReasonAdopted, ReasonManual, ReasonGone, ReasonReleased}

// FormatAge renders an age to a precision that reads at a glance: 45s,
// 12m, 3h20m, 4d6h.
func FormatAge(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}

// FormatSeconds renders a time to reap: "850ms", "30s", "4m10s"; "-" when
// there were none (count zero).
func FormatSeconds(count int, s float64) string {
	if count == 0 {
		return "-"
	}
	d := time.Duration(s * float64(time.Second))
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}
