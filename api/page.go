package api

import (
	"bytes"
	_ "embed"
	"fmt"
	"html/template"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/reaperd/reaperd/reaper"
)

// The page at / shows the ledger at a glance and the cost report of a
// window, as server-rendered HTML with inline SVG charts: no script, no
// fetch, nothing from another origin. It reads what GET
// /v1/audit/report and /v1/status read, and takes the report's since,
// until and provider parameters.

//go:embed page.html
var pageHTML string

var pageTemplate = template.Must(template.New("page").Funcs(template.FuncMap{
	"usd":   reaper.FormatUSD,
	"hours": reaper.FormatHours,
	"time":  func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") },
	"age":   func(d reaper.Duration) string { return reaper.FormatAge(time.Duration(d)) },
	"secs":  reaper.FormatSeconds,
	"in": func(t, now time.Time) string {
		d := t.Sub(now).Round(time.Second)
		if d < 0 {
			return reaper.FormatAge(-d) + " ago"
		}
		return "in " + reaper.FormatAge(d)
	},
	"lower": strings.ToLower,
}).Parse(pageHTML))

// pageData is what the template renders.
type pageData struct {
	Report    *reaper.Report
	Status    *reaper.EngineStatus
	Now       time.Time
	Query     struct{ Since, Until, Provider string }
	Providers []string
	Live      []liveRow
	LiveTotal reaper.LiveCounts
	Reasons   []reasonCount
	Charts    struct {
		CostDaily, HoursDaily, Reasons, TimeToReap, Sessions, Labels template.HTML
	}
	Legend []legendItem
	// Groups are the report's groups by key (its providers).
	Groups map[string]reaper.ReportGroup
}

type liveRow struct {
	Provider string
	reaper.LiveCounts
}

type reasonCount struct {
	Reason string
	Count  int
}

type legendItem struct{ Name, Color string }

