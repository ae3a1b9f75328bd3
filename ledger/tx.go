package ledger

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/reaperd/reaperd/reaper"
	bolt "go.etcd.io/bbolt"
)

// tx implements reaper.Tx on a bbolt transaction.
type tx struct {
	tx *bolt.Tx
	// wrote is set before the first write, so that the group committer can
	// tell a function that refused before writing (no rerun needed) from
	// one that failed after writing.
	wrote bool
}

var _ reaper.Tx = (*tx)(nil)

func (t *tx) write() { t.wrote = true }

func (t *tx) bucket(name []byte) *bolt.Bucket { return t.tx.Bucket(name) }

func decodeEntry(key, v []byte) (*reaper.Entry, error) {
	e, err := decodeEntryValue(key, v)
	if err != nil {
		return nil, &reaper.CorruptError{Kind: reaper.DueEntry, Key: string(key), Err: err}
	}
	return e, nil
}

func decodeSession(id, v []byte) (*reaper.Session, error) {
	s, err := decodeSessionValue(id, v)
	if err != nil {
		return nil, &reaper.CorruptError{Kind: reaper.DueSession, Key: string(id), Err: err}
	}
	return s, nil
}

func (t *tx) Entry(key string) (*reaper.Entry, error) {
	v := t.bucket(bucketEntries).Get([]byte(key))
	if v == nil {
		return nil, nil
	}
	return t.decodeEntry([]byte(key), v)
}

// decodeEntry decodes an entry and fills in its verification state, which
// lives in the unseen index so that verifying an entry never rewrites it.
func (t *tx) decodeEntry(key, v []byte) (*reaper.Entry, error) {
	e, err := decodeEntry(key, v)
	if err != nil {
		return nil, err
	}
	if e.State.Final() {
		return e, nil
	}
	k := unseenKey(e)
	switch {
	case has(t.bucket(bucketUnseen), k):
		e.Seen, e.Unverified = false, false
	case has(t.bucket(bucketUnverified), k):
		e.Seen, e.Unverified = false, true
	default:
		e.Seen, e.Unverified = true, false
	}
	return e, nil
}

// unseenKey is an entry's key in the unseen index: its registration time
// first, so that registrations append to the index (one page per commit)
// rather than scatter over it.
func unseenKey(e *reaper.Entry) []byte { return indexKey(e.RegisteredAt, reaper.DueEntry, e.Key()) }

func (t *tx) SetVerification(e *reaper.Entry, seen, unverified bool) error {
	k := unseenKey(e)
	if !has(t.bucket(bucketUnseen), k) && !has(t.bucket(bucketUnverified), k) {
		return nil // seen already, final, or no such entry
	}
	t.write()
	return t.setUnseen(e.Provider, k, !seen, unverified)
}

// setUnseen files the provider's entry, by its unseen key, in the unseen
// index (waiting for its first listing), in the unverified index (waiting,
// unverified) or in neither, and keeps the provider's count of unverified
// entries.
func (t *tx) setUnseen(provider string, k []byte, waiting, unverified bool) error {
	pending, unv := t.bucket(bucketUnseen), t.bucket(bucketUnverified)
	wasPending, wasUnverified := has(pending, k), has(unv, k)
	isPending, isUnverified := waiting && !unverified, waiting && unverified
	for _, c := range []struct {
		b       *bolt.Bucket
		was, is bool
	}{{pending, wasPending, isPending}, {unv, wasUnverified, isUnverified}} {
		switch {
		case c.is && !c.was:
			if err := c.b.Put(k, nil); err != nil {
				return err
			}
		case c.was && !c.is:
			if err := c.b.Delete(k); err != nil {
				return err
			}
		}
	}
	switch {
	case isUnverified && !wasUnverified:
		return t.countUnverified(provider, 1)
	case wasUnverified && !isUnverified:
		return t.countUnverified(provider, -1)
	}
	return nil
}

// sessionFor returns the session an entry's DueAt depends on: nil when the
// entry names none, or names one that is missing or unreadable (which
// DueAt treats alike), and nil without a lookup when DueAt does not depend
// on it.
func (t *tx) sessionFor(e *reaper.Entry) *reaper.Session {
	if e.Session == "" || e.State != reaper.StateActive || e.Keep {
		return nil
	}
	s, err := t.Session(e.Session)
	if err != nil {
		return nil
	}
	return s
}

