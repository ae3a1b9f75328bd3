package main

import (
	"fmt"

	"github.com/reaperd/reaperd/reaper"
	"github.com/spf13/cobra"
)

func (m *Main) tagCommand() *cobra.Command {
	var (
		keep, attached bool
		labels         []string
		ttl, output    string
	)
	c := &cobra.Command{
		Use:   "tag PROVIDER/ID",
		Short: "Change a sandbox's keep and attached tags, its expiry or its labels",
		Long: `Change a sandbox's keep and attached tags, its expiry or its labels.

Removing keep (or attached) from a sandbox that has neither a ttl nor a
session would leave nothing that could ever close it: give --ttl with the
change (the daemon's default_ttl applies otherwise, if it has one).`,
		Example: `  reaperd tag daytona/7f3c2a --keep
  reaperd tag daytona/7f3c2a --keep=false --attached=true
  reaperd tag e2b/i9x2k --keep=false --ttl 2h
  reaperd tag e2b/i9x2k --label owner=ana --label stale=`,
		Args: exactArgs(1, "a sandbox PROVIDER/ID"),
		RunE: func(c *cobra.Command, args []string) error {
			if err := outputFormat(output, "text", "json"); err != nil {
				return err
			}
			if err := keyArg(args[0]); err != nil {
				return err
			}
			var req reaper.TagRequest
			if c.Flags().Changed("keep") {
				req.Keep = &keep
			}
			if c.Flags().Changed("attached") {
				req.Attached = &attached
			}
			if ttl != "" {
				d, err := reaper.ParseDuration(ttl)
				if err != nil {
					return usagef("--ttl: %v", err)
				}
				if d == 0 {
					return usagef("--ttl 0 would close the sandbox at once: give a positive duration")
				}
				req.TTL = reaper.Duration(d)
			}
			var err error
			if req.Labels, err = parseLabels(labels); err != nil {
				return err
			}
			if req.Keep == nil && req.Attached == nil && req.Labels == nil && req.TTL == 0 {
				return usagef("tag needs --keep, --attached, --ttl or --label")
			}
			ent, err := m.client().Tag(c.Context(), args[0], req)
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSONOut(m.Stdout, ent)
			}
			expires := "never"
			if !ent.ExpiresAt.IsZero() {
				expires = fmtTime(ent.ExpiresAt)
			}
			fmt.Fprintf(m.Stdout, "%s: keep=%t attached=%t expires=%s labels=%s\n", ent.Key, ent.Keep, ent.Attached, expires, fmtLabels(ent.Labels))
			return nil
		},
	}
	c.Flags().BoolVar(&keep, "keep", false, "never close the sandbox (--keep=false to undo)")
	c.Flags().BoolVar(&attached, "attached", false, "the session did not create the sandbox: never close it")
	c.Flags().StringVar(&ttl, "ttl", "", "make the sandbox expire this long from now (30m, 2h, 7d)")
	c.Flags().StringArrayVar(&labels, "label", nil, "set label key=value; key= removes it (repeatable)")
	c.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	completeFlag(c, "output", "text", "json")
	return c
}