func (s *Server) page(w http.ResponseWriter, r *http.Request) {
	now := time.Now().UTC()
	q, err := ReportQuery(r.URL.Query(), now)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	q.GroupBy = reaper.GroupByProvider
	rep, err := s.Service.AuditReport(r.Context(), q)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	st, err := s.Service.Status(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	d := buildPage(rep, st, now)
	d.Query.Since, d.Query.Until, d.Query.Provider = r.URL.Query().Get("since"), r.URL.Query().Get("until"), r.URL.Query().Get("provider")
	var buf bytes.Buffer
	if err := pageTemplate.Execute(&buf, d); err != nil {
		s.fail(w, r, fmt.Errorf("render the page: %w", err))
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	// Nothing on the page comes from elsewhere, and nothing may.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	_, _ = w.Write(buf.Bytes())
}

func buildPage(rep *reaper.Report, st *reaper.EngineStatus, now time.Time) *pageData {
	d := &pageData{Report: rep, Status: st, Now: now, Groups: map[string]reaper.ReportGroup{}}
	for _, g := range rep.Groups {
		d.Groups[g.Key] = g
	}
	provs := map[string]bool{}
	for p := range rep.Live {
		provs[p] = true
	}
	for _, df := range rep.Daily {
		provs[df.Provider] = true
	}
	if st != nil {
		for p, ps := range st.Providers {
			if ps.Enabled {
				provs[p] = true
			}
		}
	}
	d.Providers = slices.Sorted(maps.Keys(provs))
	for _, p := range d.Providers {
		lc := rep.Live[p]
		d.Live = append(d.Live, liveRow{p, lc})
		d.LiveTotal.Running += lc.Running
		d.LiveTotal.Stopped += lc.Stopped
		d.LiveTotal.Closing += lc.Closing
		d.LiveTotal.Untracked += lc.Untracked
		d.Legend = append(d.Legend, legendItem{p, colorOf(p)})
	}
	for _, re := range reaper.ReapReasons {
		if n := rep.Total.Closes[re]; n > 0 {
			d.Reasons = append(d.Reasons, reasonCount{string(re), n})
		}
	}

	days := windowDays(rep.Since, rep.Until)
	cost := map[string]map[string]float64{}
	hrs := map[string]map[string]float64{}
	for _, df := range rep.Daily {
		if cost[df.Day] == nil {
			cost[df.Day], hrs[df.Day] = map[string]float64{}, map[string]float64{}
		}
		cost[df.Day][df.Provider] += df.Cost
		hrs[df.Day][df.Provider] += df.RunningHours + df.StoppedHours
	}
	d.Charts.CostDaily = stackedBars("Estimated cost per day, by provider", days, d.Providers, cost, reaper.FormatUSD)
	d.Charts.HoursDaily = stackedBars("Sandbox-hours per day, by provider", days, d.Providers, hrs,
		func(v float64) string { return reaper.FormatHours(v) + " h" })
	var reasons []bar
	for _, rc := range d.Reasons {
		reasons = append(reasons, bar{rc.Reason, float64(rc.Count), strconv.Itoa(rc.Count)})
	}
	d.Charts.Reasons = hbars("Closes by reason", reasons)
	var ttr []bar
	for _, b := range rep.TimeToReap {
		ttr = append(ttr, bar{b.Label, float64(b.Count), strconv.Itoa(b.Count)})
	}
	d.Charts.TimeToReap = vbars("Time to reap: from due to closed", ttr)
	var sessions, labels []bar
	for _, r := range rep.TopSessions {
		sessions = append(sessions, bar{r.Key, r.Cost, reaper.FormatUSD(r.Cost)})
	}
	for _, r := range rep.TopLabels {
		labels = append(labels, bar{r.Key, r.Cost, reaper.FormatUSD(r.Cost)})
	}
	d.Charts.Sessions = hbars("Top sessions by cost", sessions)
	d.Charts.Labels = hbars("Top labels by cost", labels)
	return d
}

// windowDays lists the UTC days the window touches, at most 92 (the
// last ones).
func windowDays(since, until time.Time) []string {
	var days []string
	y, m, dd := since.UTC().Date()
	for t := time.Date(y, m, dd, 0, 0, 0, 0, time.UTC); t.Before(until); t = t.AddDate(0, 0, 1) {
		days = append(days, t.Format(time.DateOnly))
	}
	if len(days) > 92 {
		days = days[len(days)-92:]
	}
	return days
}

var palette = map[string]string{"daytona": "#2563eb", "e2b": "#d97706", "modal": "#059669", "runloop": "#7c3aed"}

func colorOf(provider string) string {
	if c, ok := palette[provider]; ok {
		return c
	}
	return "#6b7280"
}

type bar struct {
	Label string
	Value float64
	Text  string
}

// esc escapes text for SVG.
func esc(s string) string { return template.HTMLEscapeString(s) }

// niceMax rounds a chart's top up to 1, 2 or 5 times a power of ten.
func niceMax(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

// stackedBars draws one stacked bar per day, one segment per provider.
func stackedBars(title string, days, providers []string, v map[string]map[string]float64, format func(float64) string) template.HTML {
	const w, h, left, bottom, top = 720, 220, 64, 40, 12
	var most float64
	for _, day := range days {
		var sum float64
		for _, p := range providers {
			sum += v[day][p]
		}
		most = max(most, sum)
	}
	top10 := niceMax(most)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg viewBox="0 0 %d %d" role="img" aria-label="%s" class="chart">`, w, h, esc(title))
	plotH := float64(h - bottom - top)
	for i := 0; i <= 4; i++ {
		y := float64(top) + plotH*float64(i)/4
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" class="grid"/>`, left, w, y, y)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" class="axis" text-anchor="end">%s</text>`, left-6, y+4, esc(format(top10*float64(4-i)/4)))
	}
	if len(days) == 0 {
		b.WriteString(`</svg>`)
		return template.HTML(b.String())
	}
	slot := float64(w-left) / float64(len(days))
	bw := max(slot*0.7, 1)
	every := max(1, len(days)/12)
	for i, day := range days {
		x := float64(left) + slot*float64(i) + (slot-bw)/2
		y := float64(h - bottom)
		for _, p := range providers {
			val := v[day][p]
			if val <= 0 {
				continue
			}
			bh := plotH * val / top10
			y -= bh
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %s</title></rect>`,
				x, y, bw, bh, colorOf(p), esc(day), esc(p), esc(format(val)))
		}
		if i%every == 0 {
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" class="axis" text-anchor="middle">%s</text>`, x+bw/2, h-bottom+16, esc(day[5:]))
		}
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// hbars draws labelled horizontal bars.
func hbars(title string, bars []bar) template.HTML {
	if len(bars) == 0 {
		return template.HTML(`<p class="empty">None in this window.</p>`)
	}
	const w, row, labelW, valueW = 720, 24, 240, 90
	h := row*len(bars) + 8
	most := barsMax(bars)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg viewBox="0 0 %d %d" role="img" aria-label="%s" class="chart">`, w, h, esc(title))
	for i, br := range bars {
		y := 4 + i*row
		bw := float64(w-labelW-valueW) * br.Value / most
		label := br.Label
		if len(label) > 36 {
			label = label[:35] + "…"
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" class="label" text-anchor="end">%s</text>`, labelW-8, y+16, esc(label))
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="%d" class="bar"><title>%s: %s</title></rect>`, labelW, y+3, max(bw, 1), row-8,
			esc(br.Label), esc(br.Text))
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" class="value">%s</text>`, float64(labelW)+max(bw, 1)+6, y+16, esc(br.Text))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// vbars draws labelled vertical bars.
func vbars(title string, bars []bar) template.HTML {
	const w, h, bottom, top = 720, 180, 28, 18
	most := barsMax(bars)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg viewBox="0 0 %d %d" role="img" aria-label="%s" class="chart">`, w, h, esc(title))
	if len(bars) == 0 {
		b.WriteString(`</svg>`)
		return template.HTML(b.String())
	}
	slot := float64(w) / float64(len(bars))
	plotH := float64(h - bottom - top)
	for i, br := range bars {
		bh := plotH * br.Value / most
		x := slot*float64(i) + slot*0.15
		y := float64(h-bottom) - bh
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" class="bar"><title>%s: %s</title></rect>`,
			x, y, slot*0.7, bh, esc(br.Label), esc(br.Text))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" class="value" text-anchor="middle">%s</text>`, x+slot*0.35, y-4, esc(br.Text))
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" class="axis" text-anchor="middle">%s</text>`, x+slot*0.35, h-bottom+16, esc(br.Label))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// barsMax is the largest value of bars (the scale of a chart); 1 when none
// is positive.
func barsMax(bars []bar) float64 {
	var most float64
	for _, b := range bars {
		most = max(most, b.Value)
	}
	if most <= 0 {
		return 1
	}
	return most
}
