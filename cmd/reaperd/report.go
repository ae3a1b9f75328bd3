package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/reaperd/reaperd/reaper"
	"github.com/spf13/cobra"
)

func (m *Main) reportCommand() *cobra.Command {
	var since, until, provider, groupBy, output string
	c := &cobra.Command{
		Use:   "report",
		Short: "Cost report from the audit log: sandbox-hours, estimated cost, what reaperd reaped and saved",
		Long: `Report what sandboxes ran in a window, for how long, running or stopped,
and what they cost at the configured prices; what reaperd closed, by reason,
how fast, and what that saved; protected (keep, attached) sandboxes still
running and untracked ones with their cost so far.

The figures come from the audit log alone: the same window always gives the
same figures, and adjacent windows add up. Costs are estimates from list
prices (see [prices] in the README); a provider without prices shows hours,
not dollars.`,
		Example: `  reaperd audit report --since 7d
  reaperd audit report --since 2026-11-23 --until 2026-11-30 --group-by day
  reaperd audit report --since 30d --group-by label:team -o csv > cost.csv
  reaperd audit report --provider e2b --group-by session -o json`,
		Args: exactArgs(0, ""),
		RunE: func(c *cobra.Command, _ []string) error {
			if err := outputFormat(output, "table", "csv", "json"); err != nil {
				return err
			}
			if _, err := reaper.ParseGroupBy(groupBy); err != nil {
				return usageError{err}
			}
			rep, err := m.client().AuditReport(c.Context(), since, until, provider, groupBy)
			if err != nil {
				return err
			}
			switch output {
			case "json":
				return writeJSONOut(m.Stdout, rep)
			case "csv":
				return writeTable(m.Stdout, "csv", reportCSVHeader(), reportCSVRows(rep))
			}
			return writeReport(m.Stdout, rep)
		},
	}
	c.Flags().StringVar(&since, "since", "7d", "start of the window: a duration before now (7d), a date (2026-11-23) or an RFC 3339 time")
	c.Flags().StringVar(&until, "until", "", "end of the window, in the same forms; empty for now")
	c.Flags().StringVar(&provider, "provider", "", "only this provider's sandboxes")
	c.Flags().StringVar(&groupBy, "group-by", "provider", "group by provider, session, owner, reason, day or label:KEY")
	c.Flags().StringVarP(&output, "output", "o", "table", "output format: table, csv or json")
	completeFlag(c, "output", "table", "csv", "json")
	completeFlag(c, "group-by", "provider", "session", "owner", "reason", "day", "label:")
	completeFlag(c, "provider", providerNames...)
	return c
}

func reportCSVHeader() []string {
	h := []string{"group", "sandboxes", "running_hours", "stopped_hours", "unpriced_hours", "cost_usd", "reaped", "saved_usd", "stuck",
		"reap_count", "reap_p50_seconds", "reap_p90_seconds", "reap_p99_seconds", "reap_max_seconds",
		"protected_running", "protected_cost_usd", "untracked", "untracked_hours", "untracked_cost_usd"}
	for _, r := range reaper.ReapReasons {
		h = append(h, "closes_"+strings.ReplaceAll(string(r), "-", "_"))
	}
	return h
}

func reportCSVRows(rep *reaper.Report) [][]string {
	num := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	money := func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }
	row := func(g reaper.ReportGroup) []string {
		r := []string{g.Key, strconv.Itoa(g.Sandboxes), reaper.FormatHours(g.RunningHours), reaper.FormatHours(g.StoppedHours),
			reaper.FormatHours(g.UnpricedHours), money(g.Cost), strconv.Itoa(g.Reaped), money(g.Saved), strconv.Itoa(g.Stuck),
			strconv.Itoa(g.TimeToReap.Count), num(g.TimeToReap.P50), num(g.TimeToReap.P90), num(g.TimeToReap.P99), num(g.TimeToReap.Max),
			strconv.Itoa(g.ProtectedRunning), money(g.ProtectedCost), strconv.Itoa(g.Untracked), reaper.FormatHours(g.UntrackedHours),
			money(g.UntrackedCost)}
		for _, re := range reaper.ReapReasons {
			r = append(r, strconv.Itoa(g.Closes[re]))
		}
		return r
	}
	rows := make([][]string, 0, len(rep.Groups)+1)
	for _, g := range rep.Groups {
		rows = append(rows, row(g))
	}
	return append(rows, row(rep.Total))
}

