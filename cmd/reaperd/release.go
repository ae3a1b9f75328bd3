package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func (m *Main) releaseCommand() *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:   "release PROVIDER/ID",
		Short: "Stop tracking a sandbox (its session closed it, or it must be left alone)",
		Args:  exactArgs(1, "a sandbox PROVIDER/ID"),
		RunE: func(c *cobra.Command, args []string) error {
			if err := outputFormat(output, "text", "json"); err != nil {
				return err
			}
			if err := keyArg(args[0]); err != nil {
				return err
			}
			ent, err := m.client().Release(c.Context(), args[0])
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSONOut(m.Stdout, ent)
			}
			if ent.State == "released" {
				fmt.Fprintf(m.Stdout, "released %s\n", ent.Key)
			} else {
				fmt.Fprintf(m.Stdout, "%s was already %s at %s\n", ent.Key, ent.State, fmtTime(ent.ClosedAt))
			}
			return nil
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	completeFlag(c, "output", "text", "json")
	return c
}
