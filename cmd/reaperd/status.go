package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"

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
			return nil
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return c
}
