// Package report turns the audit log into a cost report: which sandboxes
// ran, for how long, in which state, what they cost, what reaperd reaped
// and what that saved.
//
// # Basics
//
// A Builder reads the audit events oldest first, from the start of the log
// to the end of the window, and keeps each sandbox's state: its size,
// labels, protection and whether it runs or stands stopped. Time between
// two events accrues to the sandbox at the rate of its state then, clipped
// to the window. So a report is a function of the events alone: the same
// window gives the same figures, and two adjacent windows add up to the
// window that spans both (sandbox counts aside: a sandbox that runs in
// both counts in each).
//
// # Caveats
//
// Costs are estimates: list prices times size times time. Providers bill
// by their own rounding, free allowances and discounts. A sandbox whose
// size is unknown, or whose provider has no prices, counts in hours, not
// dollars (UnpricedHours). An untracked sandbox's state is the one it had
// when first seen.
package report

import (
	"cmp"
	"fmt"
	"iter"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/reaperd/reaperd/reaper"
)

// Keys of groups that are not a value of the sandbox.
const (
	KeyNone      = "(none)"
	KeyUntracked = "(untracked)"
	KeyRunning   = "running" // group by reason: not closed by the window's end
	KeyClosing   = "closing" // group by reason: being closed at the window's end
)

// maxListed caps the protected and untracked sandboxes a report names.
const maxListed = 1000

// Builder builds one report. Feed it events with Add, oldest first, then
// call Report.
type Builder struct {
	q       reaper.ReportQuery
	pricing *reaper.Pricing
	horizon time.Duration

	sandboxes map[string]*sandbox
	groups    map[string]*group
	total     group
	counted   int // sandboxes with time in the window
	events    int
	first     time.Time
	unpriced  map[string]string
	unsized   map[string]float64 // provider: hours of sandboxes of unknown size
	gpuless   map[string]string  // provider: a GPU type with no price

	daily map[dayKey]*reaper.DailyFigures
	// ranks holds the top-ten candidates, sessions and label pairs, by
	// index: sessions and labels map to them.
	ranks    []reaper.Ranked
	sessions map[string]int32
	labels   map[[2]string]int32
	ttr      []float64
}

// dayKey is a UTC day (days since 1970) and a provider.
type dayKey struct {
	day      int64
	provider string
}

// group accumulates one group's figures, unrounded.
type group struct {
	reaper.ReportGroup
	ttr []float64
}

type sandbox struct {
	key, provider, session, owner string
	labels                        map[string]string
	keep, attached                bool
	res                           *reaper.Resources
	run                           reaper.RunState
	untracked                     bool
	live                          bool
	closing, stuck                bool
	since, mark                   time.Time
	dueAt                         time.Time
	costSoFar                     float64
	priced                        bool
	groups                        []string // groups it counts in
	inWindow                      bool
	// reason is why its close started.
	reason reaper.Reason
	// pending holds the window's figures while the group is not yet
	// known (group by reason); nil otherwise.
	pending *group

	// Caches of what its time accrues to: its group, its day's figures,
	// its session's and labels' ranks (nil until first needed).
	gkey   string
	gref   *group
	day    int64
	dayRef *reaper.DailyFigures
	ranks  []int32 // into Builder.ranks: its session's, then its labels'
	ranked bool
	rate   float64 // its cost per hour, while rated
	rated  bool
}

// New returns a Builder for q (validated) at these prices.
func New(q reaper.ReportQuery, p *reaper.Pricing) *Builder {
	return &Builder{q: q, pricing: p, horizon: p.HorizonOr(),
		sandboxes: map[string]*sandbox{}, groups: map[string]*group{},
		unpriced: map[string]string{}, unsized: map[string]float64{}, gpuless: map[string]string{},
		daily: map[dayKey]*reaper.DailyFigures{}, sessions: map[string]int32{}, labels: map[[2]string]int32{}}
}

