package ledger

import (
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
func migrate(btx *bolt.Tx, from uint64) error {
	switch from {
	case 1:
		return migrate1(btx)
	case 2:
		return nil // version 3 reads version 2's JSON events as they are
	}
	return fmt.Errorf("no migration from schema version %d", from)
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
