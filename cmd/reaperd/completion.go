package main

import (
	"strings"

	"github.com/spf13/cobra"
)

// completeFlag makes the shell complete flag name of c to one of words
// (`reaperd completion bash|zsh|fish` installs the scripts). A value
// holding commas, for flags that take lists (--state active,closing),
// completes its last element.
func completeFlag(c *cobra.Command, name string, words ...string) {
	err := c.RegisterFlagCompletionFunc(name, func(_ *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		done, last := "", toComplete
		if i := strings.LastIndexByte(toComplete, ','); i >= 0 {
			done, last = toComplete[:i+1], toComplete[i+1:]
		}
		var out []cobra.Completion
		for _, w := range words {
			if strings.HasPrefix(w, last) && !strings.Contains(","+done, ","+w+",") {
				out = append(out, done+w)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	})
	if err != nil {
		panic("reaperd: completion for --" + name + ": " + err.Error())
	}
}