// Done reports whether an event at t lies past the window: the caller may
// stop reading.
func (b *Builder) Done(t time.Time) bool { return !t.Before(b.q.Until) }

// Add applies one event. Events must come oldest first; those at or after
// the window's end are ignored.
func (b *Builder) Add(ev *reaper.AuditEvent) {
	if b.Done(ev.Time) {
		return
	}
	if b.events == 0 {
		b.first = ev.Time
	}
	b.events++
	if ev.Key == "" {
		return
	}
	provider, _, ok := strings.Cut(ev.Key, "/")
	if !ok || (b.q.Provider != "" && provider != b.q.Provider) {
		return
	}
	t := ev.Time
	sb := b.sandboxes[ev.Key]
	switch ev.Kind {
	case reaper.EventRegistered, reaper.EventAdopted:
		if sb != nil && sb.live {
			b.accrue(sb, t)
			if !sb.untracked {
				return // a second registration of a live entry changes nothing
			}
			b.finish(sb)
		}
		sb = &sandbox{key: ev.Key, provider: provider, session: ev.Session, owner: owner(ev),
			labels: ev.Labels, keep: ev.Keep, attached: ev.Attached, res: ev.Resources,
			run: cmp.Or(ev.RunState, reaper.RunStateRunning), live: true, since: t, mark: t}
		b.sandboxes[ev.Key] = sb
	case reaper.EventDiscovered:
		if sb != nil && sb.live {
			return
		}
		sb = &sandbox{key: ev.Key, provider: provider, untracked: true, labels: ev.Labels, res: ev.Resources,
			run: cmp.Or(ev.RunState, reaper.RunStateRunning), live: true, since: t, mark: t}
		b.sandboxes[ev.Key] = sb
	case reaper.EventUntrackedGone:
		if sb != nil && sb.live && sb.untracked {
			b.accrue(sb, t)
			b.finish(sb)
		}
	case reaper.EventTagged:
		if sb != nil && sb.live && !sb.untracked {
			b.accrue(sb, t)
			sb.labels, sb.keep, sb.attached = ev.Labels, ev.Keep, ev.Attached
			sb.ranked, sb.gref, sb.rated = false, nil, false
		}
	case reaper.EventStateChanged:
		if sb != nil && sb.live && ev.RunState != "" {
			b.accrue(sb, t)
			sb.run, sb.rated = ev.RunState, false
		}
	case reaper.EventResized:
		if sb != nil && sb.live && ev.Resources != nil {
			b.accrue(sb, t)
			sb.res, sb.rated = ev.Resources, false
		}
	case reaper.EventCloseStarted:
		if sb != nil && sb.live && !sb.untracked {
			sb.closing, sb.stuck = true, false
			sb.dueAt = t
			if !ev.DueAt.IsZero() && ev.DueAt.Before(t) {
				sb.dueAt = ev.DueAt
			}
			if ev.Reason != "" {
				sb.reason = ev.Reason
			}
		}
	case reaper.EventCloseFailed:
		if sb != nil && sb.live && ev.Stuck {
			sb.stuck = true
		}
	case reaper.EventClosed:
		if sb == nil || !sb.live || sb.untracked {
			return
		}
		b.accrue(sb, t)
		reason := cmp.Or(ev.Reason, sb.reason, reaper.ReasonManual)
		b.close(sb, t, reason)
	case reaper.EventReleased:
		if sb == nil || !sb.live || sb.untracked {
			return
		}
		b.accrue(sb, t)
		if ev.Reason == reaper.ReasonReleased || ev.Reason == "" {
			b.close(sb, t, reaper.ReasonReleased)
		} else {
			b.finishGroup(sb, string(ev.Reason)) // an attached sandbox left alone
			b.finish(sb)
		}
	}
}

