package ledger

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/reaperd/reaperd/reaper"
	bolt "go.etcd.io/bbolt"
)

// tx implements reaper.Tx on a bbolt transaction.
type tx struct {
	tx *bolt.Tx
}

var _ reaper.Tx = (*tx)(nil)

func (t *tx) Entry(key string) (*reaper.Entry, error) {
	v := t.tx.Bucket(bucketEntries).Get([]byte(key))
	if v == nil {
		return nil, nil
	}
	var e reaper.Entry
	if err := json.Unmarshal(v, &e); err != nil {
		return nil, fmt.Errorf("decode entry %s: %w", key, err)
	}
	return &e, nil
}

func (t *tx) PutEntry(e *reaper.Entry) error {
	key := e.Key()
	old, err := t.Entry(key)
	if err != nil {
		return err
	}
	dl, ret, se := t.tx.Bucket(bucketDeadlines), t.tx.Bucket(bucketRetire), t.tx.Bucket(bucketSessionEntries)
	if old != nil {
		if d := old.Deadline(); !d.IsZero() {
			if err := dl.Delete(indexKey(d, reaper.DueEntry, key)); err != nil {
				return err
			}
		}
		if old.State.Final() && !old.ClosedAt.IsZero() {
			if err := ret.Delete(indexKey(old.ClosedAt, reaper.DueEntry, key)); err != nil {
				return err
			}
		}
		if old.Session != "" && old.Session != e.Session {
			if err := se.Delete(sessionEntryKey(old.Session, key)); err != nil {
				return err
			}
		}
	}
	if d := e.Deadline(); !d.IsZero() {
		if err := dl.Put(indexKey(d, reaper.DueEntry, key), nil); err != nil {
			return err
		}
	}
	if e.State.Final() && !e.ClosedAt.IsZero() {
		if err := ret.Put(indexKey(e.ClosedAt, reaper.DueEntry, key), nil); err != nil {
			return err
		}
	}
	if e.Session != "" {
		if err := se.Put(sessionEntryKey(e.Session, key), nil); err != nil {
			return err
		}
	}
	v, err := encode(e)
	if err != nil {
		return fmt.Errorf("encode entry %s: %w", key, err)
	}
	return t.tx.Bucket(bucketEntries).Put([]byte(key), v)
}

func (t *tx) deleteEntry(e *reaper.Entry) error {
	key := e.Key()
	if d := e.Deadline(); !d.IsZero() {
		if err := t.tx.Bucket(bucketDeadlines).Delete(indexKey(d, reaper.DueEntry, key)); err != nil {
			return err
		}
	}
	if e.Session != "" {
		if err := t.tx.Bucket(bucketSessionEntries).Delete(sessionEntryKey(e.Session, key)); err != nil {
			return err
		}
	}
	return t.tx.Bucket(bucketEntries).Delete([]byte(key))
}

func (t *tx) Entries(f reaper.EntryFilter, fn func(*reaper.Entry) error) error {
	if f.Session != "" {
		keys, err := t.SessionEntries(f.Session)
		if err != nil {
			return err
		}
		for _, k := range keys {
			e, err := t.Entry(k)
			if err != nil {
				return err
			}
			if e != nil && f.Match(e) {
				if err := fn(e); err != nil {
					return err
				}
			}
		}
		return nil
	}
	c := t.tx.Bucket(bucketEntries).Cursor()
	var k, v []byte
	if f.Provider != "" {
		prefix := []byte(f.Provider + "/")
		for k, v = c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if err := t.visit(k, v, f, fn); err != nil {
				return err
			}
		}
		return nil
	}
	for k, v = c.First(); k != nil; k, v = c.Next() {
		if err := t.visit(k, v, f, fn); err != nil {
			return err
		}
	}
	return nil
}

func (t *tx) visit(k, v []byte, f reaper.EntryFilter, fn func(*reaper.Entry) error) error {
	var e reaper.Entry
	if err := json.Unmarshal(v, &e); err != nil {
		return fmt.Errorf("decode entry %s: %w", k, err)
	}
	if !f.Match(&e) {
		return nil
	}
	return fn(&e)
}

func (t *tx) Session(id string) (*reaper.Session, error) {
	v := t.tx.Bucket(bucketSessions).Get([]byte(id))
	if v == nil {
		return nil, nil
	}
	var s reaper.Session
	if err := json.Unmarshal(v, &s); err != nil {
		return nil, fmt.Errorf("decode session %s: %w", id, err)
	}
	return &s, nil
}

func (t *tx) PutSession(s *reaper.Session) error {
	old, err := t.Session(s.ID)
	if err != nil {
		return err
	}
	dl, ret, procs := t.tx.Bucket(bucketDeadlines), t.tx.Bucket(bucketRetire), t.tx.Bucket(bucketProcesses)
	if old != nil {
		if d := old.Deadline(); !d.IsZero() {
			if err := dl.Delete(indexKey(d, reaper.DueSession, s.ID)); err != nil {
				return err
			}
		}
		if old.Settled {
			if err := ret.Delete(indexKey(old.EndedAt, reaper.DueSession, s.ID)); err != nil {
				return err
			}
		}
	}
	if d := s.Deadline(); !d.IsZero() {
		if err := dl.Put(indexKey(d, reaper.DueSession, s.ID), nil); err != nil {
			return err
		}
	}
	if s.Ended() && s.Settled {
		if err := ret.Put(indexKey(s.EndedAt, reaper.DueSession, s.ID), nil); err != nil {
			return err
		}
	}
	if s.PID > 0 && !s.Ended() {
		err = procs.Put([]byte(s.ID), nil)
	} else {
		err = procs.Delete([]byte(s.ID))
	}
	if err != nil {
		return err
	}
	v, err := encode(s)
	if err != nil {
		return fmt.Errorf("encode session %s: %w", s.ID, err)
	}
	return t.tx.Bucket(bucketSessions).Put([]byte(s.ID), v)
}

