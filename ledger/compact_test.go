package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reaperd/reaperd/ledger"
	"github.com/reaperd/reaperd/reaper"
)

// prunedLedger writes a ledger whose file is mostly free pages: 2000
// closed entries, pruned, and 10 active ones that stay.
func prunedLedger(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ledger.db")
	db, err := ledger.Open(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(context.Background(), func(tx reaper.Tx) error {
		for i := range 2000 {
			e := backupEntry(fmt.Sprintf("old-%04d", i))
			e.State, e.ClosedAt = reaper.StateClosed, checkT0
			if err := tx.PutEntry(e); err != nil {
				return err
			}
		}
		for i := range 10 {
			if err := tx.PutEntry(backupEntry(fmt.Sprintf("keep-%02d", i))); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(context.Background(), func(tx reaper.Tx) error {
		st, err := tx.Prune(checkT0.Add(time.Hour), 0)
		if err == nil && st.Entries != 2000 {
			err = fmt.Errorf("pruned %+v, want 2000 entries", st)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCompact(t *testing.T) {
	src := prunedLedger(t)
	if err := os.Chmod(src, 0o640); err != nil {
		t.Fatal(err)
	}
	dest := src + ".compact"
	res, err := ledger.Compact(src, dest, false)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dest); err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("compacted file mode = %v (%v), want the source's 0640", fi.Mode(), err)
	}
	fi, err := os.Stat(src)
	if err != nil {
		t.Fatal(err)
	}
	if res.Before != fi.Size() || res.After >= res.Before/4 {
		t.Fatalf("compacted %d bytes (file %d) into %d; want under a quarter", res.Before, fi.Size(), res.After)
	}
	if !res.Report.OK() || res.Report.TotalEntries() != 10 {
		t.Fatalf("the compacted file's report = %+v, want clean with 10 entries", res.Report)
	}
	keys := entryKeys(t, dest)
	if len(keys) != 10 || !keys["e2b/keep-00"] {
		t.Fatalf("the compacted ledger holds %v, want the 10 kept entries", keys)
	}
	if got := entryKeys(t, src); len(got) != 10 {
		t.Fatalf("the source lost entries: %d", len(got))
	}
	if names := dirNames(t, filepath.Dir(src)); len(names) != 2 {
		t.Fatalf("directory holds %v, want the ledger and its compacted copy", names)
	}
}

func TestCompactDestinations(t *testing.T) {
	tests := []struct {
		name    string
		dest    func(src string) string
		exists  bool
		replace bool
		err     string
	}{
		{"new file", func(src string) string { return src + ".compact" }, false, false, ""},
		{"existing file refused", func(src string) string { return src + ".compact" }, true, false, "file exists: give --force"},
		{"existing file replaced", func(src string) string { return src + ".compact" }, true, true, ""},
		{"in place refused", func(src string) string { return src }, true, false, "file exists: give --force"},
		{"in place", func(src string) string { return src }, true, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := prunedLedger(t)
			dest := tt.dest(src)
			if tt.exists && dest != src {
				if err := os.WriteFile(dest, []byte("older"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			before, err := os.ReadFile(dest)
			if err != nil && tt.exists {
				t.Fatal(err)
			}
			res, err := ledger.Compact(src, dest, tt.replace)
			if tt.err != "" {
				if !errors.Is(err, ledger.ErrExists) || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Compact = %v, want ErrExists mentioning %q", err, tt.err)
				}
				if after, _ := os.ReadFile(dest); string(after) != string(before) {
					t.Fatal("the existing file changed")
				}
				if names := dirNames(t, filepath.Dir(dest)); len(names) != 2 && dest != src {
					t.Fatalf("directory holds %v, want the ledger and the existing file", names)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			rep, err := ledger.Check(dest)
			if err != nil || !rep.OK() || rep.TotalEntries() != 10 || rep.Size != res.After {
				t.Fatalf("Check of the compacted file = %+v, %v; want clean, 10 entries, %d bytes", rep, err, res.After)
			}
		})
	}
}

func TestCompactRefusesAHeldLedger(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	db, err := ledger.Open(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	start := time.Now()
	_, err = ledger.Compact(path, path+".compact", false)
	if !errors.Is(err, ledger.ErrLocked) || !strings.Contains(err.Error(), "stop the daemon, or compact a backup") {
		t.Fatalf("Compact of a held ledger = %v; want ErrLocked saying to stop the daemon", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Compact took %s to give up; want it to fail fast", d)
	}
	if names := dirNames(t, filepath.Dir(path)); len(names) != 1 {
		t.Fatalf("directory holds %v, want only the ledger", names)
	}
}

func TestCompactRefusesADamagedLedger(t *testing.T) {
	src := buildCheckLedger(t)
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(src, data[:3*os.Getpagesize()], 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = ledger.Compact(src, src+".compact", false)
	if err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("Compact of a file cut short = %v, want it refused as damaged", err)
	}
	if _, err := os.Stat(src + ".compact"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a compacted file was written: %v", err)
	}
}