func owner(ev *reaper.AuditEvent) string {
	switch {
	case ev.Kind == reaper.EventAdopted:
		return "reaperd"
	case ev.ActorToken != "":
		return "token " + ev.ActorToken
	case ev.Actor != nil:
		return "uid " + strconv.FormatUint(uint64(*ev.Actor), 10)
	}
	return "unknown"
}

// key returns the group sb's time at t counts in; "" while it is not
// known (group by reason, before the close).
func (b *Builder) key(sb *sandbox, t time.Time) string {
	switch g := b.q.GroupBy; g {
	case reaper.GroupByProvider:
		return sb.provider
	case reaper.GroupBySession:
		if sb.untracked {
			return KeyUntracked
		}
		return cmp.Or(sb.session, KeyNone)
	case reaper.GroupByOwner:
		if sb.untracked {
			return KeyUntracked
		}
		return sb.owner
	case reaper.GroupByDay:
		return t.UTC().Format(time.DateOnly)
	case reaper.GroupByReason:
		if sb.untracked {
			return KeyUntracked
		}
		return ""
	default:
		return cmp.Or(sb.labels[g.Label()], KeyNone)
	}
}

func (b *Builder) group(key string) *group {
	g := b.groups[key]
	if g == nil {
		g = &group{ReportGroup: reaper.ReportGroup{Key: key, Closes: map[reaper.Reason]int{}}}
		b.groups[key] = g
	}
	return g
}

// count counts sb once in group g.
func (b *Builder) count(sb *sandbox, g *group) {
	if !slices.Contains(sb.groups, g.Key) {
		sb.groups = append(sb.groups, g.Key)
		if sb.untracked {
			g.Untracked++
		} else {
			g.Sandboxes++
		}
	}
	if !sb.inWindow {
		sb.inWindow = true
		if sb.untracked {
			b.total.Untracked++
		} else {
			b.counted++
		}
	}
}

// accrue adds sb's time from its mark to t, at the rate of its state.
func (b *Builder) accrue(sb *sandbox, t time.Time) {
	from := sb.mark
	if !t.After(from) {
		return
	}
	sb.mark = t
	if !sb.rated {
		sb.rate, sb.priced = b.hourly(sb)
		sb.rated = true
	}
	hourly, priced := sb.rate, sb.priced
	if priced {
		sb.costSoFar += hourly * t.Sub(from).Hours()
	}
	lo, hi := maxTime(from, b.q.Since), minTime(t, b.q.Until)
	for lo.Before(hi) {
		end := hi
		y, m, d := lo.UTC().Date()
		if next := time.Date(y, m, d+1, 0, 0, 0, 0, time.UTC); next.Before(end) {
			end = next
		}
		b.add(sb, lo, end.Sub(lo).Hours(), hourly, priced)
		lo = end
	}
}

func (b *Builder) add(sb *sandbox, at time.Time, hours, hourly float64, priced bool) {
	var g *group
	if k := b.key(sb, at); k != "" {
		if sb.gref == nil || sb.gkey != k {
			sb.gkey, sb.gref = k, b.group(k)
		}
		g = sb.gref
		b.count(sb, g)
	} else {
		if sb.pending == nil {
			sb.pending = &group{}
		}
		g = sb.pending
		if !sb.inWindow {
			sb.inWindow = true
			b.counted++
		}
	}
	if !priced && sb.res == nil {
		b.unsized[sb.provider] += hours
	}
	b.chart(sb, at, hours, hourly, priced)
	switch {
	case sb.untracked:
		g.UntrackedHours += hours
	case sb.run == reaper.RunStateStopped:
		g.StoppedHours += hours
	default:
		g.RunningHours += hours
	}
	if !priced {
		g.UnpricedHours += hours
		return
	}
	if sb.untracked {
		g.UntrackedCost += hourly * hours
	} else {
		g.Cost += hourly * hours
	}
}