func (t *tx) PutEntry(e *reaper.Entry) error {
	key := e.Key()
	old, err := t.Entry(key)
	if err != nil && !errors.Is(err, reaper.ErrCorrupt) {
		return err
	}
	t.write()
	if old != nil {
		if err := t.unindexEntry(old, t.sessionFor(old)); err != nil {
			return err
		}
	}
	if old == nil || old.Session != e.Session || !old.RegisteredAt.Equal(e.RegisteredAt) {
		if old != nil {
			if err := t.dropMember(old); err != nil {
				return err
			}
		}
		if err := t.addMember(e); err != nil {
			return err
		}
	}
	if err := t.indexEntry(e, t.sessionFor(e)); err != nil {
		return err
	}
	if old == nil || old.State != e.State {
		if old != nil {
			if err := t.count(old.Provider, old.State, -1); err != nil {
				return err
			}
		}
		if err := t.count(e.Provider, e.State, 1); err != nil {
			return err
		}
	}
	v, err := encodeEntry(e)
	if err != nil {
		return fmt.Errorf("encode entry %s: %w", key, err)
	}
	return t.bucket(bucketEntries).Put([]byte(key), v)
}

// indexEntry adds the index keys of e, whose session is s.
func (t *tx) indexEntry(e *reaper.Entry, s *reaper.Session) error {
	key := e.Key()
	if d := reaper.DueAt(e, s); !d.IsZero() {
		if err := t.bucket(bucketDeadlines).Put(indexKey(d, reaper.DueEntry, key), nil); err != nil {
			return err
		}
	}
	if e.State.Final() && !e.ClosedAt.IsZero() {
		if err := t.bucket(bucketRetire).Put(indexKey(e.ClosedAt, reaper.DueEntry, key), nil); err != nil {
			return err
		}
	}
	if err := setMember(t.bucket(bucketClosing), key, e.State == reaper.StateClosing); err != nil {
		return err
	}
	if err := setMember(t.bucket(bucketKeep), key, e.State == reaper.StateActive && e.Keep); err != nil {
		return err
	}
	if err := t.setUnseen(e.Provider, unseenKey(e), !e.State.Final() && !e.Seen, e.Unverified); err != nil {
		return err
	}
	return setMember(t.bucket(bucketInFlight), key, e.State == reaper.StateClosing && e.InFlight)
}

// unindexEntry removes the index keys of e, as indexed with session s.
func (t *tx) unindexEntry(e *reaper.Entry, s *reaper.Session) error {
	key := e.Key()
	if d := reaper.DueAt(e, s); !d.IsZero() {
		if err := t.bucket(bucketDeadlines).Delete(indexKey(d, reaper.DueEntry, key)); err != nil {
			return err
		}
	}
	if e.State.Final() && !e.ClosedAt.IsZero() {
		if err := t.bucket(bucketRetire).Delete(indexKey(e.ClosedAt, reaper.DueEntry, key)); err != nil {
			return err
		}
	}
	if err := t.bucket(bucketClosing).Delete([]byte(key)); err != nil {
		return err
	}
	if err := t.bucket(bucketKeep).Delete([]byte(key)); err != nil {
		return err
	}
	if err := t.setUnseen(e.Provider, unseenKey(e), false, false); err != nil {
		return err
	}
	return t.bucket(bucketInFlight).Delete([]byte(key))
}

func setMember(b *bolt.Bucket, key string, in bool) error {
	if in {
		return b.Put([]byte(key), nil)
	}
	return b.Delete([]byte(key))
}

func (t *tx) deleteEntry(e *reaper.Entry) error {
	t.write()
	if err := t.unindexEntry(e, t.sessionFor(e)); err != nil {
		return err
	}
	if err := t.dropMember(e); err != nil {
		return err
	}
	if err := t.count(e.Provider, e.State, -1); err != nil {
		return err
	}
	return t.bucket(bucketEntries).Delete([]byte(e.Key()))
}

