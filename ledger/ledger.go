package ledger

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/reaperd/reaperd/reaper"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// SchemaVersion is the ledger layout this package reads and writes.
// Version 2 indexes an entry's deadline at reaper.DueAt (its session's end
// included) and adds the closing, in_flight and quarantine buckets; a
// version 1 ledger is migrated when it is opened. Version 3 writes audit
// events in a compact binary form (event.go); the JSON events of a version
// 2 ledger are read as they are. Version 4 writes entries in a compact
// binary form (entry.go), sessions too, and indexes the active keep entries
// (keep); its migration builds that index when the ledger is opened, then
// rewrites the JSON records in chunks (rewriteRecords). An older reaperd refuses a newer
// version rather than misreads it.
const SchemaVersion = 4

var (
	bucketMeta           = []byte("meta")
	bucketEntries        = []byte("entries")
	bucketSessions       = []byte("sessions")
	bucketSessionMembers = []byte("session_members")
	bucketDeadlines      = []byte("deadlines")
	bucketProcesses      = []byte("processes")
	bucketRetire         = []byte("retire")
	bucketAudit          = []byte("audit")
	bucketClosing        = []byte("closing")
	bucketInFlight       = []byte("in_flight")
	bucketQuarantine     = []byte("quarantine")
	bucketUnseen         = []byte("unseen")
	bucketUnverified     = []byte("unverified")
	bucketUntracked      = []byte("untracked")
	bucketCounts         = []byte("counts")
	bucketKeep           = []byte("keep")
	bucketSessionJoins   = []byte("session_joins")
	// bucketSessionEntries is version 3's membership, session NUL key,
	// which Open moves to session_members (moveMembers).
	bucketSessionEntries = []byte("session_entries")

	keySchema  = []byte("schema")
	keyCounted = []byte("counted") // countsVersion once the counts bucket is complete
	keyAlive   = []byte("alive")
	// keyReencode is set while records of an older schema are left to
	// rewrite in the binary form; its value is the bucket, NUL, and the
	// last key rewritten.
	keyReencode = []byte("reencode")
)

var allBuckets = [][]byte{bucketMeta, bucketEntries, bucketSessions, bucketSessionMembers,
	bucketDeadlines, bucketProcesses, bucketRetire, bucketAudit, bucketClosing, bucketInFlight,
	bucketQuarantine, bucketUnseen, bucketUntracked, bucketCounts, bucketKeep, bucketSessionJoins, bucketUnverified}

// countsVersion is what the counts bucket counts: 1, the entries by
// provider and state; 2, the unverified entries and the joins too. A ledger counted by
// an older version is counted again when it is opened.
const countsVersion = 2

// ErrLocked is returned by Open when another process holds the ledger file.
var ErrLocked = errors.New("ledger is locked by another process")

// ErrClosed is returned when the ledger is used after Close. It is wrapped
// in a *reaper.Error with code EUNAVAILABLE.
var ErrClosed = errors.New("ledger is closed")

// Options configures Open.
type Options struct {
	// LockTimeout is how long Open waits for another process to release
	// the file lock. Zero means 2 seconds.
	LockTimeout time.Duration
	// MaxBatch caps how many updates share one commit. Zero means 4096.
	MaxBatch int
	// NoSync skips fsync on commit. It is for benchmarks that compare
	// against it only; a ledger opened this way may lose registrations.
	NoSync bool
	// RebuildFreelist leaves bbolt's freelist unwritten, so that Open
	// rebuilds it by reading every page of the file: 11.6 s for a
	// 1,000,000-entry ledger out of the page cache, against 72 ms when it
	// is written (BenchmarkOpen1M). False, the default, writes it at each
	// commit, which costs registrations nothing measurable
	// (BenchmarkRegister64); a ledger written without it gets it at its
	// first open.
	RebuildFreelist bool
}

