package ledger_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/reaperd/reaperd/ledger"
	"github.com/reaperd/reaperd/ledger/ledgertest"
	"github.com/reaperd/reaperd/reaper"
	bolt "go.etcd.io/bbolt"
)

var errRefused = errors.New("refused")

// TestRefusalsCostNoReruns: 2,000 concurrent updates, half of which refuse
// before writing (as domain checks do). Each function runs once: a refusal
// is answered without rerunning its batch. (The committer used to abort and
// rerun the whole batch for every refusal: 250 calls per update.)
func TestRefusalsCostNoReruns(t *testing.T) {
	db := ledgertest.Open(t)
	const n = 2000
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = db.Update(context.Background(), func(tx reaper.Tx) error {
				if i%2 == 1 {
					return errRefused
				}
				return tx.PutEntry(active(fmt.Sprintf("e%04d", i), time.Time{}))
			})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if want := i%2 == 1; errors.Is(err, errRefused) != want || (!want && err != nil) {
			t.Fatalf("update %d = %v", i, err)
		}
	}
	if calls := db.UpdateCalls(); calls != n {
		t.Fatalf("%d update-function calls for %d updates, want exactly %d: refusals must not rerun their batch", calls, n, n)
	}
	var entries int
	_ = db.View(context.Background(), func(tx reaper.Tx) error {
		return tx.Entries(reaper.EntryFilter{}, func(*reaper.Entry) error { entries++; return nil })
	})
	if entries != n/2 {
		t.Fatalf("%d entries committed, want %d", entries, n/2)
	}
}

// TestEntryDueFollowsItsSession: an entry's deadline is DueAt(entry,
// session) whichever side changes, so removing keep from an entry of an
// ended session makes it due at once, and ending a session makes its
// entries due without touching them.
func TestEntryDueFollowsItsSession(t *testing.T) {
	db := ledgertest.Open(t)
	s := &reaper.Session{ID: "s1", StartedAt: t0, LastHeartbeat: t0}
	k := active("k", time.Time{})
	k.Session, k.Keep = "s1", true
	x := active("x", t0.Add(time.Hour))
	x.Session = "s1"
	update(t, db, func(tx reaper.Tx) error {
		if err := tx.PutSession(s); err != nil {
			return err
		}
		if err := tx.PutEntry(k); err != nil {
			return err
		}
		return tx.PutEntry(x)
	})
	if got := due(t, db, t0.Add(2*time.Hour)); fmt.Sprint(got) != "[e:e2b/x]" {
		t.Fatalf("Due with a live session = %v, want only x at its expiry", got)
	}
	s.EndedAt, s.EndReason = t0.Add(time.Minute), reaper.ReasonSessionEnded
	update(t, db, func(tx reaper.Tx) error { return tx.PutSession(s) })
	if got := due(t, db, t0.Add(time.Minute)); fmt.Sprint(got) != "[e:e2b/x]" {
		t.Fatalf("Due at the session's end = %v, want x (keep k is never due)", got)
	}
	k.Keep = false
	update(t, db, func(tx reaper.Tx) error { return tx.PutEntry(k) })
	if got := due(t, db, t0.Add(time.Minute)); fmt.Sprint(got) != "[e:e2b/k e:e2b/x]" {
		t.Fatalf("Due after keep was removed = %v, want k due at the session's end too", got)
	}
}

func update(t *testing.T, db *ledger.DB, fn func(reaper.Tx) error) {
	t.Helper()
	if err := db.Update(context.Background(), fn); err != nil {
		t.Fatal(err)
	}
}

