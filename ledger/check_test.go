package ledger_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reaperd/reaperd/ledger"
	"github.com/reaperd/reaperd/reaper"
	bolt "go.etcd.io/bbolt"
)

var checkT0 = time.Date(2026, 6, 1, 10, 0, 0, 0, time.UTC)

// rawIndexKey is an index key written by hand: big-endian unix
// nanoseconds, the kind byte, the key.
func rawIndexKey(at time.Time, kind byte, key string) []byte {
	b := make([]byte, 9+len(key))
	binary.BigEndian.PutUint64(b, uint64(at.UnixNano()))
	b[8] = kind
	copy(b[9:], key)
	return b
}

// rawMemberKey is a membership's key in session_members.
func rawMemberKey(session string, at time.Time, key string) []byte {
	return append(append(append([]byte(session), 0), rawU64(uint64(at.UnixNano()))...), key...)
}

// rawJoinKey is a membership's key in session_joins.
func rawJoinKey(at time.Time, session, key string) []byte {
	return append(append(append(rawU64(uint64(at.UnixNano())), session...), 0), key...)
}

func rawU64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

// buildCheckLedger writes, through the ledger's own API, a ledger with
// entries in every state and sessions of every kind, closes it and
// returns its path.
func buildCheckLedger(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ledger.db")
	db, err := ledger.Open(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	at := func(d time.Duration) time.Time { return checkT0.Add(d) }
	sessions := []*reaper.Session{
		{ID: "s-live", Lease: reaper.Duration(time.Hour), StartedAt: checkT0, LastHeartbeat: checkT0},
		{ID: "s-pid", StartedAt: checkT0, LastHeartbeat: checkT0, PID: 4242, PIDStart: 1},
		{ID: "s-ended", StartedAt: checkT0, LastHeartbeat: checkT0, EndedAt: at(10 * time.Minute), EndReason: reaper.ReasonSessionEnded},
	}
	ent := func(id string) *reaper.Entry {
		return &reaper.Entry{Provider: "e2b", ID: id, State: reaper.StateActive, RegisteredAt: checkT0}
	}
	exp := ent("exp")
	exp.ExpiresAt = at(2 * time.Hour)
	live := ent("live")
	live.Session, live.ExpiresAt = "s-live", at(3*time.Hour)
	ended := ent("ended")
	ended.Session, ended.ExpiresAt, ended.Seen = "s-ended", at(5*time.Hour), true
	keep := ent("keep")
	keep.Session, keep.Keep, keep.Seen = "s-ended", true, true
	closing := ent("c")
	closing.State, closing.ClosingSince, closing.NextAttemptAt, closing.Seen = reaper.StateClosing, checkT0, at(time.Minute), true
	inFlight := ent("f")
	inFlight.State, inFlight.ClosingSince, inFlight.InFlight, inFlight.Seen = reaper.StateClosing, checkT0, true, true
	done := ent("done")
	done.State, done.ClosedAt = reaper.StateClosed, at(30*time.Minute)
	released := ent("rel")
	released.Session, released.State, released.ClosedAt = "s-pid", reaper.StateReleased, at(40*time.Minute)
	err = db.Update(context.Background(), func(tx reaper.Tx) error {
		for _, s := range sessions {
			if err := tx.PutSession(s); err != nil {
				return err
			}
		}
		for _, e := range []*reaper.Entry{exp, live, ended, keep, closing, inFlight, done, released} {
			if err := tx.PutEntry(e); err != nil {
				return err
			}
		}
		if err := tx.SetVerification(live, false, true); err != nil {
			return err
		}
		for i, k := range []reaper.EventKind{reaper.EventRegistered, reaper.EventCloseStarted, reaper.EventClosed} {
			if err := tx.Append(reaper.AuditEvent{Time: at(time.Duration(i) * time.Second), Kind: k, Key: "e2b/done"}); err != nil {
				return err
			}
		}
		return tx.PutUntracked("e2b", "stray", checkT0)
	})
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// mutate changes a closed ledger file with raw bbolt writes.
func mutate(t *testing.T, path string, fn func(tx *bolt.Tx) error) {
	t.Helper()
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	if err := bdb.Update(fn); err != nil {
		t.Fatalf("mutate %s: %v", path, err)
	}
}

func rawPut(bucket string, k, v []byte) func(*bolt.Tx) error {
	return func(tx *bolt.Tx) error { return tx.Bucket([]byte(bucket)).Put(k, v) }
}

func rawDel(bucket string, k []byte) func(*bolt.Tx) error {
	return func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucket))
		if b.Get(k) == nil {
			return errors.New("no such key to delete: the test's key is wrong")
		}
		return b.Delete(k)
	}
}

