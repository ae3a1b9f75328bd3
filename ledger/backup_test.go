package ledger_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reaperd/reaperd/ledger"
	"github.com/reaperd/reaperd/reaper"
)

func backupEntry(id string) *reaper.Entry {
	return &reaper.Entry{Provider: "e2b", ID: id, State: reaper.StateActive, RegisteredAt: checkT0,
		ExpiresAt: checkT0.Add(time.Hour), Labels: map[string]string{"pad": strings.Repeat("x", 200)}}
}

func entryKeys(t *testing.T, path string) map[string]bool {
	t.Helper()
	db, err := ledger.Open(path, ledger.Options{})
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer db.Close()
	keys := map[string]bool{}
	err = db.View(context.Background(), func(tx reaper.Tx) error {
		return tx.Entries(reaper.EntryFilter{}, func(e *reaper.Entry) error { keys[e.Key()] = true; return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// TestBackupWhileWriting takes a backup while eight writers commit: the
// copy checks clean and holds every entry committed before it started.
func TestBackupWhileWriting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	db, err := ledger.Open(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var mu sync.Mutex
	var committed []string
	write := func(id string) error {
		err := db.Update(context.Background(), func(tx reaper.Tx) error { return tx.PutEntry(backupEntry(id)) })
		if err == nil {
			mu.Lock()
			committed = append(committed, "e2b/"+id)
			mu.Unlock()
		}
		return err
	}
	for i := range 500 {
		if err := write(fmt.Sprintf("pre-%04d", i)); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var writes atomic.Int64
	var writeErr atomic.Pointer[error]
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := write(fmt.Sprintf("w%d-%06d", w, i)); err != nil {
					writeErr.Store(&err)
					return
				}
				writes.Add(1)
			}
		}()
	}
	for writes.Load() < 200 {
		time.Sleep(time.Millisecond)
	}
	mu.Lock()
	before := append([]string(nil), committed...)
	mu.Unlock()

	dest := filepath.Join(t.TempDir(), "backup.db")
	cp, err := ledger.NewCopy(dest, false)
	if err != nil {
		t.Fatal(err)
	}
	var announced int64
	n, err := db.Backup(context.Background(), cp, func(size int64) error { announced = size; return nil })
	if err != nil {
		t.Fatal(err)
	}
	during := writes.Load()
	rep, err := cp.Commit()
	if err != nil {
		t.Fatal(err)
	}
	for writes.Load() < during+200 {
		time.Sleep(time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if p := writeErr.Load(); p != nil {
		t.Fatalf("a writer failed: %v", *p)
	}
	if n != announced || n != rep.Size {
		t.Fatalf("Backup wrote %d bytes, announced %d, the copy is %d", n, announced, rep.Size)
	}
	if !rep.OK() {
		t.Fatalf("the copy does not check clean: %v %v", rep.Corrupt, rep.Findings)
	}
	got := entryKeys(t, dest)
	for _, k := range before {
		if !got[k] {
			t.Fatalf("%s was committed before the backup started but is not in the copy", k)
		}
	}
	if len(got) > len(committed) {
		t.Fatalf("the copy holds %d entries, more than the %d ever committed", len(got), len(committed))
	}
	t.Logf("%d entries committed before the backup, %d in the copy, %d in the end", len(before), len(got), len(committed))
}

func TestBackupBeginError(t *testing.T) {
	db := openTemp(t)
	refused := errors.New("refused")
	var buf bytes.Buffer
	n, err := db.Backup(context.Background(), &buf, func(int64) error { return refused })
	if !errors.Is(err, refused) || n != 0 || buf.Len() != 0 {
		t.Fatalf("Backup with a refusing begin = %d, %v, %d bytes written; want the refusal and nothing written", n, err, buf.Len())
	}
}

func TestBackupCanceled(t *testing.T) {
	db := openTemp(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := db.Backup(ctx, &bytes.Buffer{}, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Backup with a canceled context = %v, want context.Canceled", err)
	}
}

func openTemp(t *testing.T) *ledger.DB {
	t.Helper()
	db, err := ledger.Open(filepath.Join(t.TempDir(), "ledger.db"), ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// dirNames lists a directory, to see that no temporary file is left.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

// TestCopy: a copy appears only complete and verified, never replaces a
// file unless asked to, and leaves nothing behind when it fails.
func TestCopy(t *testing.T) {
	src := buildCheckLedger(t)
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		exists  bool   // dest exists before NewCopy
		appears bool   // dest appears between NewCopy and Commit
		replace bool   // --force
		data    []byte // what is written
		newErr  string // NewCopy fails with this
		err     string // Commit fails with this
	}{
		{name: "new file", data: data},
		{name: "existing file refused", exists: true, data: data, newErr: "file exists: give --force"},
		{name: "existing file replaced", exists: true, replace: true, data: data},
		{name: "file appearing meanwhile refused", appears: true, data: data, err: "file exists: give --force"},
		{name: "file appearing meanwhile replaced", appears: true, replace: true, data: data},
		{name: "cut short", data: data[:3*os.Getpagesize()], err: "cut short"},
		{name: "not a ledger", data: bytes.Repeat([]byte("garbage!"), 4096), err: "verify the copy"},
		{name: "nothing", data: nil, err: "the file is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			dest := filepath.Join(dir, "backup.db")
			old := []byte("an older file")
			if tt.exists {
				if err := os.WriteFile(dest, old, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			cp, err := ledger.NewCopy(dest, tt.replace)
			if tt.newErr != "" {
				if err == nil || !errors.Is(err, ledger.ErrExists) || !strings.Contains(err.Error(), tt.newErr) {
					t.Fatalf("NewCopy = %v, want an error mentioning %q", err, tt.newErr)
				}
				if got, _ := os.ReadFile(dest); !bytes.Equal(got, old) {
					t.Fatal("the existing file changed")
				}
				if names := dirNames(t, dir); len(names) != 1 {
					t.Fatalf("directory holds %v, want only the existing file", names)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer cp.Abort()
			if filepath.Dir(cp.Name()) != dir {
				t.Fatalf("temporary file %s is not in the destination's directory", cp.Name())
			}
			if _, err := cp.Write(tt.data); err != nil {
				t.Fatal(err)
			}
			if tt.appears {
				if err := os.WriteFile(dest, old, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			rep, err := cp.Commit()
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Commit = %v, want an error mentioning %q", err, tt.err)
				}
				want := 0
				if tt.exists || tt.appears {
					want = 1
					if got, _ := os.ReadFile(dest); !bytes.Equal(got, old) {
						t.Fatal("the existing file changed")
					}
				}
				if names := dirNames(t, dir); len(names) != want {
					t.Fatalf("after a failed copy the directory holds %v, want %d files", names, want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, err := os.ReadFile(dest); err != nil || !bytes.Equal(got, tt.data) {
				t.Fatalf("dest holds %d bytes (%v), want the %d written", len(got), err, len(tt.data))
			}
			if names := dirNames(t, dir); len(names) != 1 {
				t.Fatalf("directory holds %v, want only the copy", names)
			}
			if fi, err := os.Stat(dest); err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("copy mode = %v (%v), want 0600", fi.Mode(), err)
			}
			if rep.Path != dest || rep.TotalEntries() != 8 || !rep.OK() {
				t.Fatalf("report = %+v, want a clean report of 8 entries at %s", rep, dest)
			}
		})
	}
}
