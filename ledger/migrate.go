package ledger

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/reaperd/reaperd/reaper"
	bolt "go.etcd.io/bbolt"
)

// migrate brings a ledger of an older schema to SchemaVersion inside btx.
//
// From version 1: the deadline, retire, closing and in-flight indexes are
// rebuilt from the entries and sessions, because version 2 indexes an
// entry's deadline at reaper.DueAt (which folds in its session's end) and
// no longer keeps a deadline for ended sessions. Records that cannot be
// decoded are quarantined. The cost is one pass over the ledger, once.
//
// From version 2: nothing; version 3 reads version 2's JSON events as they
// are.
//
// From version 3: the keep index is built, and the entries and sessions,
// still JSON, are marked for rewriting in the binary form, which Open does
// after this transaction, in chunks (rewriteRecords). Both forms are read, so a crash
// between chunks loses nothing: the next Open goes on where it stopped.
func migrate(btx *bolt.Tx, from uint64) error {
	if from < 1 || from >= SchemaVersion {
		return fmt.Errorf("no migration from schema version %d", from)
	}
	if from == 1 {
		if err := migrate1(btx); err != nil {
			return err
		}
	}
	if from <= 3 {
		return migrate3(btx)
	}
	return nil
}

// migrate3 builds the keep index, moves the unverified marks to their
// index, and marks the records for rewriting.
func migrate3(btx *bolt.Tx) error {
	keep := btx.Bucket(bucketKeep)
	err := btx.Bucket(bucketEntries).ForEach(func(k, v []byte) error {
		// Only a keep entry needs decoding; JSON writes keep as "keep":true.
		if !bytes.Contains(v, []byte(`"keep":true`)) {
			return nil
		}
		e, err := decodeEntry(k, v)
		if err != nil || e.State != reaper.StateActive || !e.Keep {
			return nil // an undecodable one is quarantined when it is read
		}
		return keep.Put(k, nil)
	})
	if err != nil {
		return fmt.Errorf("index keep entries: %w", err)
	}
	// Version 3 marked an unverified entry 'u' in the unseen index; version
	// 4 files it in the unverified index.
	unseen, unv := btx.Bucket(bucketUnseen), btx.Bucket(bucketUnverified)
	var marked [][]byte
	err = unseen.ForEach(func(k, v []byte) error {
		if len(v) == 1 && v[0] == 'u' {
			marked = append(marked, bytes.Clone(k))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range marked {
		if err := unv.Put(k, nil); err != nil {
			return err
		}
		if err := unseen.Delete(k); err != nil {
			return err
		}
	}
	// The counts are taken again, with the unverified entries and the joins.
	if err := btx.Bucket(bucketMeta).Delete(keyCounted); err != nil {
		return err
	}
	return btx.Bucket(bucketMeta).Put(keyReencode, []byte{})
}

// moveMembers moves the session membership of a version 3 ledger
// (session_entries: session NUL key) to session_members, ordered by
// registration time within a session, rewriteChunk keys to a transaction,
// and deletes the old bucket once it is empty. A membership whose entry is
// missing, unreadable or of another session is dropped, as Prune would.
func (db *DB) moveMembers() error {
	for {
		done := false
		err := db.bolt.Update(func(btx *bolt.Tx) error {
			old := btx.Bucket(bucketSessionEntries)
			if old == nil {
				done = true
				return nil
			}
			ents, members := btx.Bucket(bucketEntries), btx.Bucket(bucketSessionMembers)
			var moved [][]byte
			c := old.Cursor()
			for k, _ := c.First(); k != nil && len(moved) < rewriteChunk; k, _ = c.Next() {
				moved = append(moved, bytes.Clone(k))
			}
			if len(moved) == 0 {
				done = true
				return btx.DeleteBucket(bucketSessionEntries)
			}
			for _, k := range moved {
				id, key, ok := bytes.Cut(k, []byte{0})
				if ok {
					if v := ents.Get(key); v != nil {
						if e, err := decodeEntry(key, v); err == nil && e.Session == string(id) {
							if err := members.Put(memberKey(e.Session, e.RegisteredAt, e.Key()), nil); err != nil {
								return err
							}
						}
					}
				}
				if err := old.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("open ledger %s: move session membership: %w", db.path, err)
		}
		if done {
			return nil
		}
	}
}

// rewriteChunk is how many records one transaction of rewriteRecords
// rewrites.
var rewriteChunk = 20_000

// rewriteRecords rewrites the JSON entries and sessions of a migrated
// ledger in the binary form, rewriteChunk at a time, and clears the mark
// when it is done. Only the records change: no index key depends on the
// form.
func (db *DB) rewriteRecords() error {
	recode := map[string]func(k, v []byte) ([]byte, error){
		string(bucketEntries): func(k, v []byte) ([]byte, error) {
			e, err := decodeEntry(k, v)
			if err != nil {
				return nil, err
			}
			return encodeEntry(e)
		},
		string(bucketSessions): func(k, v []byte) ([]byte, error) {
			s, err := decodeSession(k, v)
			if err != nil {
				return nil, err
			}
			return encodeSession(s), nil
		},
	}
	for {
		done := false
		err := db.bolt.Update(func(btx *bolt.Tx) error {
			meta := btx.Bucket(bucketMeta)
			mark := meta.Get(keyReencode)
			if mark == nil {
				done = true
				return nil
			}
			// The mark is the bucket being rewritten, NUL, the last key
			// rewritten; empty at the start.
			bucket, from, _ := bytes.Cut(mark, []byte{0})
			if len(bucket) == 0 {
				bucket = bucketEntries
			}
			fn := recode[string(bucket)]
			if fn == nil {
				return fmt.Errorf("unknown bucket %q in the rewrite mark", bucket)
			}
			b := btx.Bucket(bucket)
			type rec struct{ k, v []byte }
			var recs []rec
			c := b.Cursor()
			k, v := c.First()
			if len(from) > 0 {
				if k, v = c.Seek(from); k != nil && bytes.Equal(k, from) {
					k, v = c.Next()
				}
			}
			var last []byte
			for n := 0; k != nil && n < rewriteChunk; k, v = c.Next() {
				last = k
				if len(v) == 0 || v[0] != '{' {
					continue
				}
				nv, err := fn(k, v)
				if err != nil {
					continue // left as it is, to be quarantined when read
				}
				recs = append(recs, rec{bytes.Clone(k), nv})
				n++
			}
			next := append(append(bytes.Clone(bucket), 0), last...)
			for _, r := range recs {
				if err := b.Put(r.k, r.v); err != nil {
					return err
				}
			}
			switch {
			case k != nil:
				return meta.Put(keyReencode, next)
			case bytes.Equal(bucket, bucketEntries):
				return meta.Put(keyReencode, append(bytes.Clone(bucketSessions), 0))
			}
			done = true
			return meta.Delete(keyReencode)
		})
		if err != nil {
			return fmt.Errorf("open ledger %s: rewrite records in the binary form: %w", db.path, err)
		}
		if done {
			return nil
		}
	}
}

// migrate1 rebuilds the indexes of a version 1 ledger.
func migrate1(btx *bolt.Tx) error {
	for _, name := range [][]byte{bucketDeadlines, bucketRetire, bucketClosing, bucketInFlight, bucketUnseen} {
		if err := btx.DeleteBucket(name); err != nil && !errors.Is(err, bolt.ErrBucketNotFound) {
			return fmt.Errorf("reset bucket %s: %w", name, err)
		}
		if _, err := btx.CreateBucket(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	t := &tx{tx: btx}
	now := time.Now().UTC()

	sessions := map[string]*reaper.Session{}
	var bad []string
	err := t.bucket(bucketSessions).ForEach(func(k, v []byte) error {
		s, err := decodeSession(k, v)
		if err != nil {
			bad = append(bad, string(k))
			return nil
		}
		sessions[s.ID] = s
		return nil
	})
	if err != nil {
		return err
	}
	for _, id := range bad {
		if err := t.Quarantine(reaper.DueSession, id, "undecodable when migrating the ledger", now); err != nil {
			return err
		}
	}
	dl, ret := t.bucket(bucketDeadlines), t.bucket(bucketRetire)
	for id, s := range sessions {
		if d := s.Deadline(); !d.IsZero() {
			if err := dl.Put(indexKey(d, reaper.DueSession, id), nil); err != nil {
				return err
			}
		}
		if r := sessionRetireAt(s); !r.IsZero() {
			if err := ret.Put(indexKey(r, reaper.DueSession, id), nil); err != nil {
				return err
			}
		}
	}

	bad = bad[:0]
	var ents []*reaper.Entry
	err = t.bucket(bucketEntries).ForEach(func(k, v []byte) error {
		e, err := decodeEntry(k, v)
		if err != nil {
			bad = append(bad, string(k))
			return nil
		}
		ents = append(ents, e)
		return nil
	})
	if err != nil {
		return err
	}
	for _, key := range bad {
		if err := t.Quarantine(reaper.DueEntry, key, "undecodable when migrating the ledger", now); err != nil {
			return err
		}
	}
	for _, e := range ents {
		var s *reaper.Session
		if e.Session != "" {
			s = sessions[e.Session]
		}
		if err := t.indexEntry(e, s); err != nil {
			return err
		}
	}
	return nil
}
