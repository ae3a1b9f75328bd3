package main

import (
	"bufio"
	"strconv"

	"github.com/spf13/cobra"
)

func (m *Main) auditCommand() *cobra.Command {
	var (
		since, output string
		limit         int
		events        bool
	)
	c := &cobra.Command{
		Use:   "audit",
		Short: "Show the audit log: every registration, tag, close and release",
		Example: `  reaperd audit --since 24h
  reaperd audit --since 2026-01-01T00:00:00Z -o csv > audit.csv
  reaperd audit --since 30d --events > events.jsonl
  reaperd audit report --since 7d   # what sandboxes cost, by provider`,
		Args: exactArgs(0, ""),
		RunE: func(c *cobra.Command, _ []string) error {
			if err := outputFormat(output, "table", "csv", "json"); err != nil {
				return err
			}
			if limit < 0 {
				return usagef("--limit %d: use a whole number of zero (no limit) or more", limit)
			}
			if events {
				if output != "table" || limit != 0 {
					return usagef("--events writes JSON lines: it takes --since, not -o or --limit")
				}
				bw := bufio.NewWriterSize(m.Stdout, 64<<10)
				_, err := m.client().AuditEvents(c.Context(), since, 0, bw)
				if ferr := bw.Flush(); err == nil {
					err = ferr
				}
				return err
			}
			evs, err := m.client().Audit(c.Context(), since, limit)
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSONOut(m.Stdout, evs)
			}
			rows := make([][]string, 0, len(evs))
			for _, ev := range evs {
				actor := "reaperd"
				switch {
				case ev.ActorToken != "":
					actor = "token " + ev.ActorToken
				case ev.Actor != nil:
					actor = "uid " + strconv.FormatUint(uint64(*ev.Actor), 10)
				}
				detail := ev.Detail
				if ev.Error != "" {
					detail = ev.ErrorClass + ": " + ev.Error
				}
				rows = append(rows, []string{fmtTime(ev.Time), string(ev.Kind), orDash(ev.Key), orDash(ev.Session),
					actor, orDash(string(ev.Reason)), orDash(detail)})
			}
			return writeTable(m.Stdout, output, []string{"TIME", "EVENT", "SANDBOX", "SESSION", "ACTOR", "REASON", "DETAIL"}, rows)
		},
	}
	c.Flags().StringVar(&since, "since", "24h", "events since this long ago (24h, 7d) or this RFC 3339 time; \"\" for all")
	c.Flags().StringVarP(&output, "output", "o", "table", "output format: table, csv or json")
	completeFlag(c, "output", "table", "csv", "json")
	c.Flags().IntVar(&limit, "limit", 0, "at most this many events (the newest)")
	c.Flags().BoolVar(&events, "events", false, "stream the raw events as JSON lines, page by page, for import elsewhere")
	c.AddCommand(m.reportCommand())
	return c
}