// chart adds to the figures the page charts, whatever the grouping.
func (b *Builder) chart(sb *sandbox, at time.Time, hours, hourly float64, priced bool) {
	cost := 0.0
	if priced {
		cost = hourly * hours
	}
	day := at.Unix() / 86400
	d := sb.dayRef
	if d == nil || sb.day != day {
		dk := dayKey{day, sb.provider}
		if d = b.daily[dk]; d == nil {
			d = &reaper.DailyFigures{Day: at.UTC().Format(time.DateOnly), Provider: sb.provider}
			b.daily[dk] = d
		}
		sb.day, sb.dayRef = day, d
	}
	if sb.untracked {
		d.UntrackedCost += cost
		return
	}
	if sb.run == reaper.RunStateStopped {
		d.StoppedHours += hours
	} else {
		d.RunningHours += hours
	}
	d.Cost += cost
	if !sb.ranked {
		b.rank(sb)
	}
	for _, i := range sb.ranks {
		r := &b.ranks[i]
		r.Hours += hours
		r.Cost += cost
	}
}

// rank finds the top-ten lines sb's time counts in: its session's and
// each of its labels'.
func (b *Builder) rank(sb *sandbox) {
	sb.ranked, sb.ranks = true, sb.ranks[:0]
	if sb.session != "" {
		i, ok := b.sessions[sb.session]
		if !ok {
			i = int32(len(b.ranks))
			b.ranks = append(b.ranks, reaper.Ranked{Key: sb.session})
			b.sessions[sb.session] = i
		}
		sb.ranks = append(sb.ranks, i)
	}
	for k, v := range sb.labels {
		i, ok := b.labels[[2]string{k, v}]
		if !ok {
			i = int32(len(b.ranks))
			b.ranks = append(b.ranks, reaper.Ranked{Key: k + "=" + v})
			b.labels[[2]string{k, v}] = i
		}
		sb.ranks = append(sb.ranks, i)
	}
}

// hourly returns sb's cost per hour now, and whether it is known.
func (b *Builder) hourly(sb *sandbox) (float64, bool) {
	rt, ok := b.pricing.RateFor(sb.provider, sb.labels, sb.run)
	if !ok {
		if _, noted := b.unpriced[sb.provider]; !noted {
			b.unpriced[sb.provider] = fmt.Sprintf("no prices for %s: set [prices.%s] in the config (reaperd ships none for it)", sb.provider, sb.provider)
		}
		return 0, false
	}
	if sb.res == nil {
		return 0, false
	}
	c, ok := rt.Hourly(sb.res)
	if !ok {
		b.gpuless[sb.provider] = sb.res.GPU
		return 0, false
	}
	return c, true
}

// close records sb's close at t for reason.
func (b *Builder) close(sb *sandbox, t time.Time, reason reaper.Reason) {
	defer b.finish(sb)
	k := b.key(sb, t)
	if k == "" {
		k = string(reason)
	}
	b.finishGroup(sb, k)
	if t.Before(b.q.Since) {
		return
	}
	g := b.group(k)
	b.count(sb, g)
	g.Closes[reason]++
	if reason == reaper.ReasonGone || reason == reaper.ReasonReleased {
		return
	}
	g.Reaped++
	due := cmp.Or(sb.dueAt, t)
	g.ttr = append(g.ttr, t.Sub(due).Seconds())
	b.ttr = append(b.ttr, t.Sub(due).Seconds())
	g.Saved += b.saved(sb, t)
}

