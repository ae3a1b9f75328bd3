package ledger

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/reaperd/reaperd/reaper"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// offlineLockTimeout is how long Check and Compact wait for the ledger's
// lock. A daemon holds it for as long as it runs: waiting longer helps
// nobody.
const offlineLockTimeout = 500 * time.Millisecond

// maxListed caps the findings and the notes a report lists; the rest are
// only counted.
const maxListed = 1000

// openOffline opens a ledger file read-only, for Check and Compact. It
// fails at once when a daemon holds the file: bbolt takes a shared lock
// for a read-only open, which the daemon's exclusive one excludes. what
// names the operation for the message.
func openOffline(path, what string) (*bolt.DB, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("open ledger %s: %w", path, err)
	}
	switch {
	case fi.IsDir():
		return nil, fmt.Errorf("open ledger %s: it is a directory", path)
	case fi.Size() == 0:
		return nil, fmt.Errorf("open ledger %s: the file is empty", path)
	}
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: offlineLockTimeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open ledger %s: %w: a running reaperd holds it; stop the daemon, or %s a backup (reaperd ledger backup FILE)", path, ErrLocked, what)
	} else if err != nil {
		return nil, fmt.Errorf("open ledger %s: %w", path, err)
	}
	return bdb, nil
}

// complete returns an error when the file, size bytes, is shorter than
// its meta page says: a copy cut short. Reading its pages would fault.
func complete(btx *bolt.Tx, size int64) error {
	if want := btx.Size(); size < want {
		return fmt.Errorf("the file is %d bytes, but its meta page says %d: it was cut short", size, want)
	}
	return nil
}

// Finding is one thing Check found wrong: a key of a bucket, and what is
// wrong with it. Key is printable: index keys are shown as their parts.
type Finding struct {
	Bucket  string `json:"bucket"`
	Key     string `json:"key,omitempty"`
	Problem string `json:"problem"`
}

// String formats a finding as "bucket[key]: problem".
func (f Finding) String() string {
	if f.Key == "" {
		return f.Bucket + ": " + f.Problem
	}
	return f.Bucket + "[" + f.Key + "]: " + f.Problem
}

// CheckReport is what Check found in a ledger file.
type CheckReport struct {
	Path string `json:"path"`
	// Size is the file's size in bytes.
	Size int64 `json:"size"`
	// Schema is the schema version the file records; zero for a ledger
	// that never held anything.
	Schema uint64 `json:"schema"`

	Entries     map[reaper.State]int `json:"entries"`
	Sessions    int                  `json:"sessions"`
	Events      int                  `json:"events"`
	Quarantined int                  `json:"quarantined"`
	Untracked   int                  `json:"untracked"`

	// Corrupt lists what bbolt's own consistency check found: pages that
	// are unreachable, freed twice or out of order. The file is damaged,
	// and the ledger's own checks are skipped.
	Corrupt []string `json:"corrupt,omitempty"`
	// Findings lists the records and index keys that disagree: each is a
	// problem (an entry no deadline indexes is never acted on; a key that
	// names no record is dead weight the daemon trips over).
	Findings []Finding `json:"findings,omitempty"`
	// Notes lists index keys left behind by records the daemon
	// quarantined, which it expects: it drops them as they come due.
	Notes []Finding `json:"notes,omitempty"`
	// Omitted counts the findings and notes beyond the first 1000 of each,
	// which are not listed.
	Omitted int `json:"omitted,omitempty"`
	// Skipped says why the ledger's own checks were not run, when they
	// were not.
	Skipped string `json:"skipped,omitempty"`
}

// OK reports whether the check found nothing wrong: no corruption and no
// findings. Notes do not count.
func (r *CheckReport) OK() bool { return len(r.Corrupt) == 0 && len(r.Findings) == 0 && r.Omitted == 0 }

// TotalEntries returns the number of entries, in any state.
func (r *CheckReport) TotalEntries() int {
	n := 0
	for _, c := range r.Entries {
		n += c
	}
	return n
}

