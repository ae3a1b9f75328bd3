package ledger_test

import (
	"context"
	"maps"
	"path/filepath"
	"testing"
	"time"

	"github.com/reaperd/reaperd/ledger"
	"github.com/reaperd/reaperd/reaper"
	bolt "go.etcd.io/bbolt"
)

func counts(t *testing.T, db *ledger.DB) map[string]int {
	t.Helper()
	out := map[string]int{}
	err := db.View(context.Background(), func(tx reaper.Tx) error {
		return tx.Counts(func(p string, st reaper.State, n int) error {
			out[p+"/"+string(st)] = n
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// The counts follow every way an entry is created, changes state or is
// pruned, and a ledger written before they were kept is counted on open.
func TestCounts(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ledger.db")
	db, err := ledger.Open(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := active("a", time.Time{}), active("b", time.Time{}), active("c", time.Time{})
	c.Provider = "daytona"
	put(t, db, a, b, c)
	a.Attempts = 1 // same state: no change
	b.State, b.ClosingSince = reaper.StateClosing, t0
	put(t, db, a, b)
	want := map[string]int{"e2b/active": 1, "e2b/closing": 1, "daytona/active": 1}
	if got := counts(t, db); !maps.Equal(got, want) {
		t.Fatalf("counts = %v, want %v", got, want)
	}
	b.State, b.ClosedAt = reaper.StateClosed, t0
	put(t, db, b)
	if err := db.Update(context.Background(), func(tx reaper.Tx) error {
		_, err := tx.Prune(t0.Add(time.Hour), 0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	want = map[string]int{"e2b/active": 1, "daytona/active": 1}
	if got := counts(t, db); !maps.Equal(got, want) {
		t.Fatalf("counts after close and prune = %v, want %v", got, want)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	// An older ledger has no counts: drop them and the mark, and reopen.
	bdb, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := bdb.Update(func(btx *bolt.Tx) error {
		if err := btx.DeleteBucket([]byte("counts")); err != nil {
			return err
		}
		return btx.Bucket([]byte("meta")).Delete([]byte("counted"))
	}); err != nil {
		t.Fatal(err)
	}
	bdb.Close()
	db, err = ledger.Open(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if got := counts(t, db); !maps.Equal(got, want) {
		t.Fatalf("counts after reopening an uncounted ledger = %v, want %v", got, want)
	}
}