// saved is what sb would have cost from its close at t until its
// provider's own cleanup ended it, capped by the horizon.
func (b *Builder) saved(sb *sandbox, t time.Time) float64 {
	c, ok := b.pricing.Cleanup[sb.provider]
	if !ok || sb.res == nil {
		return 0
	}
	running, okR := b.pricing.RateFor(sb.provider, sb.labels, reaper.RunStateRunning)
	stopped, okS := b.pricing.RateFor(sb.provider, sb.labels, reaper.RunStateStopped)
	if !okR || !okS {
		return 0
	}
	runH, _ := running.Hourly(sb.res)
	stopH, _ := stopped.Hourly(sb.res)
	h := b.horizon
	if sb.run == reaper.RunStateStopped {
		if c.Stopped {
			return stopH * h.Hours()
		}
		return 0
	}
	on := h
	if c.Running > 0 {
		on = time.Duration(c.Running)
		if c.FromStart {
			on = max(0, sb.since.Add(time.Duration(c.Running)).Sub(t))
		}
	}
	on = min(on, h)
	s := runH * on.Hours()
	if c.ThenStopped {
		s += stopH * (h - on).Hours()
	}
	return s
}

// finishGroup moves sb's pending figures (group by reason) to group k.
func (b *Builder) finishGroup(sb *sandbox, k string) {
	p := sb.pending
	if p == nil || p.RunningHours == 0 && p.StoppedHours == 0 && p.UnpricedHours == 0 {
		return
	}
	g := b.group(k)
	b.count(sb, g)
	g.RunningHours += p.RunningHours
	g.StoppedHours += p.StoppedHours
	g.UnpricedHours += p.UnpricedHours
	g.Cost += p.Cost
	p.RunningHours, p.StoppedHours, p.UnpricedHours, p.Cost = 0, 0, 0, 0
}

// finish ends sb's life in the ledger: the builder forgets it, so that
// it holds only the sandboxes alive at the point the log has reached.
func (b *Builder) finish(sb *sandbox) {
	sb.live = false
	if b.sandboxes[sb.key] == sb {
		delete(b.sandboxes, sb.key)
	}
}

