package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// buildCommit returns the commit the binary was built from, when known.
func buildCommit() string {
	if commit != "" {
		return commit
	}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return s.Value[:12]
			}
		}
	}
	return ""
}

// buildVersion returns the version set at build time, else the module
// version go install recorded, else "dev".
func buildVersion() string {
	if version == "dev" {
		if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
			return info.Main.Version
		}
	}
	return version
}

func versionString() string {
	if c := buildCommit(); c != "" {
		return buildVersion() + " (" + c + ")"
	}
	return buildVersion()
}

// versionInfo is `reaperd version -o json`.
type versionInfo struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
	Arch      string `json:"arch"`
}

func (m *Main) versionCommand() *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:   "version",
		Short: "Print reaperd's version, commit and Go version",
		Example: `  reaperd version
  reaperd version -o json`,
		Args: exactArgs(0, ""),
		RunE: func(*cobra.Command, []string) error {
			if err := outputFormat(output, "text", "json"); err != nil {
				return err
			}
			if output == "json" {
				return writeJSONOut(m.Stdout, versionInfo{Version: buildVersion(), Commit: buildCommit(),
					GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH})
			}
			fmt.Fprintf(m.Stdout, "reaperd %s %s %s/%s\n", versionString(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	completeFlag(c, "output", "text", "json")
	return c
}
