package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/reaperd/reaperd/reaper"
	"github.com/spf13/cobra"
)

func (m *Main) listCommand() *cobra.Command {
	var (
		output, provider, session string
		states                    []string
		all                       bool
		limit                     int
	)
	c := &cobra.Command{
		Use:   "list",
		Short: "List registered sandboxes (active and closing unless --all or --state)",
		Example: `  reaperd list
  reaperd list --all -o json
  reaperd list --state closing --provider e2b`,
		Args: exactArgs(0, ""),
		RunE: func(c *cobra.Command, _ []string) error {
			if err := outputFormat(output, "table", "json", "csv"); err != nil {
				return err
			}
			f := reaper.EntryFilter{Provider: provider, Session: session}
			for _, s := range states {
				for _, p := range strings.Split(s, ",") {
					st := reaper.State(strings.TrimSpace(p))
					if !st.Valid() {
						return usagef("--state %q: use active, closing, closed or released", p)
					}
					f.States = append(f.States, st)
				}
			}
			if len(f.States) == 0 && !all {
				f.States = []reaper.State{reaper.StateActive, reaper.StateClosing}
			}
			if limit < 0 {
				return usagef("--limit %d: use a whole number of zero (no limit) or more", limit)
			}
			ents, err := m.client().Entries(c.Context(), f, limit)
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSONOut(m.Stdout, ents)
			}
			now := time.Now()
			rows := make([][]string, 0, len(ents))
			for _, e := range ents {
				tags := []string{}
				if e.Keep {
					tags = append(tags, "keep")
				}
				if e.Attached {
					tags = append(tags, "attached")
				}
				expires := fmtIn(e.ExpiresAt, now)
				if output == "csv" {
					expires = fmtTime(e.ExpiresAt)
				}
				note := ""
				switch e.State {
				case reaper.StateClosing:
					note = string(e.CloseReason)
					if !e.NotFoundAt.IsZero() {
						note += "; not found, confirming with the provider's listing"
					} else if e.LastError != "" {
						note += "; attempt " + strconv.Itoa(e.Attempts) + ": " + e.LastError
					}
				case reaper.StateClosed, reaper.StateReleased:
					note = string(e.CloseReason) + " " + fmtTime(e.ClosedAt)
				}
				if e.Unverified && !e.State.Final() {
					note = strings.TrimPrefix(note+"; unverified: the provider's listing does not show it to reaperd's credentials", "; ")
				}
				rows = append(rows, []string{e.Key, string(e.State), orDash(e.Session), orDash(strings.Join(tags, ",")),
					expires, fmtLabels(e.Labels), orDash(note)})
			}
			if output == "table" && len(rows) == 0 {
				fmt.Fprintln(m.Stdout, "no sandboxes")
				return nil
			}
			return writeTable(m.Stdout, output, []string{"SANDBOX", "STATE", "SESSION", "TAGS", "EXPIRES", "LABELS", "NOTE"}, rows)
		},
	}
	f := c.Flags()
	f.StringVarP(&output, "output", "o", "table", "output format: table, json or csv")
	completeFlag(c, "output", "table", "json", "csv")
	f.StringVar(&provider, "provider", "", "only this provider")
	completeFlag(c, "provider", providerNames...)
	f.StringVar(&session, "session", "", "only this session")
	f.StringSliceVar(&states, "state", nil, "only these states: active, closing, closed, released")
	completeFlag(c, "state", "active", "closing", "closed", "released")
	f.BoolVar(&all, "all", false, "include closed and released entries")
	f.IntVar(&limit, "limit", 0, "at most this many entries")
	return c
}
