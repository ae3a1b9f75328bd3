package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/reaperd/reaperd/ledger"
	"github.com/reaperd/reaperd/reaper"
	"github.com/spf13/cobra"
)

// ledgerCommand groups the tools for the ledger file: backup (from the
// running daemon), check and compact (offline).
func (m *Main) ledgerCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "ledger",
		Short: "Back up, check and compact the ledger file",
		Long: `Tools for the ledger file.

'reaperd ledger backup FILE' copies the ledger from the running daemon, which
keeps serving. 'reaperd ledger check FILE' and 'reaperd ledger compact FILE'
work on a file no daemon holds: a backup, or the ledger of a stopped daemon.`,
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unknown ledger command %q: use backup, check or compact", args[0])
			}
			return usagef("ledger needs a command: backup, check or compact (see 'reaperd ledger --help')")
		},
	}
	c.AddCommand(m.ledgerBackupCommand(), m.ledgerCheckCommand(), m.ledgerCompactCommand())
	return c
}

func (m *Main) ledgerBackupCommand() *cobra.Command {
	var force bool
	c := &cobra.Command{
		Use:   "backup FILE",
		Short: "Copy the running daemon's ledger to FILE",
		Long: `Copy the running daemon's ledger to FILE while it serves. The copy is the
ledger as one read transaction sees it: registrations committed before the
backup started are in it, later ones are not.

FILE appears only once the copy is complete, on disk and passes bbolt's
consistency check: a copy cut short leaves nothing behind. An existing FILE
is replaced only with --force. The ledger holds every user's registrations:
only root, the daemon's user and members of its admin_group may back it up.`,
		Args: ledgerArgs(1, 1, "the file to write"),
		RunE: func(c *cobra.Command, args []string) error {
			dest := args[0]
			cp, err := ledger.NewCopy(dest, force)
			if err != nil {
				return err
			}
			defer cp.Abort()
			n, err := m.client().Backup(c.Context(), cp)
			if err != nil {
				return fmt.Errorf("back up ledger: %w", err)
			}
			rep, err := cp.Commit()
			if err != nil {
				return err
			}
			fmt.Fprintf(m.Stdout, "backed up the ledger to %s (%s: %s, %s, %s)\n", dest, fmtSize(n),
				plural(rep.TotalEntries(), "entry", "entries"), plural(rep.Sessions, "session", "sessions"), plural(rep.Events, "event", "events"))
			if !rep.OK() {
				fmt.Fprintf(m.Stderr, "reaperd: warning: the ledger has %d problems in its indexes; see 'reaperd ledger check %s'\n",
					len(rep.Findings)+rep.Omitted, dest)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&force, "force", false, "replace FILE if it exists")
	return c
}

func (m *Main) ledgerCheckCommand() *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:   "check FILE",
		Short: "Check a ledger file no daemon holds",
		Long: `Check a ledger file no daemon holds: a backup, or the ledger of a stopped
daemon. A running daemon locks its ledger: stop it, or check a backup.

The check runs bbolt's consistency check of the file's pages, then reaperd's
own: every record decodes, every entry and session is in the indexes it
needs (deadlines, closing, in_flight, keep, session_members, processes, retire),
and every index key names a record that still qualifies for it.

Clean, it prints a summary and exits 0. Otherwise it prints one problem per
line, naming the bucket and the key, and exits 1. Keys left behind by
records the daemon quarantined are printed as notes: the daemon drops them.`,
		Args: ledgerArgs(1, 1, "the ledger file to check"),
		RunE: func(c *cobra.Command, args []string) error {
			if err := outputFormat(output, "text", "json"); err != nil {
				return err
			}
			rep, err := ledger.Check(args[0])
			if err != nil {
				return err
			}
			if output == "json" {
				if err := writeJSONOut(m.Stdout, rep); err != nil {
					return err
				}
			} else {
				writeCheckReport(m.Stdout, rep)
			}
			if !rep.OK() {
				return fmt.Errorf("ledger %s has %d problems", args[0], len(rep.Corrupt)+len(rep.Findings)+rep.Omitted)
			}
			return nil
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	completeFlag(c, "output", "text", "json")
	return c
}

// writeCheckReport prints a check's problems one per line, or its summary
// when there are none.
func writeCheckReport(w io.Writer, rep *ledger.CheckReport) {
	for _, s := range rep.Corrupt {
		fmt.Fprintf(w, "bbolt: %s\n", s)
	}
	for _, f := range rep.Findings {
		fmt.Fprintln(w, f)
	}
	if rep.Omitted > 0 {
		fmt.Fprintf(w, "... and %d more\n", rep.Omitted)
	}
	if !rep.OK() {
		return
	}
	fmt.Fprintf(w, "ledger %s: ok\n", rep.Path)
	fmt.Fprintf(w, "size:         %s (%d bytes)\n", fmtSize(rep.Size), rep.Size)
	fmt.Fprintf(w, "schema:       %d\n", rep.Schema)
	var states []string
	for _, st := range []reaper.State{reaper.StateActive, reaper.StateClosing, reaper.StateClosed, reaper.StateReleased} {
		states = append(states, fmt.Sprintf("%d %s", rep.Entries[st], st))
	}
	fmt.Fprintf(w, "entries:      %d (%s)\n", rep.TotalEntries(), strings.Join(states, ", "))
	fmt.Fprintf(w, "sessions:     %d\n", rep.Sessions)
	fmt.Fprintf(w, "events:       %d\n", rep.Events)
	fmt.Fprintf(w, "quarantined:  %d\n", rep.Quarantined)
	fmt.Fprintf(w, "untracked:    %d\n", rep.Untracked)
	if rep.Skipped != "" {
		fmt.Fprintf(w, "index checks: skipped: %s\n", rep.Skipped)
	}
	for _, f := range rep.Notes {
		fmt.Fprintf(w, "note: %s\n", f)
	}
}

func (m *Main) ledgerCompactCommand() *cobra.Command {
	var force bool
	c := &cobra.Command{
		Use:   "compact FILE [DEST]",
		Short: "Write a compacted copy of a ledger file no daemon holds",
		Long: `Write a compacted copy of a ledger file no daemon holds to DEST (default
FILE.compact): the same buckets and keys without the free pages that pruning
leaves. Stop the daemon first; it refuses a file a running daemon holds.

DEST appears only once complete, on disk and checked, with FILE's mode and
owner. An existing DEST is replaced only with --force; 'compact FILE FILE
--force' compacts in place. FILE is left as it is.`,
		Args: ledgerArgs(1, 2, "the ledger file and, optionally, where to write"),
		RunE: func(c *cobra.Command, args []string) error {
			src, dest := args[0], args[0]+".compact"
			if len(args) == 2 {
				dest = args[1]
			}
			res, err := ledger.Compact(src, dest, force)
			if err != nil {
				return err
			}
			pct := 100.0
			if res.Before > 0 {
				pct = 100 * float64(res.After) / float64(res.Before)
			}
			fmt.Fprintf(m.Stdout, "compacted %s (%s) into %s (%s, %.0f%%)\n", src, fmtSize(res.Before), dest, fmtSize(res.After), pct)
			if !res.Report.OK() {
				fmt.Fprintf(m.Stderr, "reaperd: warning: the ledger has %d problems in its indexes; see 'reaperd ledger check %s'\n",
					len(res.Report.Findings)+res.Report.Omitted, dest)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&force, "force", false, "replace DEST if it exists")
	return c
}

// ledgerArgs accepts min to max arguments, and otherwise returns a usage
// error naming what is needed.
func ledgerArgs(min, max int, what string) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) < min || len(args) > max {
			return usagef("%s needs %s (see '%s --help')", c.Name(), what, c.CommandPath())
		}
		return nil
	}
}

// fmtSize formats a byte count: "512 bytes", "1.2 MiB".
func fmtSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d bytes", n)
	}
	v, suffix := float64(n)/unit, "KiB"
	for _, s := range []string{"MiB", "GiB", "TiB"} {
		if v < unit {
			break
		}
		v, suffix = v/unit, s
	}
	return fmt.Sprintf("%.1f %s", v, suffix)
}