// DB is an open ledger. It implements reaper.Store.
type DB struct {
	bolt *bolt.DB
	path string

	maxBatch int
	reqs     chan *writeReq
	stop     chan struct{}
	done     chan struct{}

	mu     sync.RWMutex // guards closed against concurrent Update/Close
	closed bool

	// writeErr holds the error of the last commit while commits fail; nil
	// once one succeeds.
	writeErr atomic.Pointer[error]
	// calls counts update-function calls, for tests of the committer.
	calls atomic.Int64
	// joins is the number of session joins after the last commit; only
	// the committer's goroutine uses it.
	joins int64
}

var _ reaper.Store = (*DB)(nil)

type writeReq struct {
	fn   func(reaper.Tx) error
	done chan error
	err  error // a refusal, answered once the batch is settled
}

// Open opens or creates the ledger at path, creating its directory (mode
// 0700) if needed.
func Open(path string, o Options) (*DB, error) {
	if o.LockTimeout <= 0 {
		o.LockTimeout = 2 * time.Second
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 4096
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create ledger directory: %w", err)
	}
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:        o.LockTimeout,
		NoSync:         o.NoSync,
		FreelistType:   bolt.FreelistMapType,
		NoFreelistSync: o.RebuildFreelist,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open ledger %s: %w (waited %s; is another reaperd running on it?)", path, ErrLocked, o.LockTimeout)
	} else if err != nil {
		return nil, fmt.Errorf("open ledger %s: %w", path, err)
	}
	db := &DB{bolt: bdb, path: path, maxBatch: o.MaxBatch,
		reqs: make(chan *writeReq, o.MaxBatch), stop: make(chan struct{}), done: make(chan struct{})}
	if err := db.init(); err != nil {
		bdb.Close()
		return nil, err
	}
	if err := db.rewriteRecords(); err != nil {
		bdb.Close()
		return nil, err
	}
	if err := db.moveMembers(); err != nil {
		bdb.Close()
		return nil, err
	}
	go db.commitLoop()
	return db, nil
}

func (db *DB) init() error {
	return db.bolt.Update(func(btx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := btx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		meta := btx.Bucket(bucketMeta)
		v := meta.Get(keySchema)
		switch {
		case v == nil && btx.Bucket(bucketEntries).Stats().KeyN == 0:
			// A new ledger.
		case v == nil:
			return fmt.Errorf("open ledger %s: it holds entries but no schema version: is it a reaperd ledger?", db.path)
		case len(v) != 8:
			return fmt.Errorf("open ledger %s: schema version is corrupt", db.path)
		default:
			got := binary.BigEndian.Uint64(v)
			if got > SchemaVersion {
				return fmt.Errorf("open ledger %s: schema version %d is newer than this reaperd understands (%d): upgrade reaperd", db.path, got, SchemaVersion)
			}
			if got < SchemaVersion {
				if err := migrate(btx, got); err != nil {
					return fmt.Errorf("open ledger %s: migrate schema %d to %d: %w", db.path, got, SchemaVersion, err)
				}
			}
		}
		if v := meta.Get(keyCounted); len(v) != 8 || binary.BigEndian.Uint64(v) < countsVersion {
			if err := recount(btx); err != nil {
				return fmt.Errorf("open ledger %s: count entries: %w", db.path, err)
			}
			if err := meta.Put(keyCounted, u64(countsVersion)); err != nil {
				return err
			}
		}
		return meta.Put(keySchema, u64(SchemaVersion))
	})
}

// Path returns the ledger file's path.
func (db *DB) Path() string { return db.path }

// Bolt returns the underlying bbolt database, for consistency checks and
// statistics.
func (db *DB) Bolt() *bolt.DB { return db.bolt }

// Close waits for queued updates to commit and closes the file.
func (db *DB) Close() error {
	db.mu.Lock()
	if db.closed {
		db.mu.Unlock()
		return nil
	}
	db.closed = true
	db.mu.Unlock()
	close(db.stop)
	<-db.done
	return db.bolt.Close()
}

