package ledger_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/reaperd/reaperd/ledger"
	"github.com/reaperd/reaperd/reaper"
	bolt "go.etcd.io/bbolt"
)

// TestSessionMembershipFolds: a session's entries are found whether their
// membership is still among the joins or already folded into
// session_entries, through registrations in many commits (so that folds
// happen between them), a change of session, deletions by pruning, and a
// reopening; the index checker agrees at each step.
func TestSessionMembershipFolds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	db, err := ledger.Open(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { db.Close() }()
	want := map[string][]string{}
	const n = 2_600 // more than two folds' worth
	for start := 0; start < n; start += 100 {
		err := db.Update(context.Background(), func(tx reaper.Tx) error {
			for i := start; i < start+100; i++ {
				e := &reaper.Entry{Provider: "e2b", ID: fmt.Sprintf("sb-%05d", i), Session: fmt.Sprintf("s%d", i%3),
					RegisteredAt: t0.Add(time.Duration(i) * time.Millisecond), State: reaper.StateActive, Seen: true}
				if err := tx.PutEntry(e); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		s := fmt.Sprintf("s%d", i%3)
		want[s] = append(want[s], fmt.Sprintf("e2b/sb-%05d", i))
	}
	joins := func() int {
		k := 0
		_ = db.Bolt().View(func(tx *bolt.Tx) error { k = tx.Bucket([]byte("session_joins")).Stats().KeyN; return nil })
		return k
	}
	check := func(when string) {
		t.Helper()
		err := db.View(context.Background(), func(tx reaper.Tx) error {
			for s, keys := range want {
				got, err := tx.SessionEntries(s)
				if err != nil {
					return err
				}
				if !slices.Equal(got, keys) {
					t.Errorf("%s: session %s lists %d entries, want %d (first difference near %v)", when, s, len(got), len(keys), firstDiff(got, keys))
				}
				var viaFilter []string
				if err := tx.Entries(reaper.EntryFilter{Session: s}, func(e *reaper.Entry) error {
					viaFilter = append(viaFilter, e.Key())
					return nil
				}); err != nil {
					return err
				}
				if !slices.Equal(viaFilter, keys) {
					t.Errorf("%s: Entries(session %s) = %d entries, want %d", when, s, len(viaFilter), len(keys))
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if j := joins(); j >= 1024 || j == n {
		t.Fatalf("%d joins after %d registrations: want them folded, fewer than 1,024 left", j, n)
	}
	check("after the registrations")

	// Move the newest entry (still a join) and the oldest (folded) to
	// another session, and close and prune one of each kind.
	err = db.Update(context.Background(), func(tx reaper.Tx) error {
		for _, id := range []string{"sb-02599", "sb-00000"} {
			e, err := tx.Entry("e2b/" + id)
			if err != nil {
				return err
			}
			e.Session = "s-moved"
			if err := tx.PutEntry(e); err != nil {
				return err
			}
		}
		for _, id := range []string{"sb-02598", "sb-00001"} {
			e, err := tx.Entry("e2b/" + id)
			if err != nil {
				return err
			}
			e.State, e.ClosedAt = reaper.StateClosed, t0
			if err := tx.PutEntry(e); err != nil {
				return err
			}
		}
		_, err := tx.Prune(t0.Add(time.Hour), 0)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	drop := func(s string, keys ...string) {
		want[s] = slices.DeleteFunc(want[s], func(k string) bool { return slices.Contains(keys, k) })
	}
	drop("s0", "e2b/sb-00000", "e2b/sb-02598") // 2598 = 3 × 866
	drop("s1", "e2b/sb-02599", "e2b/sb-00001")
	want["s-moved"] = []string{"e2b/sb-00000", "e2b/sb-02599"}
	check("after moves and prunes")

	db.Close()
	if rep, err := ledger.Check(path); err != nil || !rep.OK() {
		t.Fatalf("check: %v, findings %v", err, rep.Findings)
	}
	db, err = ledger.Open(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	check("after reopening")
}

func firstDiff(a, b []string) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf("%d: %s against %s", i, a[i], b[i])
		}
	}
	return "the end"
}
