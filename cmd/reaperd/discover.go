package main

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/reaperd/reaperd/reaper"
)

func (m *Main) discoverCommand() *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:   "discover",
		Short: "List live sandboxes that nobody registered, with the adoption rule each matches",
		Args:  exactArgs(0, ""),
		RunE: func(c *cobra.Command, _ []string) error {
			if err := outputFormat(output, "table", "json", "csv"); err != nil {
				return err
			}
			res, err := m.client().Discover(c.Context())
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSONOut(m.Stdout, res)
			}
			rows := make([][]string, 0, len(res.Untracked))
			managed, adopted := 0, 0
			for _, u := range res.Untracked {
				rule := "-"
				if u.Rule != "" {
					rule = u.Rule + " (" + string(u.Action) + ")"
				}
				what := u.Note
				switch {
				case u.Adopted:
					what = "adopted: closing"
					adopted++
				case what == "" && u.Rule != "" && u.Action == reaper.AdoptReport:
					what = "reported only"
				}
				if u.Managed {
					managed++
				}
				age := reaper.FormatAge(time.Duration(u.Age))
				if u.AgeFrom == "first-seen" {
					age += " (seen)"
				}
				rows = append(rows, []string{u.Provider + "/" + u.Sandbox.ID, orDash(u.Sandbox.Name), orDash(u.Sandbox.State), age,
					rule, orDash(what), fmtLabels(u.Sandbox.Labels)})
			}
			if output == "table" && len(rows) == 0 && len(res.Errors) == 0 {
				fmt.Fprintln(m.Stdout, "no untracked sandboxes")
			} else if output == "table" && len(rows) == 0 {
				// Say nothing about what could not be listed.
			} else if err := writeTable(m.Stdout, output, []string{"SANDBOX", "NAME", "STATE", "AGE", "RULE", "OUTCOME", "LABELS"}, rows); err != nil {
				return err
			}
			if output == "table" && len(rows) > 0 {
				fmt.Fprintf(m.Stderr, "%d untracked, %d adopted", len(rows), adopted)
				if managed > 0 {
					fmt.Fprintf(m.Stderr, "; %d labelled %s=true: another reaperd (another host?) tracks them, or their agents failed to register", managed, reaper.LabelManaged)
				}
				fmt.Fprintln(m.Stderr)
			}
			for _, p := range slices.Sorted(maps.Keys(res.Errors)) {
				fmt.Fprintf(m.Stderr, "discovery failed for %s: %s\n", p, res.Errors[p])
			}
			if len(res.Errors) > 0 {
				return fmt.Errorf("discovery failed for %d provider(s)", len(res.Errors))
			}
			return nil
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "table", "output format: table, json or csv")
	completeFlag(c, "output", "table", "json", "csv")
	return c
}