// TestPruneSessions: a live session with neither lease nor pid, left with
// no entries, is pruned once idle past retention; an ended session that
// still holds a keep entry is not rescanned by every prune, and goes with
// its last entry.
func TestPruneSessions(t *testing.T) {
	db := ledgertest.Open(t)
	idle := &reaper.Session{ID: "idle", StartedAt: t0, LastHeartbeat: t0}
	kept := &reaper.Session{ID: "kept", StartedAt: t0, LastHeartbeat: t0, EndedAt: t0, EndReason: reaper.ReasonSessionEnded}
	leased := &reaper.Session{ID: "leased", Lease: reaper.Duration(time.Hour), StartedAt: t0, LastHeartbeat: t0}
	k := active("k", time.Time{})
	k.Session, k.Keep = "kept", true
	update(t, db, func(tx reaper.Tx) error {
		for _, s := range []*reaper.Session{idle, kept, leased} {
			if err := tx.PutSession(s); err != nil {
				return err
			}
		}
		return tx.PutEntry(k)
	})
	prune := func(before time.Time) reaper.PruneStats {
		var st reaper.PruneStats
		update(t, db, func(tx reaper.Tx) error {
			var err error
			st, err = tx.Prune(before, 0)
			return err
		})
		return st
	}
	if st := prune(t0.Add(24 * time.Hour)); st.Sessions != 1 {
		t.Fatalf("first prune = %+v, want the idle lease-less session", st)
	}
	if got := retireKeys(t, db); len(got) != 0 {
		t.Fatalf("retire keys after the first prune = %v, want none: the session holding a keep entry is not rescanned", got)
	}
	sessionIDs := func() []string {
		var ids []string
		_ = db.View(context.Background(), func(tx reaper.Tx) error {
			return tx.Sessions(func(s *reaper.Session) error { ids = append(ids, s.ID); return nil })
		})
		return ids
	}
	if got := sessionIDs(); !slices.Equal(got, []string{"kept", "leased"}) {
		t.Fatalf("sessions = %v, want kept and leased", got)
	}
	// The keep entry is released; once it is pruned, its session goes too.
	k.State, k.ClosedAt = reaper.StateReleased, t0.Add(48*time.Hour)
	update(t, db, func(tx reaper.Tx) error { return tx.PutEntry(k) })
	if st := prune(t0.Add(72 * time.Hour)); st.Entries != 1 {
		t.Fatalf("prune after release = %+v, want the entry", st)
	}
	if st := prune(t0.Add(72 * time.Hour)); st.Sessions != 1 {
		t.Fatalf("next prune = %+v, want the session its last entry left", st)
	}
	if got := sessionIDs(); !slices.Equal(got, []string{"leased"}) {
		t.Fatalf("sessions = %v, want only the leased one (it may still heartbeat)", got)
	}
}

func retireKeys(t *testing.T, db *ledger.DB) []string {
	t.Helper()
	var keys []string
	_ = db.Bolt().View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("retire")).ForEach(func(k, _ []byte) error {
			keys = append(keys, string(k[9:]))
			return nil
		})
	})
	return keys
}

func TestQuarantine(t *testing.T) {
	db := ledgertest.Open(t)
	c := active("c", time.Time{})
	c.State, c.ClosingSince, c.InFlight = reaper.StateClosing, t0, true
	put(t, db, c)
	err := db.Bolt().Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("entries")).Put([]byte("e2b/c"), []byte("garbage"))
	})
	if err != nil {
		t.Fatal(err)
	}
	var ce *reaper.CorruptError
	err = db.View(context.Background(), func(tx reaper.Tx) error { _, err := tx.Entry("e2b/c"); return err })
	if !errors.As(err, &ce) || !errors.Is(err, reaper.ErrCorrupt) || ce.Key != "e2b/c" {
		t.Fatalf("Entry of a corrupt record = %v, want a *CorruptError for e2b/c", err)
	}
	update(t, db, func(tx reaper.Tx) error { return tx.Quarantine(reaper.DueEntry, "e2b/c", ce.Err.Error(), t0) })
	var recs []reaper.QuarantinedRecord
	var inflight []string
	_ = db.View(context.Background(), func(tx reaper.Tx) error {
		if e, err := tx.Entry("e2b/c"); e != nil || err != nil {
			t.Errorf("after quarantine Entry = %v, %v; want none", e, err)
		}
		_ = tx.InFlight(func(k string) error { inflight = append(inflight, k); return nil })
		return tx.Quarantined(func(q reaper.QuarantinedRecord) error { recs = append(recs, q); return nil })
	})
	if len(recs) != 1 || recs[0].Key != "e2b/c" || string(recs[0].Raw) != "garbage" || recs[0].Reason == "" {
		t.Fatalf("quarantined = %+v, want e2b/c with its raw bytes and reason", recs)
	}
	if len(inflight) != 0 {
		t.Fatalf("in-flight set still names %v", inflight)
	}
}

