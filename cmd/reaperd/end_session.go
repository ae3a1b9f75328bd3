package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func (m *Main) endSessionCommand() *cobra.Command {
	var session, output string
	c := &cobra.Command{
		Use:     "end-session",
		Short:   "End a session: close its remaining sandboxes, release attached ones",
		Example: `  reaperd end-session --session run-42`,
		Args:    exactArgs(0, ""),
		RunE: func(c *cobra.Command, _ []string) error {
			if session == "" {
				return usagef("end-session needs --session")
			}
			if err := outputFormat(output, "text", "json"); err != nil {
				return err
			}
			res, err := m.client().EndSession(c.Context(), session)
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSONOut(m.Stdout, res)
			}
			fmt.Fprintf(m.Stdout, "session %s ended at %s\n", res.Session.ID, fmtTime(res.Session.EndedAt))
			for _, it := range res.Items {
				switch it.Action {
				case "close":
					fmt.Fprintf(m.Stdout, "  closing  %s\n", it.Key)
				case "release":
					fmt.Fprintf(m.Stdout, "  released %s (attached: left running)\n", it.Key)
				case "skip":
					fmt.Fprintf(m.Stdout, "  kept     %s (%s)\n", it.Key, it.Reason)
				}
			}
			return nil
		},
	}
	c.Flags().StringVar(&session, "session", "", "session id (required)")
	c.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	completeFlag(c, "output", "text", "json")
	return c
}
