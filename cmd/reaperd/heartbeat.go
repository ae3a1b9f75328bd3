package main

import (
	"fmt"
	"time"

	"github.com/reaperd/reaperd/reaper"
	"github.com/spf13/cobra"
)

func (m *Main) heartbeatCommand() *cobra.Command {
	var session, lease, output string
	c := &cobra.Command{
		Use:     "heartbeat",
		Short:   "Renew a session's lease",
		Example: `  reaperd heartbeat --session run-42`,
		Args:    exactArgs(0, ""),
		RunE: func(c *cobra.Command, _ []string) error {
			if session == "" {
				return usagef("heartbeat needs --session")
			}
			if err := outputFormat(output, "text", "json"); err != nil {
				return err
			}
			var d time.Duration
			if lease != "" {
				var err error
				if d, err = reaper.ParseDuration(lease); err != nil {
					return usagef("--lease: %v", err)
				}
			}
			s, err := m.client().Heartbeat(c.Context(), session, d)
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSONOut(m.Stdout, s)
			}
			if end := s.LeaseEnd(); !end.IsZero() {
				fmt.Fprintf(m.Stdout, "session %s renewed until %s\n", s.ID, fmtTime(end))
			} else {
				fmt.Fprintf(m.Stdout, "session %s renewed (no lease)\n", s.ID)
			}
			return nil
		},
	}
	c.Flags().StringVar(&session, "session", "", "session id (required)")
	c.Flags().StringVar(&lease, "lease", "", "also change the lease (e.g. 2m)")
	c.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	completeFlag(c, "output", "text", "json")
	return c
}