func rawAll(fns ...func(*bolt.Tx) error) func(*bolt.Tx) error {
	return func(tx *bolt.Tx) error {
		for _, fn := range fns {
			if err := fn(tx); err != nil {
				return err
			}
		}
		return nil
	}
}

func TestCheckCleanLedger(t *testing.T) {
	path := buildCheckLedger(t)
	rep, err := ledger.Check(path)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || len(rep.Notes) > 0 || rep.Skipped != "" {
		t.Fatalf("Check of a ledger written by the ledger = corrupt %v, findings %v, notes %v, skipped %q; want clean",
			rep.Corrupt, rep.Findings, rep.Notes, rep.Skipped)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[reaper.State]int{reaper.StateActive: 4, reaper.StateClosing: 2, reaper.StateClosed: 1, reaper.StateReleased: 1}
	for st, n := range want {
		if rep.Entries[st] != n {
			t.Errorf("entries %s = %d, want %d", st, rep.Entries[st], n)
		}
	}
	if rep.TotalEntries() != 8 || rep.Sessions != 3 || rep.Events != 3 || rep.Untracked != 1 || rep.Quarantined != 0 {
		t.Errorf("report counts %d entries, %d sessions, %d events, %d untracked, %d quarantined; want 8, 3, 3, 1, 0",
			rep.TotalEntries(), rep.Sessions, rep.Events, rep.Untracked, rep.Quarantined)
	}
	if rep.Schema != ledger.SchemaVersion || rep.Size != fi.Size() {
		t.Errorf("report schema %d, size %d; want %d, %d", rep.Schema, rep.Size, ledger.SchemaVersion, fi.Size())
	}
}

// TestCheckFindsBrokenIndexes breaks one index or record at a time with raw
// bbolt writes and checks that Check names it, and nothing else.
func TestCheckFindsBrokenIndexes(t *testing.T) {
	at := func(d time.Duration) time.Time { return checkT0.Add(d) }
	type finding struct{ bucket, key, problem string }
	badEvent := append(rawU64(uint64(checkT0.UnixNano())), rawU64(999)...)
	tests := []struct {
		name   string
		mutate func(*bolt.Tx) error
		want   []finding
	}{
		{"active entry without its deadline",
			rawDel("deadlines", rawIndexKey(at(2*time.Hour), 'e', "e2b/exp")),
			[]finding{{"deadlines", "2026-06-01T12:00:00Z entry e2b/exp", "missing: active entry e2b/exp is due then"}}},
		{"deadline moved off the entry's expiry",
			rawAll(rawDel("deadlines", rawIndexKey(at(2*time.Hour), 'e', "e2b/exp")), rawPut("deadlines", rawIndexKey(at(time.Hour), 'e', "e2b/exp"), nil)),
			[]finding{
				{"deadlines", "2026-06-01T12:00:00Z entry e2b/exp", "missing"},
				{"deadlines", "2026-06-01T11:00:00Z entry e2b/exp", "the entry is due at 2026-06-01T12:00:00Z"},
			}},
		{"entry indexed at its expiry, not its ended session's end",
			rawAll(rawDel("deadlines", rawIndexKey(at(10*time.Minute), 'e', "e2b/ended")), rawPut("deadlines", rawIndexKey(at(5*time.Hour), 'e', "e2b/ended"), nil)),
			[]finding{
				{"deadlines", "2026-06-01T10:10:00Z entry e2b/ended", "missing: active entry e2b/ended is due then"},
				{"deadlines", "2026-06-01T15:00:00Z entry e2b/ended", "the entry is due at 2026-06-01T10:10:00Z"},
			}},
		{"deadline naming no entry",
			rawPut("deadlines", rawIndexKey(checkT0, 'e', "e2b/ghost"), nil),
			[]finding{{"deadlines", "2026-06-01T10:00:00Z entry e2b/ghost", "no such entry"}}},
		{"deadline of a keep entry",
			rawPut("deadlines", rawIndexKey(checkT0, 'e', "e2b/keep"), nil),
			[]finding{{"deadlines", "2026-06-01T10:00:00Z entry e2b/keep", "the entry is active (keep) and never due"}}},
		{"deadline of an in-flight close",
			rawPut("deadlines", rawIndexKey(checkT0, 'e', "e2b/f"), nil),
			[]finding{{"deadlines", "2026-06-01T10:00:00Z entry e2b/f", "the entry is closing (in flight) and never due"}}},
		{"live session without its lease deadline",
			rawDel("deadlines", rawIndexKey(at(time.Hour), 's', "s-live")),
			[]finding{{"deadlines", "2026-06-01T11:00:00Z session s-live", "missing: the lease of session s-live ends then"}}},
		{"deadline of an ended session",
			rawPut("deadlines", rawIndexKey(checkT0, 's', "s-ended"), nil),
			[]finding{{"deadlines", "2026-06-01T10:00:00Z session s-ended", "no lease to lapse"}}},
		{"deadline of an unknown kind",
			rawPut("deadlines", rawIndexKey(checkT0, 'x', "e2b/exp"), nil),
			[]finding{{"deadlines", `2026-06-01T10:00:00Z kind-"x" e2b/exp`, "unknown kind"}}},
		{"malformed deadline key",
			rawPut("deadlines", []byte{1, 2, 3}, nil),
			[]finding{{"deadlines", "0x010203", "malformed key: 3 bytes"}}},
		{"closing entry missing from closing",
			rawDel("closing", []byte("e2b/c")),
			[]finding{{"closing", "e2b/c", "missing: the entry is closing"}}},
		{"active entry in closing",
			rawPut("closing", []byte("e2b/exp"), nil),
			[]finding{{"closing", "e2b/exp", "the entry is active, not closing"}}},
		{"closing names no entry",
			rawPut("closing", []byte("e2b/ghost"), nil),
			[]finding{{"closing", "e2b/ghost", "no such entry"}}},
		{"in-flight entry missing from in_flight",
			rawDel("in_flight", []byte("e2b/f")),
			[]finding{{"in_flight", "e2b/f", "missing: the entry is marked in flight"}}},
		{"in_flight names a close not in flight",
			rawPut("in_flight", []byte("e2b/c"), nil),
			[]finding{{"in_flight", "e2b/c", "the entry is closing, not in flight"}}},
		{"unseen names a closed entry",
			rawPut("unseen", rawIndexKey(checkT0, 'e', "e2b/done"), nil),
			[]finding{{"unseen", "2026-06-01T10:00:00Z entry e2b/done", "the entry is closed"}}},
		{"unseen at another registration time",
			rawPut("unseen", rawIndexKey(at(time.Second), 'e', "e2b/exp"), nil),
			[]finding{{"unseen", "2026-06-01T10:00:01Z entry e2b/exp", "the entry was registered at 2026-06-01T10:00:00Z"}}},
		{"unseen names no entry",
			rawPut("unseen", rawIndexKey(checkT0, 'e', "e2b/ghost"), nil),
			[]finding{{"unseen", "2026-06-01T10:00:00Z entry e2b/ghost", "no such entry"}}},
		{"unseen with an unknown value",
			rawPut("unseen", rawIndexKey(checkT0, 'e', "e2b/exp"), []byte("x")),
			[]finding{{"unseen", "2026-06-01T10:00:00Z entry e2b/exp", `unknown value "x"`}}},
		{"entry missing from its session's members",
			rawDel("session_joins", rawJoinKey(checkT0, "s-live", "e2b/live")),
			[]finding{{"session_members", "s-live e2b/live", "missing: the entry belongs to session s-live"}, {"counts", "joins", "says 4; the joins number 3"}}},
		{"join of the wrong session",
			rawPut("session_joins", rawJoinKey(checkT0, "s-pid", "e2b/live"), nil),
			[]finding{{"session_joins", "2026-06-01T10:00:00Z s-pid e2b/live", `the entry belongs to session "s-live"`}, {"counts", "joins", "says 4; the joins number 5"}}},
		{"join at another time than the registration",
			rawPut("session_joins", rawJoinKey(checkT0.Add(time.Second), "s-live", "e2b/live"), nil),
			[]finding{{"session_joins", "2026-06-01T10:00:01Z s-live e2b/live", "the entry was registered at 2026-06-01T10:00:00Z"}, {"counts", "joins", "says 4; the joins number 5"}}},
		{"join naming no entry",
			rawPut("session_joins", rawJoinKey(checkT0, "s-live", "e2b/ghost"), nil),
			[]finding{{"session_joins", "2026-06-01T10:00:00Z s-live e2b/ghost", "no such entry"}, {"counts", "joins", "says 4; the joins number 5"}}},
		{"member of the wrong session",
			rawPut("session_members", rawMemberKey("s-pid", checkT0, "e2b/live"), nil),
			[]finding{{"session_members", "s-pid e2b/live", "the entry belongs to session s-live"}}},
		{"member without a session",
			rawPut("session_members", rawMemberKey("s-pid", checkT0, "e2b/exp"), nil),
			[]finding{{"session_members", "s-pid e2b/exp", "the entry belongs to no session"}}},
		{"member naming no entry",
			rawPut("session_members", rawMemberKey("s-live", checkT0, "e2b/ghost"), nil),
			[]finding{{"session_members", "s-live e2b/ghost", "no such entry"}}},
		{"member at another time than the registration",
			rawPut("session_members", rawMemberKey("s-live", checkT0.Add(time.Minute), "e2b/live"), nil),
			[]finding{{"session_members", "s-live e2b/live", "listed as registered at 2026-06-01T10:01:00Z"}}},
		{"malformed member key",
			rawPut("session_members", []byte("s-live\x00\x01"), nil),
			[]finding{{"session_members", "0x732d6c69766500" + "01", "malformed key"}}},
		{"live session with a pid missing from processes",
			rawDel("processes", []byte("s-pid")),
			[]finding{{"processes", "s-pid", "missing: session s-pid is live with pid 4242"}}},
		{"processes names an ended session",
			rawPut("processes", []byte("s-ended"), nil),
			[]finding{{"processes", "s-ended", "the session ended at 2026-06-01T10:10:00Z"}}},
		{"processes names a session without a pid",
			rawPut("processes", []byte("s-live"), nil),
			[]finding{{"processes", "s-live", "the session has no pid"}}},
		{"closed entry missing from retire",
			rawDel("retire", rawIndexKey(at(30*time.Minute), 'e', "e2b/done")),
			[]finding{{"retire", "2026-06-01T10:30:00Z entry e2b/done", "missing: the entry is closed since then"}}},
		{"retire names an active entry",
			rawPut("retire", rawIndexKey(checkT0, 'e', "e2b/exp"), nil),
			[]finding{{"retire", "2026-06-01T10:00:00Z entry e2b/exp", "the entry is active, not closed or released"}}},
		{"retire names a live session",
			rawPut("retire", rawIndexKey(checkT0, 's', "s-live"), nil),
			[]finding{{"retire", "2026-06-01T10:00:00Z session s-live", "the session lives"}}},
		{"undecodable entry",
			rawPut("entries", []byte("e2b/exp"), []byte("garbage")),
			[]finding{{"entries", "e2b/exp", "undecodable: malformed entry"}}},
		{"truncated entry",
			func(tx *bolt.Tx) error {
				b := tx.Bucket([]byte("entries"))
				v := b.Get([]byte("e2b/done"))
				return b.Put([]byte("e2b/done"), bytes.Clone(v[:len(v)-3]))
			},
			[]finding{{"entries", "e2b/done", "undecodable: malformed entry"}}},
		{"schema 3 entry record under another key",
			func(tx *bolt.Tx) error {
				v, _ := json.Marshal(&reaper.Entry{Provider: "e2b", ID: "done", State: reaper.StateActive, RegisteredAt: checkT0})
				return tx.Bucket([]byte("entries")).Put([]byte("e2b/moved"), v)
			},
			[]finding{{"entries", "e2b/moved", `undecodable: the record names "e2b/done"`}}},
		{"undecodable session",
			rawPut("sessions", []byte("s-pid"), []byte("{")),
			[]finding{{"sessions", "s-pid", "undecodable"}}},
		{"entry in an unknown state",
			func(tx *bolt.Tx) error {
				v, _ := json.Marshal(&reaper.Entry{Provider: "e2b", ID: "odd", State: "lost", RegisteredAt: checkT0})
				return tx.Bucket([]byte("entries")).Put([]byte("e2b/odd"), v)
			},
			[]finding{{"entries", "e2b/odd", `unknown state "lost"`}}},
		{"counts disagree with the entries",
			rawPut("counts", []byte("e2b\x00active"), rawU64(99)),
			[]finding{{"counts", "e2b active", "says 99; the entries number 4"}}},
		{"undecodable audit event",
			rawPut("audit", badEvent, []byte("nope")),
			[]finding{{"audit", "0x" + hex.EncodeToString(badEvent), "undecodable event"}}},
		{"schema newer than this reaperd",
			rawPut("meta", []byte("schema"), rawU64(9)),
			[]finding{{"meta", "schema", "version 9 is newer than this reaperd knows (4)"}}},
		{"schema version malformed",
			rawPut("meta", []byte("schema"), []byte{2}),
			[]finding{{"meta", "schema", "malformed: 1 bytes, want 8"}}},
		{"schema version missing",
			func(tx *bolt.Tx) error { return tx.Bucket([]byte("meta")).Delete([]byte("schema")) },
			[]finding{{"meta", "schema", "missing, but the ledger holds entries"}}},
		{"bucket missing",
			func(tx *bolt.Tx) error { return tx.DeleteBucket([]byte("closing")) },
			[]finding{{"closing", "", "the bucket is missing"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := buildCheckLedger(t)
			mutate(t, path, tt.mutate)
			rep, err := ledger.Check(path)
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK() {
				t.Fatalf("Check found nothing; want %v", tt.want)
			}
			var got []string
			for _, f := range rep.Findings {
				got = append(got, f.String())
			}
			if len(rep.Findings) != len(tt.want) {
				t.Fatalf("findings = %q, want %d like %v", got, len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				f := rep.Findings[i]
				if f.Bucket != w.bucket || f.Key != w.key || !strings.Contains(f.Problem, w.problem) {
					t.Errorf("finding %d = %q; want %s[%s] with %q", i, f.String(), w.bucket, w.key, w.problem)
				}
			}
		})
	}
}

// TestCheckNotesQuarantineLeftovers: quarantining records leaves index keys
// that the daemon drops as they come due; Check lists them as notes and
// passes.
func TestCheckNotesQuarantineLeftovers(t *testing.T) {
	path := buildCheckLedger(t)
	db, err := ledger.Open(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(context.Background(), func(tx reaper.Tx) error {
		if err := tx.Quarantine(reaper.DueEntry, "e2b/live", "test", checkT0); err != nil {
			return err
		}
		return tx.Quarantine(reaper.DueSession, "s-ended", "test", checkT0)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := ledger.Check(path)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("findings %v; want none: a quarantine's leftovers are expected", rep.Findings)
	}
	var got []string
	for _, n := range rep.Notes {
		got = append(got, n.Bucket+"["+n.Key+"]")
	}
	want := []string{
		"deadlines[2026-06-01T10:10:00Z entry e2b/ended]", // indexed at the quarantined session's end
		"deadlines[2026-06-01T13:00:00Z entry e2b/live]",
		"session_joins[2026-06-01T10:00:00Z s-live e2b/live]",
		"retire[2026-06-01T10:10:00Z session s-ended]",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("notes = %q, want %q", got, want)
	}
	if rep.Quarantined != 2 {
		t.Errorf("quarantined = %d, want 2", rep.Quarantined)
	}
}

func TestCheckRefusesAHeldLedger(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	db, err := ledger.Open(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	start := time.Now()
	_, err = ledger.Check(path)
	if !errors.Is(err, ledger.ErrLocked) || !strings.Contains(err.Error(), "stop the daemon, or check a backup") {
		t.Fatalf("Check of a held ledger = %v; want ErrLocked saying to stop the daemon or check a backup", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Check took %s to give up; want it to fail fast", d)
	}
}

func TestCheckUnreadableFiles(t *testing.T) {
	dir := t.TempDir()
	good := buildCheckLedger(t)
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		content []byte
		// wantErr: Check fails; otherwise it reports corruption.
		wantErr string
		corrupt string
	}{
		{"empty", nil, "the file is empty", ""},
		{"not a bbolt file", []byte(strings.Repeat("not a ledger\n", 2000)), "open ledger", ""},
		{"cut short", data[:3*os.Getpagesize()], "", "cut short"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-"))
			if err := os.WriteFile(path, tt.content, 0o600); err != nil {
				t.Fatal(err)
			}
			rep, err := ledger.Check(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Check = %v, %v; want an error mentioning %q", rep, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK() || len(rep.Corrupt) == 0 || !strings.Contains(rep.Corrupt[0], tt.corrupt) {
				t.Fatalf("Check corrupt = %q; want a report mentioning %q", rep.Corrupt, tt.corrupt)
			}
		})
	}
}