// View runs fn in a read-only transaction.
func (db *DB) View(ctx context.Context, fn func(reaper.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	db.mu.RLock()
	defer db.mu.RUnlock()
	if db.closed {
		return errClosed()
	}
	return db.bolt.View(func(btx *bolt.Tx) error { return fn(&tx{tx: btx}) })
}

// Update runs fn in a read-write transaction that may be shared with
// concurrent callers, and returns after the commit is on disk.
func (db *DB) Update(ctx context.Context, fn func(reaper.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r := &writeReq{fn: fn, done: make(chan error, 1)}
	db.mu.RLock()
	if db.closed {
		db.mu.RUnlock()
		return errClosed()
	}
	db.reqs <- r
	db.mu.RUnlock()
	// Once queued the update will be committed or rejected promptly; wait
	// for the verdict even if ctx ends, so the caller never mistakes a
	// committed write for a failed one.
	return <-r.done
}

// maxLinger caps how long a commit waits for the writers of the previous
// one (lingering, in commitLoop).
const maxLinger = 2 * time.Millisecond

func (db *DB) commitLoop() {
	defer close(db.done)
	batch := make([]*writeReq, 0, db.maxBatch)
	last, took := 0, time.Duration(0) // the previous commit's size and duration
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	for {
		select {
		case r := <-db.reqs:
			batch = append(batch[:0], r)
		case <-db.stop:
			db.drain()
			return
		}
		// Lingering. Writers that wait for each commit before sending their
		// next update (as registering agents do) split, if the batch took
		// only what was queued, into two groups that commit in turn: each
		// commit carries half of them and pays a whole fsync. So, while the
		// batch is smaller than the previous one, it waits a little for the
		// rest of those writers, at most a quarter of the previous commit's
		// time and maxLinger: they are on their way back, and joining this
		// commit costs them less than waiting for the next. A lone writer
		// (a batch as large as the previous) never waits.
		wait := min(took/4, maxLinger)
		var lingering <-chan time.Time
	fill:
		for len(batch) < db.maxBatch {
			select {
			case r := <-db.reqs:
				batch = append(batch, r)
				continue
			default:
			}
			if len(batch) >= last || wait <= 0 {
				break
			}
			if lingering == nil {
				linger.Reset(wait)
				lingering = linger.C
			}
			select {
			case r := <-db.reqs:
				batch = append(batch, r)
			case <-lingering:
				break fill
			case <-db.stop:
				break fill
			}
		}
		if lingering != nil && !linger.Stop() {
			select {
			case <-linger.C:
			default:
			}
		}
		start := time.Now()
		db.commit(batch)
		last, took = len(batch), time.Since(start)
		// The requests hold their functions, and what those reach: let
		// them go before the next write comes.
		clear(batch)
		if db.joins >= foldJoins {
			// A failure leaves the joins where they are, to be folded
			// after a later commit; readers read them either way.
			if db.bolt.Update(fold) == nil {
				db.joins = 0
			}
		}
	}
}

// drain commits what is still queued when the ledger closes. Close holds
// the write lock, so nothing more is queued.
func (db *DB) drain() {
	for {
		select {
		case r := <-db.reqs:
			db.commit([]*writeReq{r})
		default:
			return
		}
	}
}

var errAbortBatch = errors.New("abort batch")

// appendFill is how full a page of an append-mostly bucket is left when it
// splits. Their keys start with a time (the audit log, the deadline,
// retire and unseen indexes), so writes land at or near their end, and
// bbolt's default of one half would leave every page of them half empty:
// at 0.95 they take half the pages, and a commit dirties fewer.
const appendFill = 0.95

// packAppends sets the fill of the append-mostly buckets for one write
// transaction (bbolt does not store it).
func packAppends(btx *bolt.Tx) {
	for _, name := range [][]byte{bucketAudit, bucketDeadlines, bucketRetire, bucketUnseen, bucketUnverified, bucketSessionJoins} {
		btx.Bucket(name).FillPercent = appendFill
	}
}

// commit runs the batch in one transaction. A function that refuses (returns
// an error) before writing anything is answered with its error and costs the
// others nothing. A function that fails or panics after writing aborts the
// transaction: it is answered with its error, removed, and the rest run
// again. So reruns happen only for failures after a write, which are rare
// (I/O errors and bugs), never for ordinary refusals.
func (db *DB) commit(batch []*writeReq) {
	for len(batch) > 0 {
		failed, failErr := -1, error(nil)
		err := db.bolt.Update(func(btx *bolt.Tx) error {
			packAppends(btx)
			defer func() { db.joins = joinCount(btx) }()
			for i, r := range batch {
				r.err = nil
				t := &tx{tx: btx}
				db.calls.Add(1)
				if err := safeCall(r.fn, t); err != nil {
					if !t.wrote {
						r.err = err
						continue
					}
					failed, failErr = i, err
					return errAbortBatch
				}
			}
			return nil
		})
		if failed >= 0 {
			batch[failed].done <- failErr
			batch = append(batch[:failed:failed], batch[failed+1:]...)
			continue
		}
		if err != nil {
			err = db.unavailable(err)
			db.writeErr.Store(&err)
		} else {
			db.writeErr.Store(nil)
		}
		for _, r := range batch {
			if r.err != nil {
				r.done <- r.err
			} else {
				r.done <- err
			}
		}
		return
	}
}

// WriteError returns why the last commit failed, while commits fail, and
// nil once one succeeds (or before any fails). /healthz reports it.
func (db *DB) WriteError() error {
	if p := db.writeErr.Load(); p != nil {
		return *p
	}
	return nil
}

// UpdateCalls returns how many times update functions have been called
// since Open, reruns included.
func (db *DB) UpdateCalls() int64 { return db.calls.Load() }

// unavailable turns a failed commit into an EUNAVAILABLE domain error that
// names the ledger and, where it is known, what an operator should do.
func (db *DB) unavailable(err error) error {
	var what string
	switch {
	case errors.Is(err, syscall.ENOSPC):
		what = "no space left on device: free space on its filesystem"
	case errors.Is(err, syscall.EDQUOT):
		what = "disk quota exceeded: raise the quota or free space"
	case errors.Is(err, syscall.EROFS):
		what = "the filesystem is read-only: remount it read-write"
	case errors.Is(err, syscall.EIO):
		what = "I/O error: check the disk (dmesg)"
	case errors.Is(err, syscall.EFBIG):
		what = "file too large: check the filesystem's limits"
	default:
		what = err.Error()
	}
	return &reaper.Error{Code: reaper.EUNAVAILABLE, Err: err,
		Message: fmt.Sprintf("ledger %s cannot be written: %s; reaperd keeps retrying and recovers on its own", db.path, what)}
}

func errClosed() error {
	return &reaper.Error{Code: reaper.EUNAVAILABLE, Err: ErrClosed, Message: "the ledger is closed: reaperd is stopping"}
}

func safeCall(fn func(reaper.Tx) error, t reaper.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("ledger update panicked: %v\n%s", p, debug.Stack())
		}
	}()
	return fn(t)
}

