package main

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/reaperd/reaperd/api"
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
			// Pages are printed as they come: memory stays bounded by a
			// page however large the ledger. A table aligns its columns
			// within each page.
			header := []string{"SANDBOX", "STATE", "SESSION", "TAGS", "EXPIRES", "LABELS", "NOTE"}
			bw := bufio.NewWriterSize(m.Stdout, 64<<10)
			defer bw.Flush()
			n := 0
			err := m.client().EntryPages(c.Context(), f, limit, func(page []api.EntryView) error {
				switch output {
				case "json":
					for _, e := range page {
						b, err := json.MarshalIndent(e, "  ", "  ")
						if err != nil {
							return err
						}
						sep := ",\n  "
						if n == 0 {
							sep = "[\n  "
						}
						n++
						bw.WriteString(sep)
						bw.Write(b)
					}
					return nil
				case "csv":
					rows := listRows(page, true)
					if n == 0 {
						rows = append([][]string{header}, rows...)
					}
					n += len(page)
					w := csv.NewWriter(bw)
					w.WriteAll(rows)
					return w.Error()
				}
				tw := tabwriter.NewWriter(bw, 0, 4, 2, ' ', 0)
				if n == 0 {
					fmt.Fprintln(tw, strings.Join(header, "\t"))
				}
				n += len(page)
				for _, r := range listRows(page, false) {
					fmt.Fprintln(tw, strings.Join(r, "\t"))
				}
				return tw.Flush()
			})
			if err != nil {
				return err
			}
			switch {
			case output == "json" && n == 0:
				bw.WriteString("[]\n")
			case output == "json":
				bw.WriteString("\n]\n")
			case output == "csv" && n == 0:
				w := csv.NewWriter(bw)
				w.Write(header)
				w.Flush()
			case output == "table" && n == 0:
				fmt.Fprintln(bw, "no sandboxes")
			}
			return bw.Flush()
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

// listRows formats entries for the table (relative expiry) or CSV
// (absolute times).
func listRows(ents []api.EntryView, csv bool) [][]string {
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
		if csv {
			expires = fmtTime(e.ExpiresAt)
		}
		note := ""
		switch e.State {
		case reaper.StateClosing:
			note = string(e.CloseReason)
			if !e.NotFoundAt.IsZero() {
				note += "; not found, confirming with the provider's listing"
			} else if !e.AcceptedAt.IsZero() {
				note += "; delete accepted, confirming with the provider's listing"
			} else if e.LastError != "" {
				note += "; attempt " + strconv.Itoa(e.Attempts) + ": " + e.LastError
			}
		case reaper.StateClosed, reaper.StateReleased:
			note = string(e.CloseReason) + " " + fmtTime(e.ClosedAt)
		}
		if e.Unverified && !e.State.Final() {
			note = strings.TrimPrefix(note+"; unverified: the provider's listing does not show it to reaperd's credentials", "; ")
		}
		clean := strings.NewReplacer("\t", " ", "\n", " ")
		rows = append(rows, []string{e.Key, string(e.State), orDash(e.Session), orDash(strings.Join(tags, ",")),
			expires, clean.Replace(fmtLabels(e.Labels)), clean.Replace(orDash(note))})
	}
	return rows
}