// Check checks the ledger file at path, which no daemon may hold: bbolt's
// consistency check of its pages, then reaperd's own: the schema version;
// every record decodes; every index key a record needs is there (an
// active entry's deadline at reaper.DueAt, a closing entry in closing and,
// when in flight, in in_flight, an entry in its session's
// session_entries, a closed one in retire, a live session's lease end in
// deadlines and its pid in processes); and every index key names a record
// that still qualifies for it. The error is for a file that cannot be
// read; what is wrong inside it is in the report.
func Check(path string) (*CheckReport, error) {
	bdb, err := openOffline(path, "check")
	if err != nil {
		return nil, err
	}
	defer bdb.Close()
	r := &CheckReport{Path: path, Entries: map[reaper.State]int{}}
	if fi, err := os.Stat(path); err == nil {
		r.Size = fi.Size()
	}
	err = bdb.View(func(btx *bolt.Tx) error {
		if err := complete(btx, r.Size); err != nil {
			r.Corrupt = append(r.Corrupt, err.Error())
			r.Skipped = "the file is cut short"
			return nil
		}
		for err := range btx.Check() {
			if len(r.Corrupt) < maxListed {
				r.Corrupt = append(r.Corrupt, err.Error())
			} else {
				r.Omitted++
			}
		}
		if len(r.Corrupt) > 0 {
			r.Skipped = "bbolt's check failed: the file is damaged"
			return nil
		}
		c := &checker{tx: btx, r: r, sessions: map[string]*reaper.Session{}, quarantined: map[string]bool{}}
		c.run()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("check ledger %s: %w", path, err)
	}
	return r, nil
}

// checker runs reaperd's checks in one read transaction.
type checker struct {
	tx *bolt.Tx
	r  *CheckReport
	// sessions holds every session record by id; nil for one that does
	// not decode (as the daemon treats it: a missing session).
	sessions map[string]*reaper.Session
	// quarantined holds kind+key of every quarantined record.
	quarantined map[string]bool
}

func (c *checker) bucket(name []byte) *bolt.Bucket { return c.tx.Bucket(name) }

func (c *checker) bad(bucket []byte, key, format string, args ...any) {
	if len(c.r.Findings) >= maxListed {
		c.r.Omitted++
		return
	}
	c.r.Findings = append(c.r.Findings, Finding{Bucket: string(bucket), Key: key, Problem: fmt.Sprintf(format, args...)})
}

// leftover reports a key that should not be there: a note when a
// quarantine explains it, else a finding.
func (c *checker) leftover(explained bool, bucket []byte, key, format string, args ...any) {
	if !explained {
		c.bad(bucket, key, format, args...)
		return
	}
	if len(c.r.Notes) >= maxListed {
		c.r.Omitted++
		return
	}
	c.r.Notes = append(c.r.Notes, Finding{Bucket: string(bucket), Key: key,
		Problem: fmt.Sprintf(format, args...) + " (left by a quarantined record; the daemon drops it)"})
}

func (c *checker) run() {
	var missing []string
	for _, name := range allBuckets {
		if c.bucket(name) == nil {
			missing = append(missing, string(name))
		}
	}
	if len(missing) > 0 {
		for _, name := range missing {
			c.bad([]byte(name), "", "the bucket is missing")
		}
		c.r.Skipped = "buckets are missing: is it a reaperd ledger?"
		return
	}
	if !c.schema() {
		return
	}
	c.quarantine()
	c.sessionRecords()
	undecodable := c.entryRecords()
	c.deadlines()
	c.members(bucketClosing, "closing", func(e *reaper.Entry) bool { return e.State == reaper.StateClosing })
	c.members(bucketInFlight, "in flight", func(e *reaper.Entry) bool {
		return e.State == reaper.StateClosing && e.InFlight
	})
	if c.keepIndexed() {
		c.members(bucketKeep, "active keep", func(e *reaper.Entry) bool { return e.State == reaper.StateActive && e.Keep })
	}
	c.unseen()
	c.sessionEntries()
	c.processes()
	c.retire()
	c.audit()
	c.r.Untracked = c.bucket(bucketUntracked).Stats().KeyN
	if undecodable == 0 {
		c.counts()
	}
}

// schema checks the schema version and reports whether the index checks
// apply to it.
func (c *checker) schema() bool {
	v := c.bucket(bucketMeta).Get(keySchema)
	switch {
	case v == nil && c.bucket(bucketEntries).Stats().KeyN == 0:
		return true // a ledger that never held an entry
	case v == nil:
		c.bad(bucketMeta, string(keySchema), "missing, but the ledger holds entries")
		c.r.Skipped = "no schema version"
		return false
	case len(v) != 8:
		c.bad(bucketMeta, string(keySchema), "malformed: %d bytes, want 8", len(v))
		c.r.Skipped = "no readable schema version"
		return false
	}
	c.r.Schema = binary.BigEndian.Uint64(v)
	switch {
	case c.r.Schema >= 2 && c.r.Schema <= SchemaVersion:
		// 2 and 3 differ only in how records are written, and in the keep
		// index, which version 4 adds (keepIndexed).
		return true
	case c.r.Schema == 1:
		c.r.Skipped = "schema version 1: the daemon rebuilds the indexes when it opens the file"
	case c.r.Schema > SchemaVersion:
		c.bad(bucketMeta, string(keySchema), "version %d is newer than this reaperd knows (%d): check it with a newer reaperd", c.r.Schema, SchemaVersion)
		c.r.Skipped = "unknown schema version"
	default:
		c.bad(bucketMeta, string(keySchema), "unknown version %d", c.r.Schema)
		c.r.Skipped = "unknown schema version"
	}
	return false
}

// keepIndexed reports whether the ledger's schema has the keep index.
func (c *checker) keepIndexed() bool {
	return c.bucket(bucketKeep) != nil && (c.r.Schema >= 4 || c.r.Schema == 0)
}

func quarantineKey(kind reaper.DueKind, key string) string { return string(rune(kind)) + key }

func (c *checker) quarantine() {
	_ = c.bucket(bucketQuarantine).ForEach(func(k, _ []byte) error {
		c.r.Quarantined++
		if _, kind, key, ok := parseIndexKey(k); ok {
			c.quarantined[quarantineKey(kind, key)] = true
		}
		return nil
	})
}

func (c *checker) sessionRecords() {
	dl, procs := c.bucket(bucketDeadlines), c.bucket(bucketProcesses)
	_ = c.bucket(bucketSessions).ForEach(func(k, v []byte) error {
		s, err := decodeSession(k, v)
		if err != nil {
			c.sessions[string(k)] = nil
			c.bad(bucketSessions, show(k), "undecodable: %v; the daemon quarantines it when it reads it", cause(err))
			return nil
		}
		c.sessions[s.ID] = s
		c.r.Sessions++
		if d := s.Deadline(); !d.IsZero() {
			if ik := indexKey(d, reaper.DueSession, s.ID); !has(dl, ik) {
				c.bad(bucketDeadlines, showIndexKey(ik), "missing: the lease of session %s ends then, and nothing else ends it", s.ID)
			}
		}
		if s.PID > 0 && !s.Ended() && !has(procs, k) {
			c.bad(bucketProcesses, show(k), "missing: session %s is live with pid %d, whose exit would go unnoticed", s.ID, s.PID)
		}
		return nil
	})
}

// entryRecords decodes every entry, counts them and checks the index keys
// each needs. It returns the number of undecodable ones.
func (c *checker) entryRecords() int {
	undecodable := 0
	dl, closing, inFlight := c.bucket(bucketDeadlines), c.bucket(bucketClosing), c.bucket(bucketInFlight)
	retire := c.bucket(bucketRetire)
	_ = c.bucket(bucketEntries).ForEach(func(k, v []byte) error {
		e, err := decodeEntry(k, v)
		if err != nil {
			undecodable++
			c.bad(bucketEntries, show(k), "undecodable: %v; the daemon quarantines it when it reads it", cause(err))
			return nil
		}
		if !e.State.Valid() {
			c.bad(bucketEntries, show(k), "unknown state %q", e.State)
			return nil
		}
		c.r.Entries[e.State]++
		key := e.Key()
		if d := reaper.DueAt(e, c.sessionOf(e)); !d.IsZero() {
			if ik := indexKey(d, reaper.DueEntry, key); !has(dl, ik) {
				c.bad(bucketDeadlines, showIndexKey(ik), "missing: %s entry %s is due then, and nothing else makes the daemon act on it", e.State, key)
			}
		}
		if e.State == reaper.StateClosing && !has(closing, k) {
			c.bad(bucketClosing, show(k), "missing: the entry is closing")
		}
		if e.State == reaper.StateActive && e.Keep && c.keepIndexed() && !has(c.bucket(bucketKeep), k) {
			c.bad(bucketKeep, show(k), "missing: the entry is active and tagged keep, and a dry run would not report it")
		}
		if e.State == reaper.StateClosing && e.InFlight && !has(inFlight, k) {
			c.bad(bucketInFlight, show(k), "missing: the entry is marked in flight, and a daemon's start clears only the marks indexed here: its close would never resume")
		}
		if e.Session != "" && !c.member(e) {
			c.bad(bucketSessionMembers, show([]byte(e.Session))+" "+show([]byte(key)), "missing: the entry belongs to session %s, which does not list it", e.Session)
		}
		if e.State.Final() && !e.ClosedAt.IsZero() {
			if ik := indexKey(e.ClosedAt, reaper.DueEntry, key); !has(retire, ik) {
				c.bad(bucketRetire, showIndexKey(ik), "missing: the entry is %s since then, and would never be pruned", e.State)
			}
		}
		return nil
	})
	return undecodable
}

// sessionOf returns the session an entry's deadline depends on, as the
// ledger indexes it: nil when the entry names none, or one that is
// missing or undecodable.
func (c *checker) sessionOf(e *reaper.Entry) *reaper.Session {
	if e.Session == "" {
		return nil
	}
	return c.sessions[e.Session]
}

// entry returns the entry under key: found is false when there is none,
// e is nil when it does not decode (reported already).
func (c *checker) entry(key string) (e *reaper.Entry, found bool) {
	v := c.bucket(bucketEntries).Get([]byte(key))
	if v == nil {
		return nil, false
	}
	e, err := decodeEntry([]byte(key), v)
	if err != nil || !e.State.Valid() {
		return nil, true
	}
	return e, true
}

// explained reports whether a quarantine explains a stale index key of
// entry key (e, when not nil, is its current record): the entry itself or
// its session was quarantined, which leaves keys the daemon drops later.
func (c *checker) explained(key string, e *reaper.Entry) bool {
	if c.quarantined[quarantineKey(reaper.DueEntry, key)] {
		return true
	}
	return e != nil && e.Session != "" && c.quarantined[quarantineKey(reaper.DueSession, e.Session)]
}

func (c *checker) deadlines() {
	_ = c.bucket(bucketDeadlines).ForEach(func(k, _ []byte) error {
		_, kind, key, ok := parseIndexKey(k)
		if !ok {
			c.bad(bucketDeadlines, showRaw(k), "malformed key: %d bytes", len(k))
			return nil
		}
		sk := showIndexKey(k)
		switch kind {
		case reaper.DueEntry:
			e, found := c.entry(key)
			switch {
			case !found:
				c.leftover(c.explained(key, nil), bucketDeadlines, sk, "no such entry")
			case e == nil:
			default:
				want := reaper.DueAt(e, c.sessionOf(e))
				if want.IsZero() {
					c.leftover(c.explained(key, e), bucketDeadlines, sk, "the entry is %s%s and never due", e.State, tags(e))
				} else if !bytes.Equal(indexKey(want, reaper.DueEntry, key), k) {
					c.leftover(c.explained(key, e), bucketDeadlines, sk, "the entry is due at %s", fmtTime(want))
				}
			}
		case reaper.DueSession:
			s, found := c.sessions[key]
			switch {
			case !found:
				c.leftover(c.quarantined[quarantineKey(reaper.DueSession, key)], bucketDeadlines, sk, "no such session")
			case s == nil:
			case s.Deadline().IsZero():
				c.bad(bucketDeadlines, sk, "the session has no lease to lapse (ended, or without a lease)")
			case !bytes.Equal(indexKey(s.Deadline(), reaper.DueSession, key), k):
				c.bad(bucketDeadlines, sk, "the session's lease ends at %s", fmtTime(s.Deadline()))
			}
		default:
			c.bad(bucketDeadlines, sk, "unknown kind %q", byte(kind))
		}
		return nil
	})
}

// members checks a set of entry keys (closing, in_flight): each names an
// entry in which want holds.
func (c *checker) members(bucket []byte, what string, want func(*reaper.Entry) bool) {
	_ = c.bucket(bucket).ForEach(func(k, _ []byte) error {
		e, found := c.entry(string(k))
		switch {
		case !found:
			c.bad(bucket, show(k), "no such entry")
		case e == nil:
		case !want(e):
			c.bad(bucket, show(k), "the entry is %s%s, not %s", e.State, tags(e), what)
		}
		return nil
	})
}

func (c *checker) unseen() {
	for _, bucket := range [][]byte{bucketUnseen, bucketUnverified} {
		b := c.bucket(bucket)
		if b == nil {
			continue // version 3: no unverified index
		}
		_ = b.ForEach(func(k, v []byte) error {
			_, kind, key, ok := parseIndexKey(k)
			if !ok || kind != reaper.DueEntry {
				c.bad(bucket, showRaw(k), "malformed key")
				return nil
			}
			sk := showIndexKey(k)
			// Version 3 marked an unverified entry 'u' in the unseen index.
			if len(v) > 0 && !(c.r.Schema < 4 && len(v) == 1 && v[0] == 'u') {
				c.bad(bucket, sk, "unknown value %q", v)
			}
			e, found := c.entry(key)
			switch {
			case !found:
				c.bad(bucket, sk, "no such entry")
			case e == nil:
			case e.State.Final():
				c.bad(bucket, sk, "the entry is %s: only active and closing entries wait for a listing", e.State)
			case !bytes.Equal(unseenKey(e), k):
				c.bad(bucket, sk, "the entry was registered at %s", fmtTime(e.RegisteredAt))
			case bytes.Equal(bucket, bucketUnverified) && has(c.bucket(bucketUnseen), k):
				c.bad(bucket, sk, "the entry is in the unseen index too")
			}
			return nil
		})
	}
}

// joined reports whether e's membership of its session is in
// session_joins (not folded yet).
func (c *checker) joined(e *reaper.Entry) bool {
	b := c.bucket(bucketSessionJoins)
	return b != nil && has(b, joinKey(e))
}

func (c *checker) sessionEntries() {
	if b := c.bucket(bucketSessionJoins); b != nil {
		_ = b.ForEach(func(k, _ []byte) error {
			at, id, key, ok := parseJoinKey(k)
			if !ok {
				c.bad(bucketSessionJoins, showRaw(k), "malformed key")
				return nil
			}
			jk := fmtTime(at) + " " + show([]byte(id)) + " " + show([]byte(key))
			e, found := c.entry(key)
			switch {
			case !found:
				c.leftover(c.explained(key, nil), bucketSessionJoins, jk, "no such entry")
			case e == nil:
			case e.Session != id:
				c.bad(bucketSessionJoins, jk, "the entry belongs to session %q", e.Session)
			case !bytes.Equal(joinKey(e), k):
				c.bad(bucketSessionJoins, jk, "the entry was registered at %s", fmtTime(e.RegisteredAt))
			}
			return nil
		})
	}
	c.sessionMembers()
}

// member reports whether e is listed as a member of its session, in the
// membership buckets its ledger's version has.
func (c *checker) member(e *reaper.Entry) bool {
	if b := c.bucket(bucketSessionMembers); b != nil && has(b, memberKey(e.Session, e.RegisteredAt, e.Key())) {
		return true
	}
	if b := c.bucket(bucketSessionEntries); b != nil && has(b, append(append([]byte(e.Session), 0), e.Key()...)) {
		return true // version 3, not migrated yet
	}
	return c.joined(e)
}

// sessionMembers checks that every member key names an entry of that
// session, registered at that time.
func (c *checker) sessionMembers() {
	if b := c.bucket(bucketSessionMembers); b != nil {
		_ = b.ForEach(func(k, _ []byte) error {
			id, at, key, ok := parseMemberKey(k)
			if !ok {
				c.bad(bucketSessionMembers, showRaw(k), "malformed key")
				return nil
			}
			mk := show([]byte(id)) + " " + show([]byte(key))
			e, found := c.entry(key)
			switch {
			case !found:
				c.leftover(c.explained(key, nil), bucketSessionMembers, mk, "no such entry")
			case e == nil:
			case e.Session != id:
				if e.Session == "" {
					c.bad(bucketSessionMembers, mk, "the entry belongs to no session")
				} else {
					c.bad(bucketSessionMembers, mk, "the entry belongs to session %s", e.Session)
				}
			case timeKey(at) != timeKey(e.RegisteredAt):
				c.bad(bucketSessionMembers, mk, "listed as registered at %s; the entry was registered at %s", fmtTime(at), fmtTime(e.RegisteredAt))
			}
			return nil
		})
	}
	// A version 3 ledger's membership, before Open moves it.
	if b := c.bucket(bucketSessionEntries); b != nil {
		_ = b.ForEach(func(k, _ []byte) error {
			id, key, ok := bytes.Cut(k, []byte{0})
			if !ok {
				c.bad(bucketSessionEntries, showRaw(k), "malformed key: no NUL between session and entry")
				return nil
			}
			sk := show(id) + " " + show(key)
			e, found := c.entry(string(key))
			switch {
			case !found:
				c.leftover(c.explained(string(key), nil), bucketSessionEntries, sk, "no such entry")
			case e == nil:
			case e.Session != string(id):
				c.bad(bucketSessionEntries, sk, "the entry belongs to session %q", e.Session)
			}
			return nil
		})
	}
}

func (c *checker) processes() {
	_ = c.bucket(bucketProcesses).ForEach(func(k, _ []byte) error {
		s, found := c.sessions[string(k)]
		switch {
		case !found:
			c.bad(bucketProcesses, show(k), "no such session")
		case s == nil:
		case s.Ended():
			c.bad(bucketProcesses, show(k), "the session ended at %s", fmtTime(s.EndedAt))
		case s.PID <= 0:
			c.bad(bucketProcesses, show(k), "the session has no pid")
		}
		return nil
	})
}

func (c *checker) retire() {
	_ = c.bucket(bucketRetire).ForEach(func(k, _ []byte) error {
		_, kind, key, ok := parseIndexKey(k)
		if !ok {
			c.bad(bucketRetire, showRaw(k), "malformed key: %d bytes", len(k))
			return nil
		}
		sk := showIndexKey(k)
		switch kind {
		case reaper.DueEntry:
			e, found := c.entry(key)
			switch {
			case !found:
				c.leftover(c.explained(key, nil), bucketRetire, sk, "no such entry")
			case e == nil:
			case !e.State.Final():
				c.leftover(c.explained(key, e), bucketRetire, sk, "the entry is %s, not closed or released", e.State)
			case !bytes.Equal(indexKey(e.ClosedAt, reaper.DueEntry, key), k):
				c.leftover(c.explained(key, e), bucketRetire, sk, "the entry was %s at %s", e.State, fmtTime(e.ClosedAt))
			}
		case reaper.DueSession:
			s, found := c.sessions[key]
			switch {
			case !found:
				c.leftover(c.quarantined[quarantineKey(reaper.DueSession, key)], bucketRetire, sk, "no such session")
			case s == nil:
			case sessionRetireAt(s).IsZero():
				c.bad(bucketRetire, sk, "the session lives, with a lease or a pid")
			case !bytes.Equal(indexKey(sessionRetireAt(s), reaper.DueSession, key), k):
				c.bad(bucketRetire, sk, "the session retires at %s", fmtTime(sessionRetireAt(s)))
			}
		default:
			c.bad(bucketRetire, sk, "unknown kind %q", byte(kind))
		}
		return nil
	})
}

func (c *checker) audit() {
	_ = c.bucket(bucketAudit).ForEach(func(k, v []byte) error {
		if len(k) != 16 {
			c.bad(bucketAudit, showRaw(k), "malformed key: %d bytes, want 16", len(k))
			return nil
		}
		c.r.Events++
		var ev reaper.AuditEvent
		if err := decodeEvent(v, &ev); err != nil {
			c.bad(bucketAudit, showRaw(k), "undecodable event: %v", err)
		}
		return nil
	})
}

// counts compares the counts bucket, which the metrics read, with the
// entries, once the ledger has been counted (else the daemon counts at
// its next start).
func (c *checker) counts() {
	if c.bucket(bucketMeta).Get(keyCounted) == nil {
		return
	}
	want := map[string]int{}
	_ = c.bucket(bucketEntries).ForEach(func(k, v []byte) error {
		if e, err := decodeEntry(k, v); err == nil && e.State.Valid() {
			want[string(countKey(e.Provider, e.State))]++
		}
		return nil
	})
	if v := c.bucket(bucketMeta).Get(keyCounted); len(v) == 8 && binary.BigEndian.Uint64(v) >= 2 {
		// Counted by version 2: the unverified entries and the joins too.
		if b := c.bucket(bucketSessionJoins); b != nil {
			if n := b.Stats().KeyN; n > 0 {
				want[string(joinsCountKey)] = n
			}
		}
		_ = c.bucket(bucketUnverified).ForEach(func(k, v []byte) error {
			if _, _, key, ok := parseIndexKey(k); ok {
				if e, found := c.entry(key); found && e != nil && !e.State.Final() {
					want[string(unverifiedKey(e.Provider))]++
				}
			}
			return nil
		})
	}
	got := map[string]int{}
	_ = c.bucket(bucketCounts).ForEach(func(k, v []byte) error {
		if (!bytes.Contains(k, []byte{0}) && !bytes.Equal(k, joinsCountKey)) || len(v) != 8 {
			c.bad(bucketCounts, show(k), "malformed count")
			return nil
		}
		got[string(k)] = int(binary.BigEndian.Uint64(v))
		return nil
	})
	for k, n := range got {
		if want[k] != n {
			what := "entries"
			if k == string(joinsCountKey) {
				what = "joins"
			}
			c.bad(bucketCounts, showCountKey(k), "says %d; the %s number %d", n, what, want[k])
		}
	}
	for k, n := range want {
		if _, ok := got[k]; !ok {
			c.bad(bucketCounts, showCountKey(k), "missing; the entries number %d", n)
		}
	}
}

// showCountKey returns a counts key as "PROVIDER STATE".
func showCountKey(k string) string {
	if k == string(joinsCountKey) {
		return "joins"
	}
	if p, ok := strings.CutPrefix(k, string(unverifiedPrefix)); ok {
		return show([]byte(p)) + " unverified"
	}
	provider, st, _ := strings.Cut(k, "\x00")
	return show([]byte(provider)) + " " + show([]byte(st))
}

// cause returns the decoding error inside a *reaper.CorruptError.
func cause(err error) error {
	var ce *reaper.CorruptError
	if errors.As(err, &ce) && ce.Err != nil {
		return ce.Err
	}
	return err
}

// tags describes the tags that keep an entry from being due.
func tags(e *reaper.Entry) string {
	var t []string
	if e.Keep {
		t = append(t, "keep")
	}
	if e.InFlight {
		t = append(t, "in flight")
	}
	if e.Stuck {
		t = append(t, "stuck")
	}
	if len(t) == 0 {
		return ""
	}
	return " (" + strings.Join(t, ", ") + ")"
}

func fmtTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// show returns a key as text: itself when printable, else quoted.
func show(k []byte) string {
	s := string(k)
	if s != "" && utf8.ValidString(s) && strings.IndexFunc(s, func(r rune) bool { return !unicode.IsGraphic(r) || unicode.IsSpace(r) }) < 0 {
		return s
	}
	return strconv.Quote(s)
}

// showRaw returns a malformed key in hex.
func showRaw(k []byte) string { return "0x" + hex.EncodeToString(k) }

// showIndexKey returns a time-kind-key index key as "TIME KIND KEY".
func showIndexKey(k []byte) string {
	at, kind, key, ok := parseIndexKey(k)
	if !ok {
		return showRaw(k)
	}
	var what string
	switch kind {
	case reaper.DueEntry:
		what = "entry"
	case reaper.DueSession:
		what = "session"
	default:
		what = "kind-" + strconv.Quote(string(rune(kind)))
	}
	return fmtTime(at) + " " + what + " " + show([]byte(key))
}