// Report accrues every live sandbox to the window's end and returns the
// report, costs rounded to the cent and hours to the hundredth.
func (b *Builder) Report() *reaper.Report {
	r := &reaper.Report{Since: b.q.Since, Until: b.q.Until, GroupBy: b.q.GroupBy, Provider: b.q.Provider, Currency: "USD",
		Live: map[string]reaper.LiveCounts{}, Protected: []reaper.ReportSandbox{}, Untracked: []reaper.ReportSandbox{},
		Horizon: reaper.Duration(b.horizon), Events: b.events, CompleteFrom: b.first,
		Prices: map[string]reaper.PriceList{}, SavedRule: map[string]string{}}
	end := b.q.Until
	for _, sb := range b.sandboxes {
		if !sb.live {
			continue
		}
		b.accrue(sb, end)
		if _, priced := b.hourly(sb); priced {
			sb.priced = true
		}
		lc := r.Live[sb.provider]
		switch {
		case sb.untracked:
			lc.Untracked++
		case sb.closing:
			lc.Closing++
		case sb.run == reaper.RunStateStopped:
			lc.Stopped++
		default:
			lc.Running++
		}
		r.Live[sb.provider] = lc
		rs := reaper.ReportSandbox{Key: sb.key, Session: sb.session, Keep: sb.keep, Attached: sb.attached, RunState: sb.run,
			Since: sb.since, Age: reaper.Duration(end.Sub(sb.since)), Cost: round(sb.costSoFar, 100), Priced: sb.priced}
		if sb.untracked {
			r.Untracked = append(r.Untracked, rs)
			continue
		}
		k := b.key(sb, end.Add(-time.Nanosecond))
		if k == "" {
			k = KeyRunning
			if sb.closing {
				k = KeyClosing
			}
			b.finishGroup(sb, k)
		}
		if sb.stuck && sb.closing {
			g := b.group(k)
			b.count(sb, g)
			g.Stuck++
		}
		if sb.keep || sb.attached {
			g := b.group(k)
			b.count(sb, g)
			g.ProtectedRunning++
			g.ProtectedCost += sb.costSoFar
			r.Protected = append(r.Protected, rs)
		}
	}
	slices.SortFunc(r.Protected, func(a, c reaper.ReportSandbox) int {
		return cmp.Or(a.Since.Compare(c.Since), strings.Compare(a.Key, c.Key))
	})
	slices.SortFunc(r.Untracked, func(a, c reaper.ReportSandbox) int {
		return cmp.Or(cmp.Compare(c.Cost, a.Cost), a.Since.Compare(c.Since), strings.Compare(a.Key, c.Key))
	})
	if n := len(r.Protected); n > maxListed {
		r.Notes = append(r.Notes, fmt.Sprintf("%d protected sandboxes run; the %d oldest are listed", n, maxListed))
		r.Protected = r.Protected[:maxListed]
	}
	if n := len(r.Untracked); n > maxListed {
		r.Notes = append(r.Notes, fmt.Sprintf("%d untracked sandboxes are listed by their providers; the %d most costly are named", n, maxListed))
		r.Untracked = r.Untracked[:maxListed]
	}

	tot := &b.total
	tot.Key, tot.Closes = "total", map[reaper.Reason]int{}
	for _, k := range slices.Sorted(maps.Keys(b.groups)) {
		g := b.groups[k]
		tot.RunningHours += g.RunningHours
		tot.StoppedHours += g.StoppedHours
		tot.UnpricedHours += g.UnpricedHours
		tot.Cost += g.Cost
		tot.Saved += g.Saved
		tot.Reaped += g.Reaped
		tot.Stuck += g.Stuck
		tot.ProtectedRunning += g.ProtectedRunning
		tot.ProtectedCost += g.ProtectedCost
		tot.UntrackedHours += g.UntrackedHours
		tot.UntrackedCost += g.UntrackedCost
		for re, n := range g.Closes {
			tot.Closes[re] += n
		}
		g.TimeToReap = percentiles(g.ttr)
		r.Groups = append(r.Groups, finalize(g.ReportGroup))
	}
	tot.Sandboxes = b.counted
	tot.TimeToReap = percentiles(b.ttr)
	r.TimeToReap = histogram(b.ttr)
	r.Daily = make([]reaper.DailyFigures, 0, len(b.daily))
	for _, k := range slices.SortedFunc(maps.Keys(b.daily), func(a, c dayKey) int {
		return cmp.Or(cmp.Compare(a.day, c.day), strings.Compare(a.provider, c.provider))
	}) {
		d := *b.daily[k]
		d.RunningHours, d.StoppedHours = round(d.RunningHours, 100), round(d.StoppedHours, 100)
		d.Cost, d.UntrackedCost = round(d.Cost, 100), round(d.UntrackedCost, 100)
		r.Daily = append(r.Daily, d)
	}
	r.TopSessions, r.TopLabels = b.top(maps.Values(b.sessions)), b.top(maps.Values(b.labels))
	r.Total = finalize(tot.ReportGroup)
	slices.SortStableFunc(r.Groups, func(a, c reaper.ReportGroup) int {
		return cmp.Or(cmp.Compare(c.Cost+c.UntrackedCost, a.Cost+a.UntrackedCost),
			cmp.Compare(c.RunningHours+c.StoppedHours+c.UntrackedHours, a.RunningHours+a.StoppedHours+a.UntrackedHours),
			strings.Compare(a.Key, c.Key))
	})
	if b.q.GroupBy == reaper.GroupByDay {
		slices.SortFunc(r.Groups, func(a, c reaper.ReportGroup) int { return strings.Compare(a.Key, c.Key) })
	}
	if r.Groups == nil {
		r.Groups = []reaper.ReportGroup{}
	}

	for _, p := range slices.Sorted(maps.Keys(b.unpriced)) {
		if r.Unpriced == nil {
			r.Unpriced = map[string]string{}
		}
		r.Unpriced[p] = b.unpriced[p]
	}
	for _, p := range slices.Sorted(maps.Keys(b.unsized)) {
		if _, noPrice := b.unpriced[p]; !noPrice && b.unsized[p] > 0 {
			r.Notes = append(r.Notes, fmt.Sprintf("%s: %.2f sandbox-hours have no known size, so no cost: register with --cpu, --memory and --disk, or let the provider's listing report them",
				p, b.unsized[p]))
		}
	}
	for _, p := range slices.Sorted(maps.Keys(b.gpuless)) {
		r.Notes = append(r.Notes, fmt.Sprintf("%s: GPU type %q has no price: set gpu_hour.%s in [prices.%s.running]", p, b.gpuless[p], b.gpuless[p], p))
	}
	if b.pricing != nil {
		for name, pl := range b.pricing.Providers {
			if b.q.Provider == "" || b.q.Provider == name {
				r.Prices[name] = pl
			}
		}
		for name, c := range b.pricing.Cleanup {
			if b.q.Provider == "" || b.q.Provider == name {
				r.SavedRule[name] = c.Rule
			}
		}
	}
	return r
}

