package main

import (
	"encoding/json"
	"runtime"
	"strings"
	"testing"
)

// The version a build sets with -ldflags is checked on a built binary by
// the packaging test (deploy/); these check the two output formats.
func TestVersionOutput(t *testing.T) {
	out, errOut, code := runCLI("", "version")
	if code != 0 {
		t.Fatalf("reaperd version: exit %d: %s", code, errOut)
	}
	want := "reaperd " + versionString() + " " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + "\n"
	if out != want {
		t.Errorf("reaperd version = %q, want %q", out, want)
	}

	out, errOut, code = runCLI("", "version", "-o", "json")
	if code != 0 {
		t.Fatalf("reaperd version -o json: exit %d: %s", code, errOut)
	}
	var v map[string]string
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("reaperd version -o json: %v\n%s", err, out)
	}
	wantJSON := map[string]string{"version": buildVersion(), "commit": buildCommit(), "go_version": runtime.Version(),
		"os": runtime.GOOS, "arch": runtime.GOARCH}
	if len(v) != len(wantJSON) {
		t.Errorf("reaperd version -o json = %v, want the keys of %v", v, wantJSON)
	}
	for k, w := range wantJSON {
		if v[k] != w {
			t.Errorf("reaperd version -o json: %s = %q, want %q", k, v[k], w)
		}
	}

	if _, errOut, code := runCLI("", "version", "-o", "yaml"); code != exitUsage || !strings.Contains(errOut, "text, json") {
		t.Errorf("reaperd version -o yaml: exit %d, %q; want exit %d naming text, json", code, errOut, exitUsage)
	}
}
