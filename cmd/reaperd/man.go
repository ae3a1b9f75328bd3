package main

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// manCommand writes reaperd's man pages, section 1, generated from the
// command tree: reaperd.1 and one page per subcommand. Hidden: it is for
// packagers (make man), not for operators.
func (m *Main) manCommand() *cobra.Command {
	return &cobra.Command{
		Use:    "man DIR",
		Short:  "Write reaperd's man pages (section 1) into DIR",
		Hidden: true,
		Args:   exactArgs(1, "the directory to write into"),
		RunE: func(c *cobra.Command, args []string) error {
			dir := args[0]
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			// The date on the pages: SOURCE_DATE_EPOCH, so that the same
			// source yields the same pages, else today.
			date := time.Now()
			if s := m.Getenv("SOURCE_DATE_EPOCH"); s != "" {
				sec, err := strconv.ParseInt(s, 10, 64)
				if err != nil {
					return usagef("SOURCE_DATE_EPOCH=%q: want seconds since 1970", s)
				}
				date = time.Unix(sec, 0).UTC()
			}
			root := c.Root()
			root.DisableAutoGenTag = true
			header := &doc.GenManHeader{
				Section: "1",
				Date:    &date,
				Source:  "reaperd " + buildVersion(),
				Manual:  "reaperd manual",
			}
			if err := doc.GenManTree(root, header, dir); err != nil {
				return fmt.Errorf("write man pages: %w", err)
			}
			return nil
		},
	}
}
