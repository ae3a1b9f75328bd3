package ledger_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/reaperd/reaperd/ledger"
	"github.com/reaperd/reaperd/ledger/ledgertest"
	"github.com/reaperd/reaperd/reaper"
	bolt "go.etcd.io/bbolt"
)

// schema3Ledger writes ents to a new ledger, then turns it into what
// reaperd wrote at schema version 3: entries and sessions in JSON, no keep
// index. When rewritten is not empty, it leaves the ledger as a version 4
// migration interrupted after that entry key: the entries up to it
// rewritten, the rest JSON.
func schema3Ledger(t *testing.T, ents []*reaper.Entry, sessions []*reaper.Session, rewritten string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ledger.db")
	db, err := ledger.Open(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	put(t, db, ents...)
	err = db.Update(context.Background(), func(tx reaper.Tx) error {
		for _, s := range sessions {
			if err := tx.PutSession(s); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	bdb, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	err = bdb.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("entries"))
		for _, e := range ents {
			if rewritten != "" && e.Key() <= rewritten {
				continue
			}
			// What schema 3 stored: verification lives in the unseen index.
			js, err := json.Marshal(e)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(e.Key()), js); err != nil {
				return err
			}
		}
		for _, s := range sessions {
			js, err := json.Marshal(s)
			if err != nil {
				return err
			}
			if err := tx.Bucket([]byte("sessions")).Put([]byte(s.ID), js); err != nil {
				return err
			}
		}
		v := make([]byte, 8)
		meta := tx.Bucket([]byte("meta"))
		if rewritten != "" {
			binary.BigEndian.PutUint64(v, 4)
			if err := meta.Put([]byte("schema"), v); err != nil {
				return err
			}
			return meta.Put([]byte("reencode"), []byte("entries\x00"+rewritten))
		}
		binary.BigEndian.PutUint64(v, 3)
		if err := meta.Put([]byte("schema"), v); err != nil {
			return err
		}
		// Version 3 marked unverified entries 'u' in the unseen index,
		// kept session membership as session NUL key, counted only the
		// entries by state, and had no keep index.
		err := tx.Bucket([]byte("unverified")).ForEach(func(k, _ []byte) error {
			return tx.Bucket([]byte("unseen")).Put(k, []byte("u"))
		})
		if err != nil {
			return err
		}
		for _, name := range []string{"keep", "session_members", "session_joins", "unverified"} {
			if err := tx.DeleteBucket([]byte(name)); err != nil {
				return err
			}
		}
		se, err := tx.CreateBucket([]byte("session_entries"))
		if err != nil {
			return err
		}
		for _, e := range ents {
			if e.Session != "" {
				if err := se.Put([]byte(e.Session+"\x00"+e.Key()), nil); err != nil {
					return err
				}
			}
		}
		if err := se.Put([]byte("s0\x00e2b/gone"), nil); err != nil { // pruned since: dropped
			return err
		}
		counts := tx.Bucket([]byte("counts"))
		for _, k := range [][]byte{[]byte("\x01joins"), []byte("\x01unverified\x00e2b")} {
			if err := counts.Delete(k); err != nil {
				return err
			}
		}
		counted := make([]byte, 8) // not v: bbolt keeps the slices put until the commit
		binary.BigEndian.PutUint64(counted, 1)
		return meta.Put([]byte("counted"), counted)
	})
	if err != nil {
		t.Fatal(err)
	}
	return path
}

func schema4Sessions() []*reaper.Session {
	uid := uint32(1000)
	var out []*reaper.Session
	for i := range 4 {
		s := &reaper.Session{ID: fmt.Sprintf("s%d", i), Lease: reaper.Duration(time.Duration(i+1) * time.Minute),
			StartedAt: t0, LastHeartbeat: t0.Add(time.Duration(i) * time.Second), Owner: &uid}
		if i == 2 {
			s.EndedAt, s.EndReason = t0.Add(time.Hour), reaper.ReasonSessionEnded
		}
		out = append(out, s)
	}
	return out
}

func schema4Entries() []*reaper.Entry {
	var ents []*reaper.Entry
	for i := range 50 {
		e := &reaper.Entry{Provider: "e2b", ID: fmt.Sprintf("sb-%02d", i), Session: fmt.Sprintf("s%d", i%4),
			Labels: map[string]string{"n": fmt.Sprint(i)}, RegisteredAt: t0, ExpiresAt: t0.Add(time.Duration(i+1) * time.Hour),
			State: reaper.StateActive, Seen: true}
		switch i % 10 {
		case 3:
			e.Keep = true // indexed: active and keep
		case 4:
			e.Keep, e.State, e.ClosedAt, e.CloseReason = true, reaper.StateReleased, t0, reaper.ReasonReleased
		case 5:
			e.State, e.ClosingSince, e.Attempts, e.LastError = reaper.StateClosing, t0, 2, "boom"
		case 6:
			e.Seen, e.Unverified = false, true
		case 7:
			e.Seen = false // waits for its first listing
		}
		ents = append(ents, e)
	}
	return ents
}

