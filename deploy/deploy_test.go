// Package deploy holds what installs and runs reaperd: the systemd units,
// the sysusers file, the example config and the package definition. Its
// test builds the .deb with the Makefile, as a release would, and checks
// what the package installs, and what `make install` and `make uninstall`
// do.
package deploy

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

const (
	testVersion = "v1.2.3-4-gabcdef0"
	testCommit  = "abcdef012345"
	// 2023-11-14T22:13:20Z: the date packaged files and man pages carry.
	testEpoch = "1700000000"
)

// need skips the test when a tool is missing, except in CI, where it fails.
func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is needed to test the packages: %v", tool, err)
			}
			t.Skipf("%s is needed to test the packages: %v", tool, err)
		}
	}
}

func run(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TZ=UTC", "LC_ALL=C")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// units returns the unit files deploy/systemd ships.
func units(t *testing.T) []string {
	var names []string
	for _, pat := range []string{"systemd/*.service", "systemd/*.socket"} {
		m, err := filepath.Glob(pat)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range m {
			names = append(names, filepath.Base(p))
		}
	}
	if !slices.Contains(names, "reaperd.service") {
		t.Fatalf("deploy/systemd has no reaperd.service: %q", names)
	}
	return names
}

type debFile struct{ mode, owner, date string }

// debList parses `dpkg-deb -c`: "-rwxr-xr-x root/root 123 2023-11-14 22:13 ./usr/bin/reaperd".
func debList(t *testing.T, listing string) map[string]debFile {
	files := map[string]debFile{}
	for _, line := range strings.Split(strings.TrimSpace(listing), "\n") {
		f := strings.Fields(line)
		if len(f) != 6 {
			t.Fatalf("dpkg-deb -c: unexpected line %q", line)
		}
		files[f[5]] = debFile{mode: f[0], owner: f[1], date: f[3]}
	}
	return files
}

// TestPackageVersion checks the package version make derives from git
// describe's, without building anything (make -n).
func TestPackageVersion(t *testing.T) {
	need(t, "make")
	dir := t.TempDir()
	for version, want := range map[string]string{
		"v1.2.3":                  "1.2.3",
		"v1.2.3-4-gabcdef0":       "1.2.3.4.gabcdef0",
		"v1.2.3-4-gabcdef0-dirty": "1.2.3.4.gabcdef0.dirty",
		"0.9.0":                   "0.9.0",
		"3ebb2c5":                 "0.0.0+git.3ebb2c5",
		"3ebb2c5-dirty":           "0.0.0+git.3ebb2c5.dirty",
		"abcdef0":                 "0.0.0+git.abcdef0",
	} {
		out := run(t, "..", "make", "--no-print-directory", "-n", "deb", "VERSION="+version, "COMMIT=abc",
			"BUILDDIR="+filepath.Join(dir, "build"), "DISTDIR="+filepath.Join(dir, "dist"))
		if !strings.Contains(out, "PKG_VERSION='"+want+"'") {
			t.Errorf("VERSION=%s: want package version %s, make deb would run:\n%s", version, want, out)
		}
	}
}

func TestPackage(t *testing.T) {
	need(t, "make", "dpkg-deb")
	if testing.Short() {
		t.Skip("builds reaperd and its .deb")
	}
	dir := t.TempDir()
	build, dist := filepath.Join(dir, "build"), filepath.Join(dir, "dist")
	// GOBUILDFLAGS= drops -trimpath: the build then reuses the packages go
	// test and go vet compiled, instead of compiling them all again.
	run(t, "..", "make", "--no-print-directory", "deb", "BUILDDIR="+build, "DISTDIR="+dist, "GOBUILDFLAGS=",
		"VERSION="+testVersion, "COMMIT="+testCommit, "SOURCE_DATE_EPOCH="+testEpoch)

	debs, _ := filepath.Glob(filepath.Join(dist, "*.deb"))
	wantName := "reaperd_1.2.3.4.gabcdef0-1_" + runtime.GOARCH + ".deb"
	if len(debs) != 1 || filepath.Base(debs[0]) != wantName {
		t.Fatalf("make deb made %q, want %s", debs, wantName)
	}
	deb := debs[0]

	t.Run("control", func(t *testing.T) {
		got := run(t, dir, "dpkg-deb", "--field", deb, "Package", "Version", "Architecture")
		want := "Package: reaperd\nVersion: 1.2.3.4.gabcdef0-1\nArchitecture: " + runtime.GOARCH + "\n"
		if got != want {
			t.Errorf("dpkg-deb --field:\n%s\nwant:\n%s", got, want)
		}
	})

	t.Run("files", func(t *testing.T) {
		files := debList(t, run(t, dir, "dpkg-deb", "--contents", deb))
		want := map[string]string{
			"./usr/bin/reaperd":                                  "-rwxr-xr-x",
			"./usr/lib/sysusers.d/reaperd.conf":                  "-rw-r--r--",
			"./etc/reaperd/":                                     "drwxr-x---",
			"./etc/reaperd/reaperd.toml":                         "-rw-r-----",
			"./usr/share/doc/reaperd/reaperd.toml.example":       "-rw-r--r--",
			"./usr/share/doc/reaperd/copyright":                  "-rw-r--r--",
			"./usr/share/doc/reaperd/CHANGELOG.md":               "-rw-r--r--",
			"./usr/share/man/man1/reaperd.1.gz":                  "-rw-r--r--",
			"./usr/share/man/man1/reaperd-serve.1.gz":            "-rw-r--r--",
			"./usr/share/man/man1/reaperd-list.1.gz":             "-rw-r--r--",
			"./usr/share/bash-completion/completions/reaperd":    "-rw-r--r--",
			"./usr/share/zsh/vendor-completions/_reaperd":        "-rw-r--r--",
			"./usr/share/fish/vendor_completions.d/reaperd.fish": "-rw-r--r--",
		}
		for _, u := range units(t) {
			want["./usr/lib/systemd/system/"+u] = "-rw-r--r--"
		}
		for path, mode := range want {
			f, ok := files[path]
			if !ok {
				t.Errorf("the package lacks %s", path)
				continue
			}
			if f.mode != mode {
				t.Errorf("%s: mode %s, want %s", path, f.mode, mode)
			}
		}
		for path, f := range files {
			if f.owner != "root/root" {
				t.Errorf("%s: owner %s, want root/root", path, f.owner)
			}
			if f.date != "2023-11-14" {
				t.Errorf("%s: dated %s, want 2023-11-14 (SOURCE_DATE_EPOCH)", path, f.date)
			}
			_, known := want[path]
			page := strings.HasPrefix(path, "./usr/share/man/man1/reaperd-") && strings.HasSuffix(path, ".1.gz")
			if !known && !page && !strings.HasSuffix(path, "/") {
				t.Errorf("the package has an unexpected file %s (%s)", path, f.mode)
			}
		}
	})

	t.Run("scripts", func(t *testing.T) {
		ctl := filepath.Join(dir, "control")
		run(t, dir, "dpkg-deb", "--control", deb, ctl)
		if b, err := os.ReadFile(filepath.Join(ctl, "conffiles")); err != nil || string(b) != "/etc/reaperd/reaperd.toml\n" {
			t.Errorf("conffiles = %q, %v; want /etc/reaperd/reaperd.toml", b, err)
		}
		scripts := map[string][]string{
			"postinst": {"systemd-sysusers reaperd.conf", "chgrp reaperd", "[ -d /run/systemd/system ]",
				"systemctl daemon-reload", "systemctl try-restart reaperd.service"},
			"prerm":  {"remove | 0)", "[ -d /run/systemd/system ]", "disable --now"},
			"postrm": {"[ -d /run/systemd/system ]", "systemctl daemon-reload"},
		}
		for name, wants := range scripts {
			p := filepath.Join(ctl, name)
			fi, err := os.Stat(p)
			if err != nil {
				t.Errorf("the package has no %s script: %v", name, err)
				continue
			}
			if fi.Mode().Perm() != 0o755 {
				t.Errorf("%s: mode %v, want 0755", name, fi.Mode().Perm())
			}
			b, _ := os.ReadFile(p)
			if !strings.HasPrefix(string(b), "#!/bin/sh\n") {
				t.Errorf("%s does not start with #!/bin/sh", name)
			}
			for _, w := range wants {
				if !strings.Contains(string(b), w) {
					t.Errorf("%s lacks %q", name, w)
				}
			}
			run(t, dir, "sh", "-n", p)
		}
	})

	root := filepath.Join(dir, "root")
	run(t, dir, "dpkg-deb", "--extract", deb, root)

	t.Run("contents", func(t *testing.T) {
		for _, u := range units(t) {
			b, err := os.ReadFile(filepath.Join(root, "usr/lib/systemd/system", u))
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(b), "/usr/local/bin/reaperd") {
				t.Errorf("the packaged %s still names /usr/local/bin/reaperd", u)
			}
			if u == "reaperd.service" && !strings.Contains(string(b), "\nExecStart=/usr/bin/reaperd serve") {
				t.Errorf("the packaged reaperd.service does not start /usr/bin/reaperd")
			}
		}
		same := map[string]string{
			"usr/lib/sysusers.d/reaperd.conf":            "systemd/reaperd.sysusers.conf",
			"etc/reaperd/reaperd.toml":                   "reaperd.toml.example",
			"usr/share/doc/reaperd/reaperd.toml.example": "reaperd.toml.example",
			"usr/share/doc/reaperd/copyright":            "../LICENSE",
		}
		for installed, src := range same {
			a, err1 := os.ReadFile(filepath.Join(root, installed))
			b, err2 := os.ReadFile(src)
			if err1 != nil || err2 != nil || !bytes.Equal(a, b) {
				t.Errorf("/%s differs from %s (%v, %v)", installed, src, err1, err2)
			}
		}

		completions := map[string]string{
			"usr/share/bash-completion/completions/reaperd":    "__start_reaperd",
			"usr/share/zsh/vendor-completions/_reaperd":        "#compdef reaperd",
			"usr/share/fish/vendor_completions.d/reaperd.fish": "complete -c reaperd",
		}
		for p, w := range completions {
			if b, err := os.ReadFile(filepath.Join(root, p)); err != nil || !bytes.Contains(b, []byte(w)) {
				t.Errorf("/%s is not reaperd's completion script (no %q): %v", p, w, err)
			}
		}

		f, err := os.Open(filepath.Join(root, "usr/share/man/man1/reaperd-list.1.gz"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		page, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range []string{`.TH "REAPERD-LIST" "1" "Nov 2023" "reaperd ` + testVersion + `"`, `\fB--state\fP`} {
			if !bytes.Contains(page, []byte(w)) {
				t.Errorf("man page reaperd-list.1 lacks %q:\n%s", w, page)
			}
		}
	})

	// The version comes from the build: make passes VERSION and COMMIT to
	// the linker.
	t.Run("version", func(t *testing.T) {
		bin := filepath.Join(root, "usr/bin/reaperd")
		want := "reaperd " + testVersion + " (" + testCommit + ") " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + "\n"
		if got := run(t, dir, bin, "version"); got != want {
			t.Errorf("reaperd version = %q, want %q", got, want)
		}
		var v struct {
			Version, Commit string
			GoVersion       string `json:"go_version"`
		}
		out := run(t, dir, bin, "version", "-o", "json")
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("reaperd version -o json: %v\n%s", err, out)
		}
		if v.Version != testVersion || v.Commit != testCommit || v.GoVersion != runtime.Version() {
			t.Errorf("reaperd version -o json = %+v, want %s, %s, %s", v, testVersion, testCommit, runtime.Version())
		}
	})

	// make install and uninstall, from the same build.
	t.Run("install", func(t *testing.T) {
		dest := filepath.Join(dir, "dest")
		args := []string{"--no-print-directory", "BUILDDIR=" + build, "DESTDIR=" + dest, "PREFIX=/usr",
			"VERSION=" + testVersion, "COMMIT=" + testCommit}
		run(t, "..", "make", append([]string{"install"}, args...)...)
		want := map[string]os.FileMode{
			"usr/bin/reaperd":                                  0o755,
			"usr/lib/sysusers.d/reaperd.conf":                  0o644,
			"etc/reaperd/reaperd.toml.example":                 0o644,
			"etc/reaperd/reaperd.toml":                         0o644,
			"usr/share/man/man1/reaperd.1":                     0o644,
			"usr/share/man/man1/reaperd-serve.1":               0o644,
			"usr/share/bash-completion/completions/reaperd":    0o644,
			"usr/share/zsh/site-functions/_reaperd":            0o644,
			"usr/share/fish/vendor_completions.d/reaperd.fish": 0o644,
		}
		for _, u := range units(t) {
			want["lib/systemd/system/"+u] = 0o644
		}
		for p, mode := range want {
			fi, err := os.Stat(filepath.Join(dest, p))
			if err != nil {
				t.Errorf("make install: %v", err)
				continue
			}
			if fi.Mode().Perm() != mode {
				t.Errorf("make install: /%s has mode %v, want %v", p, fi.Mode().Perm(), mode)
			}
		}
		unit, _ := os.ReadFile(filepath.Join(dest, "lib/systemd/system/reaperd.service"))
		if !strings.Contains(string(unit), "\nExecStart=/usr/bin/reaperd serve") {
			t.Errorf("make install PREFIX=/usr: reaperd.service does not start /usr/bin/reaperd")
		}

		// A config file that exists is never replaced.
		cfg := filepath.Join(dest, "etc/reaperd/reaperd.toml")
		if err := os.WriteFile(cfg, []byte("schedule = \"@every 5m\"\n"), 0o640); err != nil {
			t.Fatal(err)
		}
		run(t, "..", "make", append([]string{"install"}, args...)...)
		if b, _ := os.ReadFile(cfg); string(b) != "schedule = \"@every 5m\"\n" {
			t.Errorf("a second make install replaced the config: %q", b)
		}

		run(t, "..", "make", append([]string{"uninstall"}, args...)...)
		for p := range want {
			if _, err := os.Stat(filepath.Join(dest, p)); err == nil && p != "etc/reaperd/reaperd.toml" {
				t.Errorf("make uninstall left /%s", p)
			}
		}
		if _, err := os.Stat(cfg); err != nil {
			t.Errorf("make uninstall removed the config: %v", err)
		}
	})
}
