package main

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// complete runs cobra's hidden __complete command, as the shell scripts of
// `reaperd completion bash|zsh|fish` do, and returns the suggestions and
// the directive.
func complete(t *testing.T, args ...string) ([]string, cobra.ShellCompDirective) {
	t.Helper()
	out, errOut, code := runCLI("", append([]string{cobra.ShellCompRequestCmd}, args...)...)
	if code != 0 {
		t.Fatalf("reaperd __complete %q: exit %d: %s", args, code, errOut)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, ":") {
		t.Fatalf("reaperd __complete %q: no directive line in %q", args, out)
	}
	d, err := strconv.Atoi(last[1:])
	if err != nil {
		t.Fatalf("reaperd __complete %q: directive %q: %v", args, last, err)
	}
	return lines[:len(lines)-1], cobra.ShellCompDirective(d)
}

func TestFlagCompletion(t *testing.T) {
	cases := []struct {
		args []string
		want []string
	}{
		{[]string{"list", "-o", ""}, []string{"table", "json", "csv"}},
		{[]string{"list", "--output", "j"}, []string{"json"}},
		{[]string{"list", "--state", ""}, []string{"active", "closing", "closed", "released"}},
		{[]string{"list", "--state", "clo"}, []string{"closing", "closed"}},
		// A list completes its last element, without repeating one given.
		{[]string{"list", "--state", "active,"}, []string{"active,closing", "active,closed", "active,released"}},
		{[]string{"list", "--state", "closed,c"}, []string{"closed,closing"}},
		{[]string{"list", "--provider", ""}, []string{"daytona", "e2b", "modal", "runloop"}},
		{[]string{"list", "--provider=m"}, []string{"modal"}},
		{[]string{"list", "--provider", "x"}, nil},
		{[]string{"audit", "-o", ""}, []string{"table", "csv", "json"}},
		{[]string{"discover", "-o", ""}, []string{"table", "json", "csv"}},
		{[]string{"sweep", "-o", ""}, []string{"table", "json"}},
		{[]string{"status", "-o", ""}, []string{"text", "json"}},
		{[]string{"version", "-o", ""}, []string{"text", "json"}},
		{[]string{"register", "e2b/x", "-o", ""}, []string{"text", "json"}},
		{[]string{"serve", "--log-level", ""}, []string{"debug", "info", "warn", "error"}},
	}
	for _, tc := range cases {
		got, dir := complete(t, tc.args...)
		if !slices.Equal(got, tc.want) {
			t.Errorf("reaperd %s<TAB> = %q, want %q", strings.Join(tc.args, " "), got, tc.want)
		}
		if dir != cobra.ShellCompDirectiveNoFileComp {
			t.Errorf("reaperd %s<TAB>: directive %d, want %d (no file names)", strings.Join(tc.args, " "), dir, cobra.ShellCompDirectiveNoFileComp)
		}
	}
}

// TestEveryOutputFlagCompletes checks that every subcommand's -o completes,
// to the formats its help names, so that a new subcommand cannot forget it.
func TestEveryOutputFlagCompletes(t *testing.T) {
	root := NewMain().rootCommand()
	n := 0
	for _, c := range root.Commands() {
		f := c.Flags().Lookup("output")
		if f == nil {
			continue
		}
		n++
		got, _ := complete(t, c.Name(), "-o", "")
		if len(got) == 0 {
			t.Errorf("reaperd %s -o<TAB> suggests nothing", c.Name())
			continue
		}
		// "output format: table, json or csv"
		_, list, ok := strings.Cut(f.Usage, "output format: ")
		if !ok {
			t.Errorf("reaperd %s -o: help %q does not list the formats", c.Name(), f.Usage)
			continue
		}
		want := strings.FieldsFunc(strings.ReplaceAll(list, " or ", ","), func(r rune) bool { return r == ',' || r == ' ' })
		if !slices.Equal(got, want) {
			t.Errorf("reaperd %s -o<TAB> = %q, want the formats its help names, %q", c.Name(), got, want)
		}
	}
	if n < 5 {
		t.Fatalf("found %d subcommands with -o; the command tree is not what this test expects", n)
	}
}