func (t *tx) SessionEntries(id string) ([]string, error) {
	prefix := sessionEntryKey(id, "")
	var keys []string
	c := t.tx.Bucket(bucketSessionEntries).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		keys = append(keys, string(k[len(prefix):]))
	}
	return keys, nil
}

func (t *tx) Sessions(fn func(*reaper.Session) error) error {
	return t.tx.Bucket(bucketSessions).ForEach(func(k, v []byte) error {
		var s reaper.Session
		if err := json.Unmarshal(v, &s); err != nil {
			return fmt.Errorf("decode session %s: %w", k, err)
		}
		return fn(&s)
	})
}

func (t *tx) ProcessSessions(fn func(*reaper.Session) error) error {
	return t.tx.Bucket(bucketProcesses).ForEach(func(k, _ []byte) error {
		s, err := t.Session(string(k))
		if err != nil {
			return err
		}
		if s == nil {
			return nil
		}
		return fn(s)
	})
}

func (t *tx) Due(now time.Time, limit int) ([]reaper.DueItem, error) {
	var items []reaper.DueItem
	end := timeKey(now)
	c := t.tx.Bucket(bucketDeadlines).Cursor()
	for k, _ := c.First(); k != nil && (limit <= 0 || len(items) < limit); k, _ = c.Next() {
		if binary.BigEndian.Uint64(k) > end {
			break
		}
		at, kind, key, err := parseIndexKey(k)
		if err != nil {
			return nil, err
		}
		items = append(items, reaper.DueItem{At: at, Kind: kind, Key: key})
	}
	return items, nil
}

func (t *tx) NextDeadline() (time.Time, error) {
	k, _ := t.tx.Bucket(bucketDeadlines).Cursor().First()
	if k == nil {
		return time.Time{}, nil
	}
	at, _, _, err := parseIndexKey(k)
	return at, err
}

func (t *tx) Append(ev reaper.AuditEvent) error {
	b := t.tx.Bucket(bucketAudit)
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	v, err := encode(ev)
	if err != nil {
		return fmt.Errorf("encode audit event: %w", err)
	}
	k := make([]byte, 16)
	binary.BigEndian.PutUint64(k, timeKey(ev.Time))
	binary.BigEndian.PutUint64(k[8:], seq)
	return b.Put(k, v)
}

func (t *tx) Audit(since time.Time, fn func(reaper.AuditEvent) error) error {
	c := t.tx.Bucket(bucketAudit).Cursor()
	for k, v := c.Seek(u64(timeKey(since))); k != nil; k, v = c.Next() {
		var ev reaper.AuditEvent
		if err := json.Unmarshal(v, &ev); err != nil {
			return fmt.Errorf("decode audit event %x: %w", k, err)
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	return nil
}

func (t *tx) Prune(before time.Time, limit int) (reaper.PruneStats, error) {
	var st reaper.PruneStats
	end := timeKey(before)
	budget := func() bool { return limit <= 0 || st.Entries+st.Sessions+st.Events < limit }

	ret := t.tx.Bucket(bucketRetire)
	var retired [][]byte
	c := ret.Cursor()
	for k, _ := c.First(); k != nil && budget(); k, _ = c.Next() {
		if binary.BigEndian.Uint64(k) >= end {
			break
		}
		_, kind, key, err := parseIndexKey(k)
		if err != nil {
			return st, err
		}
		switch kind {
		case reaper.DueEntry:
			e, err := t.Entry(key)
			if err != nil {
				return st, err
			}
			if e != nil {
				if err := t.deleteEntry(e); err != nil {
					return st, err
				}
				st.Entries++
			}
		case reaper.DueSession:
			// A session goes once none of its entries remain.
			if keys, err := t.SessionEntries(key); err != nil {
				return st, err
			} else if len(keys) > 0 {
				continue
			}
			if err := t.tx.Bucket(bucketSessions).Delete([]byte(key)); err != nil {
				return st, err
			}
			st.Sessions++
		}
		retired = append(retired, bytes.Clone(k))
	}
	for _, k := range retired {
		if err := ret.Delete(k); err != nil {
			return st, err
		}
	}

	audit := t.tx.Bucket(bucketAudit)
	var old [][]byte
	ac := audit.Cursor()
	for k, _ := ac.First(); k != nil && budget(); k, _ = ac.Next() {
		if binary.BigEndian.Uint64(k) >= end {
			break
		}
		old = append(old, bytes.Clone(k))
		st.Events++
	}
	for _, k := range old {
		if err := audit.Delete(k); err != nil {
			return st, err
		}
	}
	return st, nil
}

func sessionEntryKey(session, key string) []byte {
	b := make([]byte, 0, len(session)+1+len(key))
	b = append(b, session...)
	b = append(b, 0)
	return append(b, key...)
}