// writeReport writes the report as tables a person reads.
func writeReport(w io.Writer, rep *reaper.Report) error {
	by := string(rep.GroupBy)
	scope := "all providers"
	if rep.Provider != "" {
		scope = rep.Provider
	}
	fmt.Fprintf(w, "Cost report %s to %s, %s, by %s (USD, estimates)\n\n", fmtTime(rep.Since), fmtTime(rep.Until), scope, by)
	header := []string{strings.ToUpper(by), "SANDBOXES", "RUNNING H", "STOPPED H", "COST", "REAPED", "SAVED", "STUCK",
		"REAP P50", "REAP P99", "PROTECTED", "PROTECTED COST", "UNTRACKED", "UNTRACKED COST"}
	unpriced := rep.Total.UnpricedHours > 0
	if unpriced {
		header = slices.Insert(header, 5, "UNPRICED H")
	}
	row := func(g reaper.ReportGroup) []string {
		r := []string{g.Key, strconv.Itoa(g.Sandboxes), reaper.FormatHours(g.RunningHours), reaper.FormatHours(g.StoppedHours),
			reaper.FormatUSD(g.Cost), strconv.Itoa(g.Reaped), reaper.FormatUSD(g.Saved), strconv.Itoa(g.Stuck),
			reaper.FormatSeconds(g.TimeToReap.Count, g.TimeToReap.P50), reaper.FormatSeconds(g.TimeToReap.Count, g.TimeToReap.P99),
			strconv.Itoa(g.ProtectedRunning), reaper.FormatUSD(g.ProtectedCost), strconv.Itoa(g.Untracked), reaper.FormatUSD(g.UntrackedCost)}
		if unpriced {
			r = slices.Insert(r, 5, reaper.FormatHours(g.UnpricedHours))
		}
		return r
	}
	var rows [][]string
	for _, g := range rep.Groups {
		rows = append(rows, row(g))
	}
	rows = append(rows, row(rep.Total))
	if err := writeTable(w, "table", header, rows); err != nil {
		return err
	}

	// Closes by reason: only the reasons that occurred.
	var reasons []reaper.Reason
	for _, re := range reaper.ReapReasons {
		if rep.Total.Closes[re] > 0 {
			reasons = append(reasons, re)
		}
	}
	if len(reasons) > 0 {
		fmt.Fprintln(w, "\nCloses by reason (gone: deleted by someone else; released: by the session itself)")
		h := []string{strings.ToUpper(by)}
		for _, re := range reasons {
			h = append(h, string(re))
		}
		var rows [][]string
		for _, g := range append(slices.Clone(rep.Groups), rep.Total) {
			r := []string{g.Key}
			for _, re := range reasons {
				r = append(r, strconv.Itoa(g.Closes[re]))
			}
			rows = append(rows, r)
		}
		if err := writeTable(w, "table", h, rows); err != nil {
			return err
		}
	}
	if len(rep.Protected) > 0 {
		fmt.Fprintln(w, "\nProtected sandboxes still running (keep, attached)")
		if err := writeTable(w, "table", []string{"SANDBOX", "SESSION", "TAG", "STATE", "SINCE", "AGE", "COST SO FAR"}, sandboxRows(rep.Protected, true)); err != nil {
			return err
		}
	}
	if len(rep.Untracked) > 0 {
		fmt.Fprintln(w, "\nUntracked sandboxes still listed (nobody registered them)")
		if err := writeTable(w, "table", []string{"SANDBOX", "STATE", "FIRST SEEN", "AGE", "COST SO FAR"}, sandboxRows(rep.Untracked, false)); err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "\nSaved: what each reaped sandbox would have cost until its provider's own cleanup, at most %s each:\n", reaper.FormatAge(time.Duration(rep.Horizon)))
	for _, p := range slices.Sorted(maps.Keys(rep.SavedRule)) {
		fmt.Fprintf(w, "  %s: %s\n", p, rep.SavedRule[p])
	}
	fmt.Fprintln(w, "Prices:")
	for _, p := range slices.Sorted(maps.Keys(rep.Prices)) {
		fmt.Fprintf(w, "  %s: %s\n", p, rep.Prices[p].Source)
	}
	for _, p := range slices.Sorted(maps.Keys(rep.Unpriced)) {
		fmt.Fprintf(w, "  %s: hours only: %s\n", p, rep.Unpriced[p])
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "Note: %s\n", n)
	}
	return nil
}

func sandboxRows(sbs []reaper.ReportSandbox, tags bool) [][]string {
	var rows [][]string
	for _, s := range sbs {
		cost := reaper.FormatUSD(s.Cost)
		if !s.Priced {
			cost = "unpriced"
		}
		if !tags {
			rows = append(rows, []string{s.Key, string(s.RunState), fmtTime(s.Since), reaper.FormatAge(time.Duration(s.Age)), cost})
			continue
		}
		tag := "keep"
		if s.Attached {
			tag = "attached"
		}
		rows = append(rows, []string{s.Key, orDash(s.Session), tag, string(s.RunState), fmtTime(s.Since), reaper.FormatAge(time.Duration(s.Age)), cost})
	}
	return rows
}