// u64 encodes v big-endian.
func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

// has reports whether b holds key k. Unlike b.Get(k) != nil, it holds for
// a key put with an empty value in the same transaction, for which bbolt's
// Get returns nil until the commit.
func has(b *bolt.Bucket, k []byte) bool {
	ck, _ := b.Cursor().Seek(k)
	return ck != nil && bytes.Equal(ck, k)
}

// timeKey returns the 8-byte sortable encoding of t.
func timeKey(t time.Time) uint64 {
	ns := t.UnixNano()
	if ns < 0 {
		return 0
	}
	return uint64(ns)
}

// keyTime reads the time timeKey wrote at the start of b (at least 8
// bytes).
func keyTime(b []byte) time.Time { return time.Unix(0, int64(binary.BigEndian.Uint64(b))).UTC() }

func indexKey(t time.Time, kind reaper.DueKind, key string) []byte {
	b := make([]byte, 9+len(key))
	binary.BigEndian.PutUint64(b, timeKey(t))
	b[8] = byte(kind)
	copy(b[9:], key)
	return b
}

// parseIndexKey splits an index key; ok is false for a malformed one.
func parseIndexKey(k []byte) (at time.Time, kind reaper.DueKind, key string, ok bool) {
	if len(k) < 9 {
		return time.Time{}, 0, "", false
	}
	return keyTime(k), reaper.DueKind(k[8]), string(k[9:]), true
}

func encode(v any) ([]byte, error) { return json.Marshal(v) }
