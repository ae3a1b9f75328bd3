package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/reaperd/reaperd/providers/daytona/daytonatest"
	"github.com/reaperd/reaperd/providers/e2b/e2btest"
)

// quickstartBlocks returns the sh blocks of the README's Quickstart that
// use the CLI, in order.
func quickstartBlocks(t *testing.T) [][]string {
	t.Helper()
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	start := strings.Index(s, "## Quickstart")
	end := strings.Index(s[start+1:], "\n## ")
	if start < 0 || end < 0 {
		t.Fatal("README has no Quickstart section")
	}
	section := s[start : start+1+end]
	var blocks [][]string
	for _, m := range regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(section, -1) {
		lines := strings.Split(strings.TrimRight(m[1], "\n"), "\n")
		if strings.Contains(m[1], "reaperd register") {
			blocks = append(blocks, lines)
		}
	}
	if len(blocks) < 2 {
		t.Fatalf("found %d CLI blocks in the Quickstart, want 2", len(blocks))
	}
	return blocks
}

// TestReadmeQuickstart runs the Quickstart's CLI lines as written, in
// order, against a daemon behind the fakes (SANDBOX_ID standing for a
// sandbox the E2B fake holds), and checks the sample output it shows
// where the output does not depend on the time.
func TestReadmeQuickstart(t *testing.T) {
	const daytonaKey = "dtn_readme_key_0123456789"
	dy := daytonatest.NewServer(daytonaKey)
	t.Cleanup(dy.Close)
	fake := e2btest.NewServer(e2bKey)
	t.Cleanup(fake.Close)
	// The default schedule, as in the Quickstart.
	d := startDaemon(t, "", []string{"E2B_API_KEY=" + e2bKey, "E2B_API_URL=" + fake.URL,
		"DAYTONA_API_KEY=" + daytonaKey, "DAYTONA_API_URL=" + dy.URL})
	id := fake.Create(nil, time.Now().Add(-time.Hour))
	fields := func(s string) []string { return strings.Fields(s) }
	for bi, block := range quickstartBlocks(t) {
		var out string
		timeless := true
		for _, line := range block {
			line = strings.TrimSpace(strings.ReplaceAll(line, "SANDBOX_ID", id))
			switch {
			case line == "" || strings.HasPrefix(line, "alias "):
				continue
			case strings.HasPrefix(line, "sleep "):
				timeless = false // what follows depends on waiting: run it, compare nothing
				continue
			case strings.HasPrefix(line, "# "):
				if !timeless {
					continue
				}
				want := fields(strings.TrimPrefix(line, "# "))
				var got []string
				for _, l := range strings.Split(out, "\n") {
					if f := fields(l); len(f) > 0 && f[0] == want[0] {
						got = f
						break
					}
				}
				if got == nil {
					t.Errorf("block %d: no output line like %q in:\n%s", bi+1, line, out)
					continue
				}
				// Times ("in 52s") vary; everything else must match.
				for i := 0; i < len(want) && i < len(got); i++ {
					if strings.HasPrefix(want[i], "in") && i+1 < len(want) && strings.HasSuffix(want[i+1], "s") {
						break
					}
					if want[i] != got[i] {
						t.Errorf("block %d: output %q, README shows %q", bi+1, strings.Join(got, " "), strings.Join(want, " "))
						break
					}
				}
			case strings.HasPrefix(line, "reaperd "):
				cmd, _, _ := strings.Cut(line, "  #")
				args := fields(strings.TrimPrefix(cmd, "reaperd "))
				o, errOut, code := d.cli(args...)
				if code != 0 {
					t.Errorf("block %d: %s: exit %d: %s%s", bi+1, cmd, code, o, errOut)
				}
				out = o
			default:
				t.Errorf("block %d: a line this test does not know how to run: %q", bi+1, line)
			}
		}
	}
}
