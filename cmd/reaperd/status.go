package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/reaperd/reaperd/reaper"
	"github.com/spf13/cobra"
)

func (m *Main) statusCommand() *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:   "status",
		Short: "Show the daemon's version, paths, schedule and providers",
		Args:  exactArgs(0, ""),
		RunE: func(c *cobra.Command, _ []string) error {
			if err := outputFormat(output, "text", "json"); err != nil {
				return err
			}
			st, err := m.client().Status(c.Context())
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSONOut(m.Stdout, st)
			}
			fmt.Fprintf(m.Stdout, "version:   %s\nstarted:   %s\nledger:    %s\nsocket:    %s\nschedule:  %s\nenabled:   %s\n",
				st.Version, fmtTime(st.StartedAt), st.Ledger, st.Socket, st.Schedule, orDash(strings.Join(st.Enabled, ", ")))
			for _, p := range slices.Sorted(maps.Keys(st.Disabled)) {
				fmt.Fprintf(m.Stdout, "disabled:  %s (%s)\n", p, st.Disabled[p])
			}
			if es := st.Engine; es != nil {
				writeEngineStatus(m, es)
			}
			return nil
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	completeFlag(c, "output", "text", "json")
	return c
}

// writeEngineStatus prints the engine's part of `reaperd status`.
func writeEngineStatus(m *Main, es *reaper.EngineStatus) {
	if es.LedgerError != "" {
		fmt.Fprintf(m.Stdout, "ledger:    UNHEALTHY: %s\n", es.LedgerError)
	}
	next := "-"
	if !es.NextDeadline.IsZero() {
		next = fmtTime(es.NextDeadline)
		if len(es.Upcoming) > 0 {
			next += " (" + es.Upcoming[0].Kind + " " + es.Upcoming[0].Key + ")"
		}
	}
	fmt.Fprintf(m.Stdout, "next:      %s\n", next)
	for _, d := range es.Upcoming[min(1, len(es.Upcoming)):] {
		fmt.Fprintf(m.Stdout, "           %s (%s %s)\n", fmtTime(d.At), d.Kind, d.Key)
	}
	for _, name := range slices.Sorted(maps.Keys(es.Providers)) {
		p := es.Providers[name]
		if !p.Enabled {
			if p.Credentials == "refused" {
				fmt.Fprintf(m.Stdout, "queue:     %s: DISABLED: %s\n", name, p.Hint)
			}
			continue
		}
		line := fmt.Sprintf("queue:     %s: %d queued, %d running", name, p.Queued, p.Running)
		if !p.PausedUntil.IsZero() {
			line += ", paused until " + fmtTime(p.PausedUntil)
		}
		if p.Credentials == "degraded" {
			line += ", credential check failed"
		}
		if p.Stuck > 0 {
			line += fmt.Sprintf(", %d STUCK (refused for good; release them)", p.Stuck)
		}
		if !p.OldestClosing.IsZero() {
			line += ", closing since " + fmtTime(p.OldestClosing)
		}
		if p.Confirming > 0 {
			line += fmt.Sprintf(", %d not-founds being confirmed", p.Confirming)
		}
		if p.Unverified > 0 {
			line += fmt.Sprintf(", %d UNVERIFIED (not visible to its credentials)", p.Unverified)
		}
		if p.LastError != "" {
			line += "; failing: " + p.LastError
		}
		fmt.Fprintln(m.Stdout, line)
	}
	if es.Quarantined > 0 {
		fmt.Fprintf(m.Stdout, "quarantined: %d undecodable ledger records, left alone (latest: %s); see `reaperd audit` for quarantined events\n",
			es.Quarantined, strings.Join(es.QuarantinedKeys, ", "))
	}
}
