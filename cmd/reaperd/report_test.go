package main

import (
	"strings"
	"testing"
)

func TestAuditReportBadInput(t *testing.T) {
	d := startDaemon(t, "", nil)
	for _, tc := range []struct {
		args     []string
		mentions string
	}{
		{[]string{"--group-by", "colour"}, "use provider, session, owner, reason, day or label:KEY"},
		{[]string{"-o", "xml"}, `-o "xml": use table, csv, json`},
		{[]string{"--since", "last week"}, `since="last week"`},
		{[]string{"--until", "later"}, `until="later"`},
		{[]string{"--since", "1d", "--until", "2d"}, "is not after since"},
		{[]string{"extra"}, "extra"},
	} {
		out, errOut, code := d.cli(append([]string{"audit", "report"}, tc.args...)...)
		if code != exitUsage || !strings.Contains(errOut, tc.mentions) || out != "" {
			t.Errorf("audit report %v: exit %d, stdout %q, stderr %q; want exit %d and an error mentioning %q",
				tc.args, code, out, errOut, exitUsage, tc.mentions)
		}
	}
	// An empty ledger gives an empty report, not an error.
	out := d.mustCLI("audit", "report")
	if !strings.Contains(out, "total") || !strings.Contains(out, "$0.00") {
		t.Errorf("report of an empty ledger:\n%s", out)
	}
}