// TestOpenMigratesSchema3Entries: a version 3 ledger opens as version 4,
// its JSON entries and sessions rewritten in the binary form in several transactions,
// its keep index built, every entry read back as it was, and the ledger
// consistent.
func TestOpenMigratesSchema3Entries(t *testing.T) {
	for _, c := range []struct {
		name      string
		rewritten string
	}{
		{"from version 3", ""},
		{"an interrupted rewrite goes on", "e2b/sb-21"},
	} {
		t.Run(c.name, func(t *testing.T) {
			defer ledger.SetRewriteChunk(7)()
			ents, sessions := schema4Entries(), schema4Sessions()
			path := schema3Ledger(t, ents, sessions, c.rewritten)

			db, err := ledger.Open(path, ledger.Options{})
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			var kept []string
			err = db.View(context.Background(), func(tx reaper.Tx) error {
				for _, want := range ents {
					got, err := tx.Entry(want.Key())
					if err != nil {
						return err
					}
					if !reflect.DeepEqual(got, want) {
						t.Errorf("entry after migration:\n got %+v\nwant %+v", got, want)
					}
				}
				for _, want := range sessions {
					var members []string
					for _, e := range ents {
						if e.Session == want.ID {
							members = append(members, e.Key())
						}
					}
					if got, err := tx.SessionEntries(want.ID); err != nil || !slices.Equal(got, members) {
						t.Errorf("session %s lists %v (%v), want %v", want.ID, got, err, members)
					}
					got, err := tx.Session(want.ID)
					if err != nil {
						return err
					}
					if !reflect.DeepEqual(got, want) {
						t.Errorf("session after migration:\n got %+v\nwant %+v", got, want)
					}
				}
				return tx.Kept(func(e *reaper.Entry) error { kept = append(kept, e.Key()); return nil })
			})
			if err != nil {
				t.Fatal(err)
			}
			if want := []string{"e2b/sb-03", "e2b/sb-13", "e2b/sb-23", "e2b/sb-33", "e2b/sb-43"}; !slices.Equal(kept, want) {
				t.Errorf("Kept = %v, want %v", kept, want)
			}
			var pending []string
			unverified := map[string]int{}
			err = db.View(context.Background(), func(tx reaper.Tx) error {
				if err := tx.Pending("", func(e *reaper.Entry) error { pending = append(pending, e.Key()); return nil }); err != nil {
					return err
				}
				return tx.Unverified(func(p string, n int) error { unverified[p] = n; return nil })
			})
			if err != nil {
				t.Fatal(err)
			}
			if want := []string{"e2b/sb-07", "e2b/sb-17", "e2b/sb-27", "e2b/sb-37", "e2b/sb-47"}; !slices.Equal(pending, want) {
				t.Errorf("Pending = %v, want %v", pending, want)
			}
			if unverified["e2b"] != 5 {
				t.Errorf("unverified = %v, want 5 for e2b", unverified)
			}
			db.Close()
			ledgertest.Check(t, path)
			if rep, err := ledger.Check(path); err != nil || !rep.OK() {
				t.Errorf("index check after migration: %v, findings %v", err, rep.Findings)
			}

			bdb, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer bdb.Close()
			_ = bdb.View(func(tx *bolt.Tx) error {
				meta := tx.Bucket([]byte("meta"))
				if v := meta.Get([]byte("schema")); binary.BigEndian.Uint64(v) != ledger.SchemaVersion {
					t.Errorf("schema = %d, want %d", binary.BigEndian.Uint64(v), ledger.SchemaVersion)
				}
				if meta.Get([]byte("reencode")) != nil {
					t.Error("the rewrite mark is still set")
				}
				if tx.Bucket([]byte("session_entries")) != nil {
					t.Error("version 3's session_entries bucket is still there")
				}
				for _, b := range []string{"entries", "sessions"} {
					_ = tx.Bucket([]byte(b)).ForEach(func(k, v []byte) error {
						if v[0] == '{' {
							t.Errorf("%s[%s] is still JSON", b, k)
						}
						return nil
					})
				}
				return nil
			})
		})
	}
}