// Entries visits the entries f selects in key order, through the index
// that narrows them most: a session's membership, the closing index for
// closing entries alone, a provider's key range, else every entry. Its
// cost is that of the index's members after f.After, not of the ledger.
func (t *tx) Entries(f reaper.EntryFilter, fn func(*reaper.Entry) error) error {
	if f.Session != "" {
		keys, err := t.SessionEntries(f.Session)
		if err != nil {
			return err
		}
		for _, k := range keys {
			if f.After != "" && k <= f.After {
				continue
			}
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
	if len(f.States) == 1 && f.States[0] == reaper.StateClosing {
		return t.membersAfter(bucketClosing, f.Provider, f.After, f.Match, fn)
	}
	c := t.bucket(bucketEntries).Cursor()
	var prefix []byte
	if f.Provider != "" {
		prefix = []byte(f.Provider + "/")
	}
	for k, v := c.Seek(seekAfter(prefix, f.After)); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if err := t.visit(k, v, f, fn); err != nil {
			return err
		}
	}
	return nil
}

// seekAfter returns where a cursor over keys under prefix starts to find
// the first key after after.
func seekAfter(prefix []byte, after string) []byte {
	if after == "" || after < string(prefix) {
		return prefix
	}
	return append([]byte(after), 0)
}

func (t *tx) visit(k, v []byte, f reaper.EntryFilter, fn func(*reaper.Entry) error) error {
	e, err := t.decodeEntry(k, v)
	if err != nil {
		return err
	}
	if !f.Match(e) {
		return nil
	}
	return fn(e)
}

func (t *tx) Session(id string) (*reaper.Session, error) {
	v := t.bucket(bucketSessions).Get([]byte(id))
	if v == nil {
		return nil, nil
	}
	return decodeSession([]byte(id), v)
}

// sessionRetireAt returns when a session becomes a candidate for pruning:
// its end once ended; its last heartbeat while it lives with neither a
// lease nor a pid (nothing else would ever end it); never otherwise.
func sessionRetireAt(s *reaper.Session) time.Time {
	switch {
	case s.Ended():
		return s.EndedAt
	case s.Lease <= 0 && s.PID <= 0:
		return s.LastHeartbeat
	}
	return time.Time{}
}

// endChanged reports whether a session's effect on its entries' DueAt
// differs between old (nil: no record) and s.
func endChanged(old, s *reaper.Session) bool {
	return old == nil || old.Ended() != s.Ended() || !old.EndedAt.Equal(s.EndedAt)
}

func (t *tx) PutSession(s *reaper.Session) error {
	old, err := t.Session(s.ID)
	if err != nil && !errors.Is(err, reaper.ErrCorrupt) {
		return err
	}
	t.write()
	dl, ret, procs := t.bucket(bucketDeadlines), t.bucket(bucketRetire), t.bucket(bucketProcesses)
	if old != nil {
		if d := old.Deadline(); !d.IsZero() {
			if err := dl.Delete(indexKey(d, reaper.DueSession, s.ID)); err != nil {
				return err
			}
		}
		if r := sessionRetireAt(old); !r.IsZero() {
			if err := ret.Delete(indexKey(r, reaper.DueSession, s.ID)); err != nil {
				return err
			}
		}
	}
	if d := s.Deadline(); !d.IsZero() {
		if err := dl.Put(indexKey(d, reaper.DueSession, s.ID), nil); err != nil {
			return err
		}
	}
	if r := sessionRetireAt(s); !r.IsZero() {
		if err := ret.Put(indexKey(r, reaper.DueSession, s.ID), nil); err != nil {
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
	if endChanged(old, s) {
		if err := t.reindexSessionEntries(s.ID, old, s); err != nil {
			return err
		}
	}
	return t.bucket(bucketSessions).Put([]byte(s.ID), encodeSession(s))
}

// reindexSessionEntries moves the deadline key of every active entry of the
// session from DueAt(entry, old) to DueAt(entry, s), so that the index
// reflects the session's end whichever side changed.
func (t *tx) reindexSessionEntries(id string, old, s *reaper.Session) error {
	keys, err := t.SessionEntries(id)
	if err != nil {
		return err
	}
	dl := t.bucket(bucketDeadlines)
	for _, k := range keys {
		e, err := t.Entry(k)
		if err != nil {
			if errors.Is(err, reaper.ErrCorrupt) {
				continue // quarantined when the engine next reads it
			}
			return err
		}
		if e == nil || e.State != reaper.StateActive || e.Keep {
			continue
		}
		from, to := reaper.DueAt(e, old), reaper.DueAt(e, s)
		if from.Equal(to) {
			continue
		}
		if !from.IsZero() {
			if err := dl.Delete(indexKey(from, reaper.DueEntry, k)); err != nil {
				return err
			}
		}
		if !to.IsZero() {
			if err := dl.Put(indexKey(to, reaper.DueEntry, k), nil); err != nil {
				return err
			}
		}
	}
	return nil
}

func (t *tx) SessionEntries(id string) ([]string, error) {
	ms, err := t.sessionMembers(id)
	if err != nil {
		return nil, err
	}
	keys := make([]string, len(ms))
	for i, m := range ms {
		keys[i] = m.key
	}
	return keys, nil
}

// A session's membership is written in two places. A registration appends
// it to session_joins, keyed by the entry's registration time, so that a
// commit's registrations share a page or two there rather than each
// dirtying a page of session_members (keyed by session: one page per
// session of the commit). Every foldJoins registrations, the committer
// moves the joins to session_members in one transaction (fold), where a
// session's members are ordered by registration time too: a fold appends
// to each session's last page, one page per session for many
// registrations. A reader of a session's entries reads both:
// session_members by the session's prefix, and every join, of which there
// are at most about foldJoins.

// member is one entry of a session, and where its membership is: its key
// in session_members, or in session_joins (join).
type member struct {
	key  string
	raw  []byte
	join bool
}

// sessionMembers returns the session's entries, in key order, each once.
func (t *tx) sessionMembers(id string) ([]member, error) {
	prefix := append([]byte(id), 0)
	var out []member
	c := t.bucket(bucketSessionMembers).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		if _, _, key, ok := parseMemberKey(k); ok {
			out = append(out, member{key: key, raw: bytes.Clone(k)})
		}
	}
	err := t.bucket(bucketSessionJoins).ForEach(func(k, _ []byte) error {
		if _, session, key, ok := parseJoinKey(k); ok && session == id {
			out = append(out, member{key: key, raw: bytes.Clone(k), join: true})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].key < out[j].key })
	return slices.CompactFunc(out, func(a, b member) bool { return a.key == b.key }), nil
}

// memberKey is an entry's key in session_members: its session, NUL, its
// registration time, its key.
func memberKey(session string, registered time.Time, key string) []byte {
	b := make([]byte, 0, len(session)+9+len(key))
	b = append(b, session...)
	b = append(b, 0)
	b = binary.BigEndian.AppendUint64(b, timeKey(registered))
	return append(b, key...)
}

// parseMemberKey splits a session_members key; ok is false for a
// malformed one.
func parseMemberKey(k []byte) (session string, registered time.Time, key string, ok bool) {
	i := bytes.IndexByte(k, 0)
	if i <= 0 || len(k) < i+1+8+1 {
		return "", time.Time{}, "", false
	}
	return string(k[:i]), keyTime(k[i+1:]), string(k[i+9:]), true
}

// joinKey is an entry's membership key in session_joins: its registration
// time, its session, NUL, its key.
func joinKey(e *reaper.Entry) []byte {
	key := e.Key()
	b := make([]byte, 8, 8+len(e.Session)+1+len(key))
	binary.BigEndian.PutUint64(b, timeKey(e.RegisteredAt))
	b = append(b, e.Session...)
	b = append(b, 0)
	return append(b, key...)
}

// parseJoinKey splits a join key; ok is false for a malformed one.
func parseJoinKey(k []byte) (registered time.Time, session, key string, ok bool) {
	if len(k) < 8 {
		return time.Time{}, "", "", false
	}
	session, key, ok = strings.Cut(string(k[8:]), "\x00")
	return keyTime(k), session, key, ok && session != "" && key != ""
}

// joinsCountKey is the key of the counts bucket that counts the joins.
var joinsCountKey = []byte("\x01joins")

// addMember records that e belongs to its session, if it names one.
func (t *tx) addMember(e *reaper.Entry) error {
	if e.Session == "" {
		return nil
	}
	if err := t.bucket(bucketSessionJoins).Put(joinKey(e), nil); err != nil {
		return err
	}
	return t.addCount(joinsCountKey, 1)
}

// dropMember removes e's membership of its session, wherever it is.
func (t *tx) dropMember(e *reaper.Entry) error {
	if e.Session == "" {
		return nil
	}
	if err := t.bucket(bucketSessionMembers).Delete(memberKey(e.Session, e.RegisteredAt, e.Key())); err != nil {
		return err
	}
	return t.dropJoin(joinKey(e))
}

// dropJoin deletes a join key, if it is there.
func (t *tx) dropJoin(k []byte) error {
	b := t.bucket(bucketSessionJoins)
	if !has(b, k) {
		return nil
	}
	if err := b.Delete(k); err != nil {
		return err
	}
	return t.addCount(joinsCountKey, -1)
}

// foldJoins is how many joins the committer lets gather before it moves
// them to session_members.
const foldJoins = 1024

// fold moves every join to session_members.
func fold(btx *bolt.Tx) error {
	t := &tx{tx: btx}
	t.write()
	sm := t.bucket(bucketSessionMembers)
	sm.FillPercent = appendFill // a fold appends to each session's members
	err := t.bucket(bucketSessionJoins).ForEach(func(k, _ []byte) error {
		if at, session, key, ok := parseJoinKey(k); ok {
			return sm.Put(memberKey(session, at, key), nil)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := btx.DeleteBucket(bucketSessionJoins); err != nil {
		return err
	}
	if _, err := btx.CreateBucket(bucketSessionJoins); err != nil {
		return err
	}
	return t.bucket(bucketCounts).Delete(joinsCountKey)
}

// joinCount returns the number of joins, as counted.
func joinCount(btx *bolt.Tx) int64 {
	if v := btx.Bucket(bucketCounts).Get(joinsCountKey); len(v) == 8 {
		return int64(binary.BigEndian.Uint64(v))
	}
	return 0
}

func (t *tx) Sessions(fn func(*reaper.Session) error) error {
	return t.bucket(bucketSessions).ForEach(func(k, v []byte) error {
		s, err := decodeSession(k, v)
		if err != nil {
			return err
		}
		return fn(s)
	})
}

func (t *tx) ProcessSessions(fn func(*reaper.Session) error) error {
	return t.bucket(bucketProcesses).ForEach(func(k, _ []byte) error {
		s, err := t.Session(string(k))
		if err != nil {
			return err
		}
		if s == nil || s.Ended() || s.PID <= 0 {
			return nil
		}
		return fn(s)
	})
}

func (t *tx) Due(now time.Time, limit int) ([]reaper.DueItem, error) {
	var items []reaper.DueItem
	end := timeKey(now)
	c := t.bucket(bucketDeadlines).Cursor()
	for k, _ := c.First(); k != nil && (limit <= 0 || len(items) < limit); k, _ = c.Next() {
		if len(k) < 9 {
			continue // malformed: never written by this package
		}
		if binary.BigEndian.Uint64(k) > end {
			break
		}
		at, kind, key, _ := parseIndexKey(k)
		items = append(items, reaper.DueItem{At: at, Kind: kind, Key: key})
	}
	return items, nil
}

func (t *tx) NextDeadline() (time.Time, error) {
	c := t.bucket(bucketDeadlines).Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if at, _, _, ok := parseIndexKey(k); ok {
			return at, nil
		}
	}
	return time.Time{}, nil
}

func (t *tx) DropDue(it reaper.DueItem) error {
	t.write()
	return t.bucket(bucketDeadlines).Delete(indexKey(it.At, it.Kind, it.Key))
}

func (t *tx) InFlight(fn func(key string) error) error {
	return t.bucket(bucketInFlight).ForEach(func(k, _ []byte) error { return fn(string(k)) })
}

func (t *tx) Closing(provider string, fn func(*reaper.Entry) error) error {
	return t.members(bucketClosing, provider, func(e *reaper.Entry) bool { return e.State == reaper.StateClosing }, fn)
}

func (t *tx) Kept(fn func(*reaper.Entry) error) error {
	return t.members(bucketKeep, "", func(e *reaper.Entry) bool { return e.State == reaper.StateActive && e.Keep }, fn)
}

func (t *tx) Unseen(provider string, fn func(*reaper.Entry) error) error {
	return t.unseen(provider, fn, bucketUnseen, bucketUnverified)
}

func (t *tx) Pending(provider string, fn func(*reaper.Entry) error) error {
	return t.unseen(provider, fn, bucketUnseen)
}

// unseen calls fn for the entries of the provider named in the buckets
// (unseen, unverified), in key order. Both are keyed by time, not by
// provider: they are walked whole.
func (t *tx) unseen(provider string, fn func(*reaper.Entry) error, buckets ...[]byte) error {
	var prefix string
	if provider != "" {
		prefix = provider + "/"
	}
	var keys []string
	for _, b := range buckets {
		err := t.bucket(b).ForEach(func(k, _ []byte) error {
			if _, _, key, ok := parseIndexKey(k); ok && strings.HasPrefix(key, prefix) {
				keys = append(keys, key)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	sort.Strings(keys)
	for _, key := range keys {
		e, err := t.Entry(key)
		if err != nil {
			return err
		}
		if e == nil || e.State.Final() || e.Seen {
			continue
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
}

// members calls fn for the entries named in an index bucket, under a
// provider's prefix, that still match want.
func (t *tx) members(bucket []byte, provider string, want func(*reaper.Entry) bool, fn func(*reaper.Entry) error) error {
	return t.membersAfter(bucket, provider, "", want, fn)
}

// membersAfter is members from the first key after after.
func (t *tx) membersAfter(bucket []byte, provider, after string, want func(*reaper.Entry) bool, fn func(*reaper.Entry) error) error {
	c := t.bucket(bucket).Cursor()
	var prefix []byte
	if provider != "" {
		prefix = []byte(provider + "/")
	}
	for k, _ := c.Seek(seekAfter(prefix, after)); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		e, err := t.Entry(string(k))
		if err != nil {
			return err
		}
		if e == nil || !want(e) {
			continue
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
}

// quarantineValue is how a quarantined record is stored.
type quarantineValue struct {
	Reason string `json:"reason"`
	Raw    []byte `json:"raw"`
}

func (t *tx) Quarantine(kind reaper.DueKind, key, reason string, at time.Time) error {
	src := bucketEntries
	if kind == reaper.DueSession {
		src = bucketSessions
	}
	raw := t.bucket(src).Get([]byte(key))
	if raw == nil {
		return nil
	}
	t.write()
	v, err := encode(quarantineValue{Reason: reason, Raw: bytes.Clone(raw)})
	if err != nil {
		return err
	}
	if err := t.bucket(bucketQuarantine).Put(indexKey(at, kind, key), v); err != nil {
		return err
	}
	if err := t.bucket(src).Delete([]byte(key)); err != nil {
		return err
	}
	if kind == reaper.DueEntry {
		// Its state is unknown, so its count cannot be taken back: the
		// next open counts the entries again.
		if err := t.bucket(bucketMeta).Delete(keyCounted); err != nil {
			return err
		}
		// Its deadline, session and retire keys cannot be computed without
		// the record; the engine drops stale deadline keys as they come
		// due, and readers skip keys whose entry is missing.
		for _, b := range [][]byte{bucketClosing, bucketInFlight} {
			if err := t.bucket(b).Delete([]byte(key)); err != nil {
				return err
			}
		}
		// Its unseen key holds a time the record no longer tells: find it.
		var stale [][]byte
		for _, b := range [][]byte{bucketUnseen, bucketUnverified} {
			_ = t.bucket(b).ForEach(func(k, _ []byte) error {
				if _, _, kk, ok := parseIndexKey(k); ok && kk == key {
					stale = append(stale, bytes.Clone(k))
				}
				return nil
			})
		}
		provider, _, _ := strings.Cut(key, "/")
		for _, k := range stale {
			if err := t.setUnseen(provider, k, false, false); err != nil {
				return err
			}
		}
		return nil
	}
	if err := t.bucket(bucketProcesses).Delete([]byte(key)); err != nil {
		return err
	}
	// The session is now missing, which DueAt treats as ended: index its
	// active entries accordingly.
	keys, err := t.SessionEntries(key)
	if err != nil {
		return err
	}
	for _, k := range keys {
		e, err := t.Entry(k)
		if err != nil || e == nil {
			continue
		}
		if d := reaper.DueAt(e, nil); !d.IsZero() {
			if err := t.bucket(bucketDeadlines).Put(indexKey(d, reaper.DueEntry, k), nil); err != nil {
				return err
			}
		}
	}
	return nil
}

func (t *tx) Quarantined(fn func(reaper.QuarantinedRecord) error) error {
	return t.bucket(bucketQuarantine).ForEach(func(k, v []byte) error {
		at, kind, key, ok := parseIndexKey(k)
		if !ok {
			return nil
		}
		var q quarantineValue
		_ = json.Unmarshal(v, &q) // best effort: this bucket is for people
		return fn(reaper.QuarantinedRecord{Kind: kind, Key: key, At: at, Reason: q.Reason, Raw: q.Raw})
	})
}

func (t *tx) Alive() (reaper.AliveStamp, error) {
	var a reaper.AliveStamp
	v := t.bucket(bucketMeta).Get(keyAlive)
	if v == nil {
		return a, nil
	}
	if err := json.Unmarshal(v, &a); err != nil {
		return reaper.AliveStamp{}, nil // unreadable: as if never stamped
	}
	return a, nil
}

func (t *tx) SetAlive(a reaper.AliveStamp) error {
	t.write()
	v, err := encode(a)
	if err != nil {
		return err
	}
	return t.bucket(bucketMeta).Put(keyAlive, v)
}

func (t *tx) Append(ev reaper.AuditEvent) error {
	t.write()
	b := t.bucket(bucketAudit)
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	v := encodeEvent(&ev)
	k := make([]byte, 16)
	binary.BigEndian.PutUint64(k, timeKey(ev.Time))
	binary.BigEndian.PutUint64(k[8:], seq)
	return b.Put(k, v)
}

func (t *tx) Audit(since time.Time, fn func(reaper.AuditEvent) error) error {
	c := t.bucket(bucketAudit).Cursor()
	var ev reaper.AuditEvent // one for the loop: fn gets a copy
	for k, v := c.Seek(u64(timeKey(since))); k != nil; k, v = c.Next() {
		if err := decodeEvent(v, &ev); err != nil {
			continue // an unreadable event is skipped, not fatal to the log
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	return nil
}

func (t *tx) AuditScan(since time.Time, fn func(reaper.AuditEvent) error) error {
	c := t.bucket(bucketAudit).Cursor()
	var ev reaper.AuditEvent
	for k, v := c.Seek(u64(timeKey(since))); k != nil; k, v = c.Next() {
		if err := decodeEventLean(v, &ev); err != nil {
			continue
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	return nil
}

func (t *tx) AuditAfter(cursor string, since time.Time, fn func(string, reaper.AuditEvent) error) error {
	c := t.bucket(bucketAudit).Cursor()
	var k, v []byte
	if cursor != "" {
		after, err := hex.DecodeString(cursor)
		if err != nil || len(after) != 16 {
			return reaper.Errorf(reaper.EINVALID, "after=%q: not a cursor this daemon gave out", cursor)
		}
		if k, v = c.Seek(after); k != nil && bytes.Equal(k, after) {
			k, v = c.Next()
		}
	} else {
		k, v = c.Seek(u64(timeKey(since)))
	}
	var ev reaper.AuditEvent // one for the loop: fn gets a copy
	for ; k != nil; k, v = c.Next() {
		if err := decodeEvent(v, &ev); err != nil {
			continue // an unreadable event is skipped, not fatal to the log
		}
		if err := fn(hex.EncodeToString(k), ev); err != nil {
			return err
		}
	}
	return nil
}

// liveEntries returns the keys of the session's entries that still exist,
// deleting membership keys whose entry is gone.
func (t *tx) liveEntries(id string) ([]string, error) {
	ms, err := t.sessionMembers(id)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		if t.bucket(bucketEntries).Get([]byte(m.key)) != nil {
			out = append(out, m.key)
			continue
		}
		t.write()
		if m.join {
			err = t.dropJoin(m.raw)
		} else {
			err = t.bucket(bucketSessionMembers).Delete(m.raw)
		}
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (t *tx) Prune(before time.Time, limit int) (reaper.PruneStats, error) {
	var st reaper.PruneStats
	end := timeKey(before)
	budget := func() bool { return limit <= 0 || st.Total() < limit }

	// Collect first: the loop below deletes retire keys itself, and a bbolt
	// cursor must not walk a bucket that is being changed.
	ret := t.bucket(bucketRetire)
	type candidate struct {
		k    []byte
		kind reaper.DueKind
		key  string
	}
	var cands []candidate
	var done [][]byte
	c := ret.Cursor()
	for k, _ := c.First(); k != nil && (limit <= 0 || len(cands) < limit); k, _ = c.Next() {
		at, kind, key, ok := parseIndexKey(k)
		if !ok {
			done = append(done, bytes.Clone(k))
			continue
		}
		if timeKey(at) >= end {
			break
		}
		cands = append(cands, candidate{bytes.Clone(k), kind, key})
	}
	var touched []string // sessions that lost an entry
	for _, cd := range cands {
		if !budget() {
			break
		}
		done = append(done, cd.k)
		switch cd.kind {
		case reaper.DueEntry:
			e, err := t.Entry(cd.key)
			if errors.Is(err, reaper.ErrCorrupt) {
				continue // left for the engine to quarantine
			} else if err != nil {
				return st, err
			}
			if e == nil || !e.State.Final() {
				continue
			}
			if err := t.deleteEntry(e); err != nil {
				return st, err
			}
			st.Entries++
			if e.Session != "" {
				touched = append(touched, e.Session)
			}
		case reaper.DueSession:
			// A session goes once none of its entries remain; until then
			// its key is dropped, and deleting its last entry re-adds it.
			keys, err := t.liveEntries(cd.key)
			if err != nil {
				return st, err
			}
			if len(keys) > 0 {
				continue
			}
			s, err := t.Session(cd.key)
			if errors.Is(err, reaper.ErrCorrupt) {
				continue
			} else if err != nil {
				return st, err
			}
			if s == nil {
				continue
			}
			if r := sessionRetireAt(s); r.IsZero() || timeKey(r) >= end {
				continue // revived meanwhile: its current key stands
			}
			if err := t.deleteSession(s); err != nil {
				return st, err
			}
			st.Sessions++
		}
	}
	if len(done) > 0 {
		t.write()
	}
	for _, k := range done {
		if err := ret.Delete(k); err != nil {
			return st, err
		}
	}
	// Re-arm the retire key of sessions whose last entry just went, so
	// that a later prune takes them (this one's cursor has passed them).
	for _, id := range touched {
		s, err := t.Session(id)
		if err != nil || s == nil {
			continue
		}
		if keys, err := t.liveEntries(id); err != nil {
			return st, err
		} else if len(keys) > 0 {
			continue
		}
		if r := sessionRetireAt(s); !r.IsZero() {
			if err := ret.Put(indexKey(r, reaper.DueSession, id), nil); err != nil {
				return st, err
			}
		}
	}

	// An event outlives the retention while the ledger still holds its
	// sandbox (an entry, or an untracked record): a cost report needs a
	// sandbox's whole history to price any window of it.
	audit := t.bucket(bucketAudit)
	entries, untracked := t.bucket(bucketEntries), t.bucket(bucketUntracked)
	var old [][]byte
	ac := audit.Cursor()
	for k, v := ac.First(); k != nil && budget(); k, v = ac.Next() {
		if len(k) < 8 || binary.BigEndian.Uint64(k) >= end {
			break
		}
		if key := eventKey(v); key != "" && (entries.Get([]byte(key)) != nil || untracked.Get([]byte(key)) != nil) {
			continue
		}
		old = append(old, bytes.Clone(k))
		st.Events++
	}
	if len(old) > 0 {
		t.write()
	}
	for _, k := range old {
		if err := audit.Delete(k); err != nil {
			return st, err
		}
	}
	return st, nil
}

func (t *tx) deleteSession(s *reaper.Session) error {
	t.write()
	if d := s.Deadline(); !d.IsZero() {
		if err := t.bucket(bucketDeadlines).Delete(indexKey(d, reaper.DueSession, s.ID)); err != nil {
			return err
		}
	}
	if err := t.bucket(bucketProcesses).Delete([]byte(s.ID)); err != nil {
		return err
	}
	return t.bucket(bucketSessions).Delete([]byte(s.ID))
}

func (t *tx) Untracked(provider string, fn func(id string, firstSeen time.Time) error) error {
	prefix := []byte(provider + "/")
	c := t.bucket(bucketUntracked).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if len(v) != 8 {
			// Only a first-seen time: reading it anew costs a little age.
			continue
		}
		if err := fn(string(k[len(prefix):]), keyTime(v)); err != nil {
			return err
		}
	}
	return nil
}

func (t *tx) PutUntracked(provider, id string, firstSeen time.Time) error {
	t.write()
	return t.bucket(bucketUntracked).Put([]byte(provider+"/"+id), u64(uint64(firstSeen.UnixNano())))
}

func (t *tx) DeleteUntracked(provider, id string) error {
	t.write()
	return t.bucket(bucketUntracked).Delete([]byte(provider + "/" + id))
}

// countKey is the key of the number of entries of a provider in a state.
func countKey(provider string, st reaper.State) []byte {
	return []byte(provider + "\x00" + string(st))
}

// count adds delta to the number of entries of provider in state st.
func (t *tx) count(provider string, st reaper.State, delta int64) error {
	return t.addCount(countKey(provider, st), delta)
}

// addCount adds delta to a count of the counts bucket.
func (t *tx) addCount(k []byte, delta int64) error {
	b := t.bucket(bucketCounts)
	var n int64
	if v := b.Get(k); len(v) == 8 {
		n = int64(binary.BigEndian.Uint64(v))
	}
	if n += delta; n <= 0 {
		return b.Delete(k)
	}
	return b.Put(k, u64(uint64(n)))
}

func (t *tx) Counts(fn func(provider string, st reaper.State, n int) error) error {
	return t.bucket(bucketCounts).ForEach(func(k, v []byte) error {
		if len(k) > 0 && k[0] == 0x01 {
			return nil // a count other than by state (unverified, joins)
		}
		provider, st, ok := strings.Cut(string(k), "\x00")
		if !ok || len(v) != 8 {
			return nil
		}
		return fn(provider, reaper.State(st), int(binary.BigEndian.Uint64(v)))
	})
}

// unverifiedPrefix starts the keys of the counts bucket that count a
// provider's unverified entries; a provider name never starts with it.
var unverifiedPrefix = []byte("\x01unverified\x00")

func unverifiedKey(provider string) []byte { return append(bytes.Clone(unverifiedPrefix), provider...) }

// countUnverified adds delta to the number of the provider's unverified
// entries.
func (t *tx) countUnverified(provider string, delta int64) error {
	return t.addCount(unverifiedKey(provider), delta)
}

func (t *tx) Unverified(fn func(provider string, n int) error) error {
	c := t.bucket(bucketCounts).Cursor()
	for k, v := c.Seek(unverifiedPrefix); k != nil && bytes.HasPrefix(k, unverifiedPrefix); k, v = c.Next() {
		if len(v) != 8 {
			continue
		}
		if err := fn(string(k[len(unverifiedPrefix):]), int(binary.BigEndian.Uint64(v))); err != nil {
			return err
		}
	}
	return nil
}

// recount rebuilds the counts bucket from the entries: once, when a ledger
// written before the counts were kept is opened.
func recount(btx *bolt.Tx) error {
	if err := btx.DeleteBucket(bucketCounts); err != nil && !errors.Is(err, bolt.ErrBucketNotFound) {
		return err
	}
	if _, err := btx.CreateBucket(bucketCounts); err != nil {
		return err
	}
	t := &tx{tx: btx}
	counts := map[string]int64{}
	err := t.bucket(bucketEntries).ForEach(func(k, v []byte) error {
		e, err := decodeEntry(k, v)
		if err != nil {
			return nil // quarantined when the engine meets it
		}
		counts[string(countKey(e.Provider, e.State))]++
		return nil
	})
	if err != nil {
		return err
	}
	// The joins.
	if n := t.bucket(bucketSessionJoins).Stats().KeyN; n > 0 {
		counts[string(joinsCountKey)] = int64(n)
	}
	// The unverified entries: keys of the unverified index whose entry is
	// there, waiting.
	err = t.bucket(bucketUnverified).ForEach(func(k, v []byte) error {
		if _, _, key, ok := parseIndexKey(k); ok {
			if e, err := t.Entry(key); err == nil && e != nil && !e.State.Final() && e.Unverified {
				counts[string(unverifiedKey(e.Provider))]++
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for k, n := range counts {
		if err := t.bucket(bucketCounts).Put([]byte(k), u64(uint64(n))); err != nil {
			return err
		}
	}
	return nil
}