// TestMigrateFromSchema1 builds a ledger in the version 1 layout and opens
// it: the indexes are rebuilt for version 2 once, undecodable records are
// quarantined, and nothing is lost.
func TestMigrateFromSchema1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v1.db")
	bdb, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	js := func(v any) []byte { b, _ := json.Marshal(v); return b }
	key := func(at time.Time, kind byte, k string) []byte {
		b := make([]byte, 9+len(k))
		binary.BigEndian.PutUint64(b, uint64(at.UnixNano()))
		b[8] = kind
		copy(b[9:], k)
		return b
	}
	ended := map[string]any{"id": "s1", "started_at": t0, "last_heartbeat": t0, "ended_at": t0, "end_reason": "session-ended", "settled": true}
	live := map[string]any{"id": "s2", "lease": "1h0m0s", "started_at": t0, "last_heartbeat": t0}
	k := &reaper.Entry{Provider: "e2b", ID: "k", Session: "s1", Keep: true, RegisteredAt: t0, State: reaper.StateActive}
	x := &reaper.Entry{Provider: "e2b", ID: "x", Session: "s2", RegisteredAt: t0, ExpiresAt: t0.Add(2 * time.Hour), State: reaper.StateActive}
	c := &reaper.Entry{Provider: "e2b", ID: "c", RegisteredAt: t0, State: reaper.StateClosing, ClosingSince: t0, InFlight: true,
		Attempts: 1, NextAttemptAt: t0.Add(65 * time.Second)}
	err = bdb.Update(func(tx *bolt.Tx) error {
		b := map[string]*bolt.Bucket{}
		for _, name := range []string{"meta", "entries", "sessions", "session_entries", "deadlines", "processes", "retire", "audit"} {
			bk, err := tx.CreateBucket([]byte(name))
			if err != nil {
				return err
			}
			b[name] = bk
		}
		v := make([]byte, 8)
		binary.BigEndian.PutUint64(v, 1)
		puts := []struct {
			bucket string
			k, v   []byte
		}{
			{"meta", []byte("schema"), v},
			{"sessions", []byte("s1"), js(ended)},
			{"sessions", []byte("s2"), js(live)},
			{"sessions", []byte("bad-session"), []byte("{")},
			{"entries", []byte("e2b/k"), js(k)},
			{"entries", []byte("e2b/x"), js(x)},
			{"entries", []byte("e2b/c"), js(c)},
			{"entries", []byte("e2b/bad"), []byte("not json")},
			{"session_entries", []byte("s1\x00e2b/k"), nil},
			{"session_entries", []byte("s2\x00e2b/x"), nil},
			// Version 1 keys: an ended unsettled session had a deadline; a
			// live session at its lease end; x at its expiry; c at its
			// attempt lease.
			{"deadlines", key(t0.Add(time.Hour), 's', "s2"), nil},
			{"deadlines", key(t0.Add(2*time.Hour), 'e', "e2b/x"), nil},
			{"deadlines", key(t0.Add(65*time.Second), 'e', "e2b/c"), nil},
			{"retire", key(t0, 's', "s1"), nil},
		}
		for _, p := range puts {
			if err := b[p.bucket].Put(p.k, p.v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	bdb.Close()

	db, err := ledger.Open(path, ledger.Options{})
	if err != nil {
		t.Fatalf("open a version 1 ledger: %v", err)
	}
	defer func() { db.Close(); ledgertest.Check(t, path) }()
	_ = db.Bolt().View(func(tx *bolt.Tx) error {
		if v := tx.Bucket([]byte("meta")).Get([]byte("schema")); binary.BigEndian.Uint64(v) != ledger.SchemaVersion {
			t.Errorf("schema after migration = %d", binary.BigEndian.Uint64(v))
		}
		return nil
	})
	if got := due(t, db, t0.Add(3*time.Hour)); fmt.Sprint(got) != "[s:s2 e:e2b/x]" {
		t.Errorf("Due after migration = %v, want s2 at its lease end and x at its expiry (c is in flight: not due)", got)
	}
	var inflight []string
	var quarantined []string
	_ = db.View(context.Background(), func(tx reaper.Tx) error {
		_ = tx.InFlight(func(k string) error { inflight = append(inflight, k); return nil })
		return tx.Quarantined(func(q reaper.QuarantinedRecord) error { quarantined = append(quarantined, q.Key); return nil })
	})
	if !slices.Equal(inflight, []string{"e2b/c"}) {
		t.Errorf("in-flight set = %v, want e2b/c (resumed at start)", inflight)
	}
	slices.Sort(quarantined)
	if !slices.Equal(quarantined, []string{"bad-session", "e2b/bad"}) {
		t.Errorf("quarantined = %v, want the two undecodable records", quarantined)
	}
	// Removing keep from k, whose session ended, makes it due at once.
	k.Keep = false
	put(t, db, k)
	if got := due(t, db, t0); fmt.Sprint(got) != "[e:e2b/k]" {
		t.Errorf("Due after keep was removed = %v, want e2b/k", got)
	}
	// Opening again does not migrate again.
	db.Close()
	db, err = ledger.Open(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
}

// TestFullDiskIsUnavailable fills a tiny tmpfs that holds the ledger: a
// commit fails with an EUNAVAILABLE error naming the cause, the failure is
// reported by WriteError, nothing is half-written, and the same ledger
// works again once space is freed. It needs root to mount the tmpfs.
func TestFullDiskIsUnavailable(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs of a known size (CI runs as root)")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, 0) })
	db, err := ledger.Open(filepath.Join(dir, "ledger.db"), ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			break
		}
	}
	f.Close()
	var big []*reaper.Entry
	for i := range 200 {
		e := active(fmt.Sprintf("full-%03d", i), time.Time{})
		e.Labels = map[string]string{"pad": string(make([]byte, 400))}
		big = append(big, e)
	}
	err = db.Update(context.Background(), func(tx reaper.Tx) error {
		for _, e := range big {
			if err := tx.PutEntry(e); err != nil {
				return err
			}
		}
		return nil
	})
	if reaper.ErrorCode(err) != reaper.EUNAVAILABLE || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Update on a full disk = %v (code %s), want unavailable wrapping ENOSPC", err, reaper.ErrorCode(err))
	}
	if msg := reaper.ErrorMessage(err); !strings.Contains(msg, "no space left on device") || !strings.Contains(msg, "ledger.db") {
		t.Fatalf("message %q must name the ledger and the cause", msg)
	}
	if db.WriteError() == nil {
		t.Fatal("WriteError = nil while commits fail")
	}
	var n int
	_ = db.View(context.Background(), func(tx reaper.Tx) error {
		return tx.Entries(reaper.EntryFilter{}, func(*reaper.Entry) error { n++; return nil })
	})
	if n != 0 {
		t.Fatalf("%d entries of the failed commit are visible", n)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	put(t, db, big[0])
	if db.WriteError() != nil {
		t.Fatalf("WriteError = %v after a commit succeeded", db.WriteError())
	}
}

// TestVerificationLivesInTheIndex: marking an entry seen or unverified
// changes what reads return, but never rewrites the entry's record.
func TestVerificationLivesInTheIndex(t *testing.T) {
	db := ledgertest.Open(t)
	put(t, db, active("a", time.Time{}), active("b", time.Time{}))
	raw := func(key string) string {
		var v []byte
		_ = db.Bolt().View(func(tx *bolt.Tx) error { v = bytes.Clone(tx.Bucket([]byte("entries")).Get([]byte(key))); return nil })
		return string(v)
	}
	before := raw("e2b/a") + raw("e2b/b")
	var unseen []string
	read := func() (a, b *reaper.Entry) {
		unseen = nil
		_ = db.View(context.Background(), func(tx reaper.Tx) error {
			a, _ = tx.Entry("e2b/a")
			b, _ = tx.Entry("e2b/b")
			return tx.Unseen("e2b", func(e *reaper.Entry) error { unseen = append(unseen, e.ID); return nil })
		})
		return a, b
	}
	if a, b := read(); a.Seen || b.Seen || a.Unverified || !slices.Equal(unseen, []string{"a", "b"}) {
		t.Fatalf("new entries: a %+v, b %+v, unseen %v; want both unseen", a, b, unseen)
	}
	update(t, db, func(tx reaper.Tx) error {
		a, _ := tx.Entry("e2b/a")
		b, _ := tx.Entry("e2b/b")
		if err := tx.SetVerification(a, true, false); err != nil {
			return err
		}
		return tx.SetVerification(b, false, true)
	})
	a, b := read()
	if !a.Seen || a.Unverified || b.Seen || !b.Unverified || !slices.Equal(unseen, []string{"b"}) {
		t.Fatalf("after verification: a seen=%v unverified=%v, b seen=%v unverified=%v, unseen %v", a.Seen, a.Unverified, b.Seen, b.Unverified, unseen)
	}
	if after := raw("e2b/a") + raw("e2b/b"); after != before {
		t.Fatal("verification rewrote an entry's record")
	}
	// A later write of the entry keeps what was verified.
	b.Labels = map[string]string{"k": "v"}
	put(t, db, b)
	if _, b2 := read(); !b2.Unverified || b2.Seen {
		t.Fatalf("after a rewrite b = %+v, want still unverified", b2)
	}
}

// TestOpenMigratesVersion2Events: a version 2 ledger wrote its events as
// JSON. Version 3 reads them as they are, beside the binary ones it writes,
// and a report over both sees them all.
func TestOpenMigratesVersion2Events(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	db, err := ledger.Open(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	bdb, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	old := reaper.AuditEvent{Time: t0, Kind: reaper.EventRegistered, Key: "e2b/old", Session: "s1"}
	err = bdb.Update(func(tx *bolt.Tx) error {
		v := make([]byte, 8)
		binary.BigEndian.PutUint64(v, 2)
		if err := tx.Bucket([]byte("meta")).Put([]byte("schema"), v); err != nil {
			return err
		}
		k := make([]byte, 16)
		binary.BigEndian.PutUint64(k, uint64(t0.UnixNano()))
		binary.BigEndian.PutUint64(k[8:], 1)
		v, err := json.Marshal(old)
		if err != nil {
			return err
		}
		return tx.Bucket([]byte("audit")).Put(k, v)
	})
	if err != nil {
		t.Fatal(err)
	}
	bdb.Close()

	db, err = ledger.Open(path, ledger.Options{})
	if err != nil {
		t.Fatalf("open a version 2 ledger: %v", err)
	}
	defer func() { db.Close(); ledgertest.Check(t, path) }()
	newer := reaper.AuditEvent{Time: t0.Add(time.Minute), Kind: reaper.EventClosed, Key: "e2b/old", Reason: reaper.ReasonExpired}
	if err := db.Update(context.Background(), func(tx reaper.Tx) error { return tx.Append(newer) }); err != nil {
		t.Fatal(err)
	}
	var got []reaper.AuditEvent
	_ = db.View(context.Background(), func(tx reaper.Tx) error {
		return tx.Audit(t0, func(ev reaper.AuditEvent) error { got = append(got, ev); return nil })
	})
	if len(got) != 2 || !got[0].Time.Equal(old.Time) || got[0].Key != old.Key || got[0].Session != "s1" ||
		got[1].Kind != reaper.EventClosed || got[1].Reason != reaper.ReasonExpired {
		t.Errorf("events after migration = %+v, want the JSON one then the binary one", got)
	}
	_ = db.Bolt().View(func(tx *bolt.Tx) error {
		if v := tx.Bucket([]byte("meta")).Get([]byte("schema")); binary.BigEndian.Uint64(v) != ledger.SchemaVersion {
			t.Errorf("schema after open = %d, want %d", binary.BigEndian.Uint64(v), ledger.SchemaVersion)
		}
		return nil
	})
}
