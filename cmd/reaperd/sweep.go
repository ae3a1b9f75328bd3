package main

import (
	"errors"
	"fmt"
	"github.com/reaperd/reaperd/reaper"
	"maps"
	"slices"
	"time"

	"github.com/spf13/cobra"
)

func (m *Main) sweepCommand() *cobra.Command {
	var (
		dryRun bool
		output string
	)
	c := &cobra.Command{
		Use:   "sweep",
		Short: "Close every due sandbox now (--dry-run: only say what would be closed and why)",
		Args:  exactArgs(0, ""),
		RunE: func(c *cobra.Command, _ []string) error {
			if err := outputFormat(output, "table", "json"); err != nil {
				return err
			}
			rep, err := m.client().Sweep(c.Context(), dryRun)
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSONOut(m.Stdout, rep)
			}
			if len(rep.Items) == 0 {
				if dryRun {
					fmt.Fprintf(m.Stdout, "nothing is due (%s not due yet)\n", plural(rep.Waiting, "sandbox", "sandboxes"))
				} else {
					fmt.Fprintln(m.Stdout, "nothing was due")
				}
			} else {
				rows := make([][]string, 0, len(rep.Items))
				for _, it := range rep.Items {
					action := it.Action
					if dryRun && (action == "close" || action == "retry" || action == "release") {
						action = "would " + action
					}
					detail := it.Detail
					if it.Error != "" {
						detail = it.Error
					}
					rows = append(rows, []string{it.Key, action, orDash(string(it.Reason)), orDash(it.Result), orDash(detail)})
				}
				if err := writeTable(m.Stdout, "table", []string{"SANDBOX", "ACTION", "REASON", "RESULT", "DETAIL"}, rows); err != nil {
					return err
				}
				if dryRun {
					fmt.Fprintf(m.Stdout, "dry run: nothing was changed (%s not due yet)\n", plural(rep.Waiting, "more sandbox", "more sandboxes"))
				}
			}
			for _, u := range rep.Untracked {
				what := "untracked"
				if u.Adopted {
					what = "adopted (" + u.Rule + ")"
				}
				fmt.Fprintf(m.Stdout, "%s: %s/%s (%s old, %s)\n", what, u.Provider, u.Sandbox.ID, reaper.FormatAge(time.Duration(u.Age)), orDash(u.Sandbox.State))
			}
			if more := rep.UntrackedTotal - len(rep.Untracked); more > 0 {
				fmt.Fprintf(m.Stdout, "and %s more untracked: `reaperd discover` lists every one\n", plural(more, "sandbox", "sandboxes"))
			}
			for _, p := range slices.Sorted(maps.Keys(rep.DiscoveryErrors)) {
				fmt.Fprintf(m.Stderr, "discovery failed for %s: %s\n", p, oneLine(errors.New(rep.DiscoveryErrors[p])))
			}
			if n := len(rep.DiscoveryErrors); n > 0 {
				return fmt.Errorf("the sweep ran, but discovery failed for %s: see above", plural(n, "provider", "providers"))
			}
			return nil
		},
	}
	c.Flags().BoolVar(&dryRun, "dry-run", false, "report what would be closed and why; change nothing")
	c.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	completeFlag(c, "output", "table", "json")
	return c
}
