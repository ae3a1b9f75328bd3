package ledger_test

import (
	"context"
	"encoding/binary"
	"maps"
	"path/filepath"
	"testing"
	"time"

	"github.com/reaperd/reaperd/ledger"
	"github.com/reaperd/reaperd/ledger/ledgertest"
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

func unverified(t *testing.T, db *ledger.DB) map[string]int {
	t.Helper()
	out := map[string]int{}
	err := db.View(context.Background(), func(tx reaper.Tx) error {
		return tx.Unverified(func(p string, n int) error { out[p] = n; return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// The unverified counts follow verification, state changes, pruning and
// quarantine, agree with Check, and a ledger counted before they were
// kept (counts version 1) is counted again on open.
func TestUnverifiedCounts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	db, err := ledger.Open(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ents := map[string]*reaper.Entry{}
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		ents[id] = active(id, time.Time{})
	}
	ents["e"].Provider = "daytona"
	ents["e"].Unverified = true // registered as unverified (a restore)
	for _, e := range ents {
		put(t, db, e)
	}
	step := func(name string, fn func(tx reaper.Tx) error, want map[string]int) {
		t.Helper()
		if err := db.Update(context.Background(), fn); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := unverified(t, db); !maps.Equal(got, want) {
			t.Fatalf("after %s: unverified = %v, want %v", name, got, want)
		}
	}
	verify := func(id string, seen, unv bool) func(tx reaper.Tx) error {
		return func(tx reaper.Tx) error {
			e, err := tx.Entry("e2b/" + id)
			if err != nil {
				return err
			}
			return tx.SetVerification(e, seen, unv)
		}
	}
	step("marking a, b and c unverified", func(tx reaper.Tx) error {
		for _, id := range []string{"a", "b", "c"} {
			if err := verify(id, false, true)(tx); err != nil {
				return err
			}
		}
		return verify("a", false, true)(tx) // twice: counted once
	}, map[string]int{"e2b": 3, "daytona": 1})
	step("a listing showing a", verify("a", true, false), map[string]int{"e2b": 2, "daytona": 1})
	step("a seen one marked again", verify("a", false, true), map[string]int{"e2b": 2, "daytona": 1})
	step("b moving to closing", func(tx reaper.Tx) error {
		e, _ := tx.Entry("e2b/b")
		e.State, e.ClosingSince = reaper.StateClosing, t0
		return tx.PutEntry(e)
	}, map[string]int{"e2b": 2, "daytona": 1})
	step("b closed and pruned", func(tx reaper.Tx) error {
		e, _ := tx.Entry("e2b/b")
		e.State, e.ClosedAt = reaper.StateClosed, t0
		if err := tx.PutEntry(e); err != nil {
			return err
		}
		_, err := tx.Prune(t0.Add(time.Hour), 0)
		return err
	}, map[string]int{"e2b": 1, "daytona": 1})
	step("c quarantined", func(tx reaper.Tx) error {
		return tx.Quarantine(reaper.DueEntry, "e2b/c", "test", t0)
	}, map[string]int{"daytona": 1})
	db.Close()
	ledgertest.Check(t, path)

	// Counts of version 1 did not count the unverified entries.
	bdb, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := bdb.Update(func(btx *bolt.Tx) error {
		v := make([]byte, 8)
		binary.BigEndian.PutUint64(v, 1)
		if err := btx.Bucket([]byte("counts")).Delete(append([]byte("\x01unverified\x00"), "daytona"...)); err != nil {
			return err
		}
		return btx.Bucket([]byte("meta")).Put([]byte("counted"), v)
	}); err != nil {
		t.Fatal(err)
	}
	bdb.Close()
	db, err = ledger.Open(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if got, want := unverified(t, db), map[string]int{"daytona": 1}; !maps.Equal(got, want) {
		t.Fatalf("after reopening a ledger counted by version 1: unverified = %v, want %v", got, want)
	}
}