// top returns the ten most costly of m (then the most hours, then by key).
func (b *Builder) top(all iter.Seq[int32]) []reaper.Ranked {
	order := func(a, c reaper.Ranked) int {
		return cmp.Or(cmp.Compare(c.Cost, a.Cost), cmp.Compare(c.Hours, a.Hours), strings.Compare(a.Key, c.Key))
	}
	// Keep the best ten seen so far, sorted: one pass, whatever the count.
	out := make([]reaper.Ranked, 0, 11)
	for i := range all {
		r := b.ranks[i]
		if len(out) == 10 && order(r, out[9]) >= 0 {
			continue
		}
		at, _ := slices.BinarySearchFunc(out, r, order)
		out = slices.Insert(out, at, r)
		if len(out) > 10 {
			out = out[:10]
		}
	}
	for i := range out {
		out[i].Cost, out[i].Hours = round(out[i].Cost, 100), round(out[i].Hours, 100)
	}
	return out
}

// ttrBuckets are the time-to-reap histogram's bounds.
var ttrBuckets = []struct {
	upTo  float64
	label string
}{{1, "≤1s"}, {5, "≤5s"}, {30, "≤30s"}, {60, "≤1m"}, {300, "≤5m"}, {1800, "≤30m"}, {3600, "≤1h"}, {6 * 3600, "≤6h"}, {86400, "≤1d"}, {0, ">1d"}}

func histogram(v []float64) []reaper.Bucket {
	out := make([]reaper.Bucket, len(ttrBuckets))
	for i, b := range ttrBuckets {
		out[i] = reaper.Bucket{UpTo: b.upTo, Label: b.label}
	}
	for _, x := range v {
		i := 0
		for i < len(ttrBuckets)-1 && x > ttrBuckets[i].upTo {
			i++
		}
		out[i].Count++
	}
	return out
}

func finalize(g reaper.ReportGroup) reaper.ReportGroup {
	for _, f := range []*float64{&g.Cost, &g.Saved, &g.ProtectedCost, &g.UntrackedCost} {
		*f = round(*f, 100)
	}
	for _, f := range []*float64{&g.RunningHours, &g.StoppedHours, &g.UnpricedHours, &g.UntrackedHours} {
		*f = round(*f, 100)
	}
	return g
}

// round rounds x to 1/unit, halves away from zero, after a nudge that
// absorbs the float error of sums such as 0.1+0.2.
func round(x, unit float64) float64 {
	v := x * unit
	return math.Round(v+math.Copysign(1e-7, v)) / unit
}

// percentiles returns the nearest-rank percentiles of v, in seconds
// rounded to the millisecond.
func percentiles(v []float64) reaper.Percentiles {
	if len(v) == 0 {
		return reaper.Percentiles{}
	}
	slices.Sort(v)
	at := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(v)))) - 1
		return round(v[max(i, 0)], 1000)
	}
	return reaper.Percentiles{Count: len(v), P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: round(v[len(v)-1], 1000)}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
