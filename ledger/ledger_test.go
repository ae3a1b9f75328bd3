package ledger_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reaperd/reaperd/ledger"
	"github.com/reaperd/reaperd/ledger/ledgertest"
	"github.com/reaperd/reaperd/reaper"
	bolt "go.etcd.io/bbolt"
)

var t0 = time.Date(2026, 6, 1, 10, 0, 0, 0, time.UTC)

func put(t *testing.T, db *ledger.DB, ents ...*reaper.Entry) {
	t.Helper()
	err := db.Update(context.Background(), func(tx reaper.Tx) error {
		for _, e := range ents {
			if err := tx.PutEntry(e); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("put: %v", err)
	}
}

func due(t *testing.T, db *ledger.DB, now time.Time) []string {
	t.Helper()
	var out []string
	err := db.View(context.Background(), func(tx reaper.Tx) error {
		items, err := tx.Due(now, 0)
		for _, it := range items {
			out = append(out, string(it.Kind)+":"+it.Key)
		}
		return err
	})
	if err != nil {
		t.Fatalf("due: %v", err)
	}
	return out
}

func active(id string, expires time.Time) *reaper.Entry {
	return &reaper.Entry{Provider: "e2b", ID: id, State: reaper.StateActive, RegisteredAt: t0, ExpiresAt: expires}
}

func TestOpenLockedFailsFast(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	db, err := ledger.Open(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	start := time.Now()
	_, err = ledger.Open(path, ledger.Options{LockTimeout: 300 * time.Millisecond})
	if !errors.Is(err, ledger.ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "another reaperd") {
		t.Fatalf("error %q must name the file and the likely cause", err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("second Open took %v", el)
	}
}

func TestOpenNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	db, err := ledger.Open(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Bolt().Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("meta")).Put([]byte("schema"), []byte{0, 0, 0, 0, 0, 0, 0, 99})
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = ledger.Open(path, ledger.Options{})
	if err == nil || !strings.Contains(err.Error(), "upgrade reaperd") {
		t.Fatalf("Open of a newer schema = %v, want an error telling to upgrade", err)
	}
}

func TestDeadlineIndex(t *testing.T) {
	db := ledgertest.Open(t)
	a := active("a", t0.Add(time.Minute))
	b := active("b", t0.Add(3*time.Minute))
	c := active("c", time.Time{}) // no deadline
	k := active("k", t0)
	k.Keep = true // keep: never indexed
	put(t, db, a, b, c, k)

	tests := []struct {
		now  time.Time
		want []string
	}{
		{t0, nil},
		{t0.Add(time.Minute), []string{"e:e2b/a"}},
		{t0.Add(time.Hour), []string{"e:e2b/a", "e:e2b/b"}},
	}
	for _, tt := range tests {
		if got := due(t, db, tt.now); fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("Due(%v) = %v, want %v", tt.now.Sub(t0), got, tt.want)
		}
	}

	// Moving b's deadline earlier re-indexes it; closing a removes it.
	b.ExpiresAt = t0.Add(30 * time.Second)
	a.State, a.ClosedAt = reaper.StateClosed, t0.Add(2*time.Minute)
	put(t, db, a, b)
	if got := due(t, db, t0.Add(time.Hour)); fmt.Sprint(got) != "[e:e2b/b]" {
		t.Fatalf("after update Due = %v, want [e:e2b/b]", got)
	}
	var next time.Time
	_ = db.View(context.Background(), func(tx reaper.Tx) error { next, _ = tx.NextDeadline(); return nil })
	if !next.Equal(t0.Add(30 * time.Second)) {
		t.Fatalf("NextDeadline = %v, want t0+30s", next)
	}

	// A closing entry is indexed at its next attempt.
	b.State, b.ClosingSince, b.NextAttemptAt = reaper.StateClosing, t0, t0.Add(10*time.Minute)
	put(t, db, b)
	if got := due(t, db, t0.Add(5*time.Minute)); got != nil {
		t.Fatalf("Due before retry = %v", got)
	}
	if got := due(t, db, t0.Add(10*time.Minute)); fmt.Sprint(got) != "[e:e2b/b]" {
		t.Fatalf("Due at retry = %v", got)
	}
}

func TestSessionIndex(t *testing.T) {
	db := ledgertest.Open(t)
	s := &reaper.Session{ID: "s1", Lease: reaper.Duration(time.Minute), StartedAt: t0, LastHeartbeat: t0, PID: 7}
	err := db.Update(context.Background(), func(tx reaper.Tx) error {
		if err := tx.PutSession(s); err != nil {
			return err
		}
		for _, id := range []string{"x", "y"} {
			e := active(id, time.Time{})
			e.Session = "s1"
			if err := tx.PutEntry(e); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := due(t, db, t0.Add(time.Minute)); fmt.Sprint(got) != "[s:s1]" {
		t.Fatalf("Due at lease end = %v, want [s:s1]", got)
	}
	var keys []string
	var procs int
	_ = db.View(context.Background(), func(tx reaper.Tx) error {
		keys, _ = tx.SessionEntries("s1")
		return tx.ProcessSessions(func(*reaper.Session) error { procs++; return nil })
	})
	if fmt.Sprint(keys) != "[e2b/x e2b/y]" || procs != 1 {
		t.Fatalf("SessionEntries = %v, process sessions = %d", keys, procs)
	}
	// A heartbeat moves the lease deadline; ending removes the session's
	// deadline and pid index, and makes its entries due at the end.
	s.LastHeartbeat = t0.Add(30 * time.Second)
	s.EndedAt, s.EndReason = t0.Add(40*time.Second), reaper.ReasonSessionEnded
	if err := db.Update(context.Background(), func(tx reaper.Tx) error { return tx.PutSession(s) }); err != nil {
		t.Fatal(err)
	}
	procs = 0
	_ = db.View(context.Background(), func(tx reaper.Tx) error {
		return tx.ProcessSessions(func(*reaper.Session) error { procs++; return nil })
	})
	if got := due(t, db, t0.Add(40*time.Second)); fmt.Sprint(got) != "[e:e2b/x e:e2b/y]" || procs != 0 {
		t.Fatalf("after end: Due = %v, process sessions = %d; want both entries due and no process session", got, procs)
	}
}

func TestPrune(t *testing.T) {
	db := ledgertest.Open(t)
	old := active("old", time.Time{})
	old.Session = "s1"
	old.State, old.ClosedAt = reaper.StateClosed, t0
	recent := active("recent", time.Time{})
	recent.State, recent.ClosedAt = reaper.StateReleased, t0.Add(48*time.Hour)
	live := active("live", t0.Add(-time.Hour)) // active, long expired: never pruned
	s1 := &reaper.Session{ID: "s1", StartedAt: t0, LastHeartbeat: t0, EndedAt: t0, EndReason: reaper.ReasonSessionEnded}
	err := db.Update(context.Background(), func(tx reaper.Tx) error {
		for _, e := range []*reaper.Entry{old, recent, live} {
			if err := tx.PutEntry(e); err != nil {
				return err
			}
		}
		if err := tx.PutSession(s1); err != nil {
			return err
		}
		for i := range 3 {
			if err := tx.Append(reaper.AuditEvent{Time: t0.Add(time.Duration(i) * 24 * time.Hour), Kind: reaper.EventRegistered, Key: "e2b/x"}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var st reaper.PruneStats
	err = db.Update(context.Background(), func(tx reaper.Tx) error {
		var err error
		st, err = tx.Prune(t0.Add(24*time.Hour), 0)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if st != (reaper.PruneStats{Entries: 1, Sessions: 1, Events: 1}) {
		t.Fatalf("Prune = %+v, want 1 entry, 1 session, 1 event", st)
	}
	_ = db.View(context.Background(), func(tx reaper.Tx) error {
		for _, k := range []string{"e2b/recent", "e2b/live"} {
			if e, _ := tx.Entry(k); e == nil {
				t.Errorf("%s was pruned", k)
			}
		}
		if e, _ := tx.Entry("e2b/old"); e != nil {
			t.Errorf("e2b/old survived pruning")
		}
		if s, _ := tx.Session("s1"); s != nil {
			t.Errorf("session s1 survived pruning")
		}
		var n int
		_ = tx.Audit(time.Time{}, func(reaper.AuditEvent) error { n++; return nil })
		if n != 2 {
			t.Errorf("%d audit events left, want 2", n)
		}
		return nil
	})
}

// TestGroupCommitIsolation runs many concurrent updates, some of which
// fail after writing: their writes must vanish, everyone else's must stay.
func TestGroupCommitIsolation(t *testing.T) {
	db := ledgertest.Open(t)
	const n = 300
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = db.Update(context.Background(), func(tx reaper.Tx) error {
				if err := tx.PutEntry(active(fmt.Sprintf("e%03d", i), time.Time{})); err != nil {
					return err
				}
				switch i % 10 {
				case 3:
					return fmt.Errorf("fail %d", i)
				case 7:
					panic(fmt.Sprintf("panic %d", i))
				}
				return nil
			})
		}()
	}
	wg.Wait()
	_ = db.View(context.Background(), func(tx reaper.Tx) error {
		for i := range n {
			e, _ := tx.Entry(fmt.Sprintf("e2b/e%03d", i))
			failing := i%10 == 3 || i%10 == 7
			switch {
			case failing && errs[i] == nil:
				t.Errorf("update %d should have failed", i)
			case failing && e != nil:
				t.Errorf("update %d failed but its write was committed", i)
			case !failing && errs[i] != nil:
				t.Errorf("update %d = %v, want nil", i, errs[i])
			case !failing && e == nil:
				t.Errorf("update %d succeeded but its write is missing", i)
			}
		}
		return nil
	})
	if err := errs[7]; err == nil || !strings.Contains(err.Error(), "panic 7") {
		t.Fatalf("panicking update error = %v", err)
	}
}

// TestUpdateDurable checks that an Update's writes are on disk when it
// returns: a copy of the file taken right after holds them.
func TestUpdateDurable(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ledger.db")
	db, err := ledger.Open(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	put(t, db, active("a", t0))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = ledger.Open(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var e *reaper.Entry
	_ = db.View(context.Background(), func(tx reaper.Tx) error { e, _ = tx.Entry("e2b/a"); return nil })
	if e == nil || !e.ExpiresAt.Equal(t0) {
		t.Fatalf("entry after reopen = %+v", e)
	}
}

func TestClosedLedger(t *testing.T) {
	db, err := ledger.Open(filepath.Join(t.TempDir(), "l.db"), ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if err := db.Update(context.Background(), func(reaper.Tx) error { return nil }); !errors.Is(err, ledger.ErrClosed) {
		t.Fatalf("Update after Close = %v, want ErrClosed", err)
	}
	if err := db.View(context.Background(), func(reaper.Tx) error { return nil }); !errors.Is(err, ledger.ErrClosed) {
		t.Fatalf("View after Close = %v, want ErrClosed", err)
	}
}

// TestPruneKeepsHistoryOfTrackedSandboxes: retention drops old events,
// but not those of a sandbox the ledger still holds (an entry, or an
// untracked record), which a cost report needs to price it.
func TestPruneKeepsHistoryOfTrackedSandboxes(t *testing.T) {
	db := ledgertest.Open(t)
	live := active("live", time.Time{})
	err := db.Update(context.Background(), func(tx reaper.Tx) error {
		if err := tx.PutEntry(live); err != nil {
			return err
		}
		if err := tx.PutUntracked("e2b", "stray", t0); err != nil {
			return err
		}
		for _, key := range []string{"e2b/live", "e2b/stray", "e2b/gone", ""} {
			if err := tx.Append(reaper.AuditEvent{Time: t0, Kind: reaper.EventRegistered, Key: key, Session: "s"}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var st reaper.PruneStats
	err = db.Update(context.Background(), func(tx reaper.Tx) error {
		var err error
		st, err = tx.Prune(t0.Add(time.Hour), 0)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if st.Events != 2 {
		t.Errorf("pruned %d events, want 2 (the gone sandbox's and the keyless one)", st.Events)
	}
	var left []string
	_ = db.View(context.Background(), func(tx reaper.Tx) error {
		return tx.Audit(time.Unix(0, 0), func(ev reaper.AuditEvent) error { left = append(left, ev.Key); return nil })
	})
	if got, want := fmt.Sprint(left), "[e2b/live e2b/stray]"; got != want {
		t.Errorf("events left for %s, want %s", got, want)
	}
}

// TestEntriesAfter: every path Entries takes (all, a provider's range, the
// closing index, a session's members) starts after f.After, in key order.
func TestEntriesAfter(t *testing.T) {
	db := ledgertest.Open(t)
	err := db.Update(context.Background(), func(tx reaper.Tx) error {
		if err := tx.PutSession(&reaper.Session{ID: "s", StartedAt: t0, LastHeartbeat: t0}); err != nil {
			return err
		}
		for _, p := range []string{"daytona", "e2b", "modal"} {
			for i := range 4 {
				e := &reaper.Entry{Provider: p, ID: fmt.Sprintf("x%d", i), State: reaper.StateActive, RegisteredAt: t0}
				if i%2 == 1 {
					e.State, e.ClosingSince = reaper.StateClosing, t0
				}
				if i < 2 {
					e.Session = "s"
				}
				if err := tx.PutEntry(e); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	closing := []reaper.State{reaper.StateClosing}
	for _, tc := range []struct {
		name string
		f    reaper.EntryFilter
		want string
	}{
		{"all", reaper.EntryFilter{After: "e2b/x2"}, "[e2b/x3 modal/x0 modal/x1 modal/x2 modal/x3]"},
		{"all from before the first", reaper.EntryFilter{After: "a/b", States: closing}, "[daytona/x1 daytona/x3 e2b/x1 e2b/x3 modal/x1 modal/x3]"},
		{"provider", reaper.EntryFilter{Provider: "e2b", After: "e2b/x1"}, "[e2b/x2 e2b/x3]"},
		{"provider, cursor before its range", reaper.EntryFilter{Provider: "e2b", After: "daytona/x3"}, "[e2b/x0 e2b/x1 e2b/x2 e2b/x3]"},
		{"provider, cursor past its range", reaper.EntryFilter{Provider: "daytona", After: "e2b/x0"}, "[]"},
		{"closing", reaper.EntryFilter{States: closing, After: "daytona/x3"}, "[e2b/x1 e2b/x3 modal/x1 modal/x3]"},
		{"closing of a provider", reaper.EntryFilter{States: closing, Provider: "modal", After: "modal/x1"}, "[modal/x3]"},
		{"session", reaper.EntryFilter{Session: "s", After: "e2b/x0"}, "[e2b/x1 modal/x0 modal/x1]"},
	} {
		var got []string
		_ = db.View(context.Background(), func(tx reaper.Tx) error {
			return tx.Entries(tc.f, func(e *reaper.Entry) error { got = append(got, e.Key()); return nil })
		})
		if s := fmt.Sprint(got); s != tc.want && !(tc.want == "[]" && got == nil) {
			t.Errorf("%s: %s, want %s", tc.name, s, tc.want)
		}
	}
}

// TestFreelistIsWrittenOnceOpenedByDefault: a ledger written without its
// freelist (an older reaperd) gets one at its first open, and stays
// consistent.
func TestFreelistIsWrittenOnceOpenedByDefault(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	db, err := ledger.Open(path, ledger.Options{RebuildFreelist: true})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(context.Background(), func(tx reaper.Tx) error {
		for i := range 200 {
			if err := tx.PutEntry(active(fmt.Sprintf("x%d", i), time.Time{})); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if syncedFreelist(t, path) {
		t.Fatal("a ledger opened with RebuildFreelist has a written freelist")
	}
	db, err = ledger.Open(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(context.Background(), func(tx reaper.Tx) error { return tx.PutEntry(active("y", time.Time{})) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	ledgertest.Check(t, path)
	if !syncedFreelist(t, path) {
		t.Error("the ledger has no written freelist after an open with the defaults")
	}
}

// syncedFreelist reads the newer of a bbolt file's two meta pages and
// reports whether it names a freelist page (bbolt writes the page id
// 0xffffffffffffffff when the freelist is left unwritten).
func syncedFreelist(t *testing.T, path string) bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// A page starts with a 16-byte header; the meta then holds magic,
	// version, page size and flags (4 bytes each), the root bucket (16),
	// the freelist page id (8), the high-water page id (8) and the txid.
	pageSize := int(binary.LittleEndian.Uint32(b[16+8:]))
	var freelist, txid uint64
	for _, off := range []int{0, pageSize} {
		m := b[off+16:]
		if id := binary.LittleEndian.Uint64(m[48:]); id >= txid {
			txid, freelist = id, binary.LittleEndian.Uint64(m[32:])
		}
	}
	return freelist != ^uint64(0)
}

// TestUnseenWithinTheRegisteringTransaction: an entry registered unseen
// reads back unseen in the same transaction (as other updates of the same
// batch read it), and stays unseen when it is written again there. bbolt's
// Get returns nil for a key put with an empty value until the commit, so a
// presence test by Get took such an entry for seen, and writing it back
// recorded it seen without any listing showing it: a later listing without
// it would then have been taken as proof that it was gone.
func TestUnseenWithinTheRegisteringTransaction(t *testing.T) {
	db := ledgertest.Open(t)
	e := active("fresh", time.Time{})
	e.Session = "s1"
	err := db.Update(context.Background(), func(tx reaper.Tx) error {
		if err := tx.PutEntry(e); err != nil {
			return err
		}
		got, err := tx.Entry(e.Key())
		if err != nil {
			return err
		}
		if got.Seen || got.Unverified {
			t.Errorf("read back in its transaction: seen %v, unverified %v; want unseen", got.Seen, got.Unverified)
		}
		got.Labels = map[string]string{"tagged": "in the same batch"}
		if err := tx.PutEntry(got); err != nil {
			return err
		}
		keys, err := tx.SessionEntries("s1")
		if err != nil {
			return err
		}
		if len(keys) != 1 || keys[0] != e.Key() {
			t.Errorf("session entries in the transaction = %v, want [%s]", keys, e.Key())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var pending []string
	_ = db.View(context.Background(), func(tx reaper.Tx) error {
		return tx.Pending("", func(e *reaper.Entry) error { pending = append(pending, e.Key()); return nil })
	})
	if len(pending) != 1 || pending[0] != e.Key() {
		t.Errorf("pending after the commit = %v, want [%s]: the entry was recorded seen", pending, e.Key())
	}
}
