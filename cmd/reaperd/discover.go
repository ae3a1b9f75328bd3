package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func (m *Main) discoverCommand() *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:   "discover",
		Short: "List live sandboxes at every enabled provider that nobody registered",
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
			for _, u := range res.Untracked {
				rows = append(rows, []string{u.Provider + "/" + u.Sandbox.ID, fmtTime(u.Sandbox.CreatedAt), orDash(u.Sandbox.State), fmtLabels(u.Sandbox.Labels)})
			}
			if output == "table" && len(rows) == 0 {
				fmt.Fprintln(m.Stdout, "no untracked sandboxes")
			} else if err := writeTable(m.Stdout, output, []string{"SANDBOX", "CREATED", "STATE", "LABELS"}, rows); err != nil {
				return err
			}
			for p, e := range res.Errors {
				fmt.Fprintf(m.Stderr, "discovery failed for %s: %s\n", p, e)
			}
			if len(res.Errors) > 0 {
				return fmt.Errorf("discovery failed for %d provider(s)", len(res.Errors))
			}
			return nil
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "table", "output format: table, json or csv")
	return c
}
