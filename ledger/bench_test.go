package ledger_test

// Benchmarks for the two ledger performance targets (see docs/benchmarks.md):
//
//   - BenchmarkRegister64: durable registrations per second with 64
//     concurrent writers, through Engine.Register on the ledger, beside raw
//     bbolt baselines on the same disk and the ledger with NoSync.
//   - BenchmarkDue1M: selecting the 1,000 due entries of a 1,000,000-entry
//     ledger with Tx.Due, beside a full scan with reaper.Decide.
//
// No Test function here; the 1M ledger is built only when BenchmarkDue1M
// runs (go test -bench), and never with -short.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/reaperd/reaperd/engine"
	"github.com/reaperd/reaperd/ledger"
	"github.com/reaperd/reaperd/ledger/ledgertest"
	"github.com/reaperd/reaperd/reaper"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// benchClients is the number of concurrent writers in the registration
// benchmarks: 64 agent sessions registering at once.
const benchClients = 64

// benchParallel runs op b.N times in all over exactly benchClients
// goroutines and reports registrations per second.
func benchParallel(b *testing.B, op func(client int, n int64) error) {
	b.Helper()
	ledgertest.Parallel(b, benchClients, "reg/s", op)
}

func benchOpenLedger(b *testing.B, o ledger.Options) *ledger.DB {
	b.Helper()
	db, err := ledger.Open(filepath.Join(b.TempDir(), "ledger.db"), o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return db
}

func benchCountEntries(b *testing.B, db *bolt.DB, bucket string, want int) {
	b.Helper()
	err := db.View(func(tx *bolt.Tx) error {
		if got := tx.Bucket([]byte(bucket)).Stats().KeyN; got != want {
			return fmt.Errorf("%d keys in %s, want %d", got, bucket, want)
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

// benchValue is a JSON entry of the size the ledger stores for one
// registration, for the raw bbolt baselines.
func benchValue() []byte {
	owner := uint32(1000)
	now := time.Now().UTC()
	v, _ := json.Marshal(&reaper.Entry{Provider: "bench", ID: "sb-r1-000000001", Session: "agent-r1-01",
		Labels: map[string]string{"task": "bench"}, RegisteredAt: now, ExpiresAt: now.Add(30 * time.Minute),
		State: reaper.StateActive, Owner: &owner})
	return v
}

// BenchmarkRegister64 measures durable registrations with 64 concurrent
// writers at the ledger level.
//
//   - path=engine: engine.Engine.Register on the ledger, no HTTP: entry,
//     session, their indexes and an audit event per call. fsync=on is the
//     daemon's ledger; fsync=off opens it with Options.NoSync.
//   - path=bolt-update: raw bbolt, one db.Update (one commit) per write of
//     one entry-sized value.
//   - path=bolt-batch: raw bbolt db.Batch with its default MaxBatchSize
//     (1000) and MaxBatchDelay (10ms).
//   - path=bolt-batch64: raw bbolt tuned as the ledger is (the ledger's
//     open options: map freelist, written at each commit) with db.Batch and
//     MaxBatchSize 64, one per writer: the best batched commit of bbolt
//     on this disk, the ledger's baseline.
//
// Sub-benchmark names are key=value for benchstat -col /path or /fsync.
func BenchmarkRegister64(b *testing.B) {
	viaEngine := func(o ledger.Options) func(b *testing.B) {
		return func(b *testing.B) {
			db := benchOpenLedger(b, o)
			eng := &engine.Engine{
				Store:     db,
				Providers: engine.ProviderSet{Enabled: map[string]reaper.Provider{"bench": ledgertest.NopProvider{Type: "bench"}}},
				Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
			}
			run := ledgertest.NextRun()
			ctx := reaper.WithCaller(context.Background(), reaper.Caller{UID: 1000})
			benchParallel(b, func(c int, n int64) error {
				_, created, err := eng.Register(ctx, ledgertest.AgentRegistration("bench", run, c, n))
				if err == nil && !created {
					err = fmt.Errorf("not created")
				}
				return err
			})
			benchCountEntries(b, db.Bolt(), "entries", b.N)
		}
	}
	b.Run("path=engine/fsync=on", viaEngine(ledger.Options{}))
	b.Run("path=engine/fsync=off", viaEngine(ledger.Options{NoSync: true}))
	// What writing the freelist at each commit (the default) costs against
	// leaving it to be rebuilt at Open (BenchmarkOpen1M shows what it saves
	// at start-up).
	b.Run("path=engine-freelist-rebuilt/fsync=on", viaEngine(ledger.Options{RebuildFreelist: true}))

	raw := func(batch bool, o *bolt.Options, maxBatch int) func(b *testing.B) {
		return func(b *testing.B) {
			db, err := bolt.Open(filepath.Join(b.TempDir(), "bolt.db"), 0o600, o)
			if err != nil {
				b.Fatal(err)
			}
			if maxBatch > 0 {
				db.MaxBatchSize = maxBatch
			}
			b.Cleanup(func() { db.Close() })
			bucket := []byte("entries")
			if err := db.Update(func(tx *bolt.Tx) error {
				_, err := tx.CreateBucket(bucket)
				return err
			}); err != nil {
				b.Fatal(err)
			}
			val := benchValue()
			run := ledgertest.NextRun()
			write := db.Update
			if batch {
				write = db.Batch
			}
			benchParallel(b, func(c int, n int64) error {
				key := []byte("bench/" + ledgertest.ScatteredID(uint64(run), uint64(n)))
				return write(func(tx *bolt.Tx) error {
					return tx.Bucket(bucket).Put(key, val)
				})
			})
			benchCountEntries(b, db, "entries", b.N)
		}
	}
	b.Run("path=bolt-update/fsync=on", raw(false, nil, 0))
	b.Run("path=bolt-batch/fsync=on", raw(true, nil, 0))
	b.Run("path=bolt-batch64/fsync=on", raw(true, &bolt.Options{FreelistType: bolt.FreelistMapType}, benchClients))
}

// The 1M-entry ledger of BenchmarkDue1M.
const (
	due1MEntries  = 1_000_000
	due1MDue      = 1_000 // every due1MEntries/due1MDue-th entry has expired
	due1MSessions = 10_000
	due1MChunk    = 100_000 // entries per build transaction
)

// due1MNow is the instant at which the due entries are selected.
var due1MNow = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// buildDue1M fills db with due1MEntries active entries (UUID-like ids, as
// in BenchmarkRegister64) spread over due1MSessions live sessions (lease
// 2m, heartbeat 10s before now, so no session is due). Every 1000th entry
// expired a minute before now; the others expire between 1h and about
// 1h17m after now.
func buildDue1M(b *testing.B, db *ledger.DB) {
	b.Helper()
	owner := uint32(1000)
	perSession := due1MEntries / due1MSessions
	reg := due1MNow.Add(-time.Hour)
	for start := 0; start < due1MEntries; start += due1MChunk {
		err := db.Update(context.Background(), func(tx reaper.Tx) error {
			for i := start; i < start+due1MChunk; i++ {
				sid := fmt.Sprintf("agent-%05d", i/perSession)
				if i%perSession == 0 {
					if err := tx.PutSession(&reaper.Session{ID: sid, Lease: reaper.Duration(2 * time.Minute),
						StartedAt: reg, LastHeartbeat: due1MNow.Add(-10 * time.Second), Owner: &owner}); err != nil {
						return err
					}
				}
				exp := due1MNow.Add(time.Hour + time.Duration(i)*time.Millisecond)
				if i%(due1MEntries/due1MDue) == 0 {
					exp = due1MNow.Add(-time.Minute + time.Duration(i)*time.Nanosecond)
				}
				if err := tx.PutEntry(&reaper.Entry{Provider: "bench", ID: ledgertest.ScatteredID(0, uint64(i)), Session: sid,
					Labels: map[string]string{"task": "bench"}, RegisteredAt: reg, ExpiresAt: exp,
					State: reaper.StateActive, Owner: &owner}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatalf("build 1M ledger: %v", err)
		}
	}
}

// BenchmarkDue1M measures selecting the due entries of a ledger of
// 1,000,000 entries of which 1,000 are due, warm page cache.
//
//   - method=index: Tx.Due(now, 0) in a View, as the engine does.
//   - method=fullscan: the alternative without the deadlines index: load the
//     sessions, iterate every entry with Tx.Entries and apply
//     reaper.Decide.
//
// The ledger (about 1 GiB) is built once per process run of this benchmark,
// which takes some 20 s, in a temporary directory removed afterwards.
// Skipped with -short.
func BenchmarkDue1M(b *testing.B) {
	if testing.Short() {
		b.Skip("builds a 1,000,000-entry ledger; not with -short")
	}
	// Sub-benchmarks run -count times each inside this one call, so the
	// ledger is built once and shared by every run of both.
	path := filepath.Join(b.TempDir(), "ledger.db")
	db, err := ledger.Open(path, ledger.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	start := time.Now()
	buildDue1M(b, db)
	if fi, err := os.Stat(path); err == nil {
		b.Logf("built a %d-entry ledger (%d MiB) in %s", due1MEntries, fi.Size()>>20, time.Since(start).Round(time.Second))
	}
	ctx := context.Background()

	b.Run("method=index", func(b *testing.B) {
		for b.Loop() {
			var items []reaper.DueItem
			err := db.View(ctx, func(tx reaper.Tx) error {
				var err error
				items, err = tx.Due(due1MNow, 0)
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
			if len(items) != due1MDue {
				b.Fatalf("%d due items, want %d", len(items), due1MDue)
			}
		}
	})

	b.Run("method=fullscan", func(b *testing.B) {
		for b.Loop() {
			due := 0
			err := db.View(ctx, func(tx reaper.Tx) error {
				sessions := make(map[string]*reaper.Session, due1MSessions)
				if err := tx.Sessions(func(s *reaper.Session) error {
					sessions[s.ID] = s
					return nil
				}); err != nil {
					return err
				}
				return tx.Entries(reaper.EntryFilter{}, func(e *reaper.Entry) error {
					if reaper.Decide(e, sessions[e.Session], due1MNow).Action == reaper.ActionClose {
						due++
					}
					return nil
				})
			})
			if err != nil {
				b.Fatal(err)
			}
			if due != due1MDue {
				b.Fatalf("%d due entries, want %d", due, due1MDue)
			}
		}
	})
}

// BenchmarkQueries1M measures the list queries of GET /v1/sandboxes on the
// 1,000,000-entry ledger of BenchmarkDue1M (every entry active, none
// closing), warm page cache:
//
//   - query=closing/method=index: Entries for state closing, through the
//     closing index, as GET /v1/sandboxes?state=closing now reads it.
//   - query=closing/method=fullscan: the same answer from a scan of every
//     entry, as it was read before.
//   - query=first-page: the first page of 1,000 entries in key order, as
//     `reaperd list` reads it.
//
// Skipped with -short.
func BenchmarkQueries1M(b *testing.B) {
	if testing.Short() {
		b.Skip("builds a 1,000,000-entry ledger; not with -short")
	}
	db, err := ledger.Open(filepath.Join(b.TempDir(), "ledger.db"), ledger.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	buildDue1M(b, db)
	ctx := context.Background()
	count := func(b *testing.B, f reaper.EntryFilter, stop int) int {
		n := 0
		err := db.View(ctx, func(tx reaper.Tx) error {
			return tx.Entries(f, func(e *reaper.Entry) error {
				if f.Match(e) {
					n++
				}
				if n == stop {
					return errStop
				}
				return nil
			})
		})
		if err != nil && err != errStop {
			b.Fatal(err)
		}
		return n
	}
	b.Run("query=closing/method=index", func(b *testing.B) {
		for b.Loop() {
			if n := count(b, reaper.EntryFilter{States: []reaper.State{reaper.StateClosing}}, 0); n != 0 {
				b.Fatalf("%d closing entries, want none", n)
			}
		}
	})
	b.Run("query=closing/method=fullscan", func(b *testing.B) {
		// Two states take the scan; the match keeps closing ones alone.
		f := reaper.EntryFilter{States: []reaper.State{reaper.StateClosing, reaper.StateClosing}}
		for b.Loop() {
			if n := count(b, f, 0); n != 0 {
				b.Fatalf("%d closing entries, want none", n)
			}
		}
	})
	b.Run("query=first-page", func(b *testing.B) {
		for b.Loop() {
			if n := count(b, reaper.EntryFilter{}, 1000); n != 1000 {
				b.Fatalf("%d entries, want a page of 1000", n)
			}
		}
	})
}

var errStop = errors.New("stop")

// BenchmarkOpen1M times opening the 1,000,000-entry ledger of
// BenchmarkDue1M, as the daemon does at start-up, with the freelist
// written at each commit (freelist=synced, the default) and rebuilt from
// the pages at Open (freelist=rebuilt, Options.RebuildFreelist), each with the file in the page cache
// (cache=warm) and evicted from it first with posix_fadvise DONTNEED
// (cache=cold). Skipped with -short.
func BenchmarkOpen1M(b *testing.B) {
	if testing.Short() {
		b.Skip("builds a 1,000,000-entry ledger; not with -short")
	}
	for _, fl := range []struct {
		name string
		sync bool
	}{{"freelist=rebuilt", false}, {"freelist=synced", true}} {
		path := filepath.Join(b.TempDir(), "ledger.db")
		db, err := ledger.Open(path, ledger.Options{RebuildFreelist: !fl.sync})
		if err != nil {
			b.Fatal(err)
		}
		buildDue1M(b, db)
		if err := db.Close(); err != nil {
			b.Fatal(err)
		}
		for _, cold := range []bool{false, true} {
			name := fl.name + "/cache=warm"
			if cold {
				name = fl.name + "/cache=cold"
			}
			b.Run(name, func(b *testing.B) {
				for b.Loop() {
					if cold {
						b.StopTimer()
						evict(b, path)
						b.StartTimer()
					}
					db, err := ledger.Open(path, ledger.Options{RebuildFreelist: !fl.sync})
					if err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					db.Close()
					b.StartTimer()
				}
			})
			// Ready: the ledger opened and the engine's start-up done (in-flight
			// flags cleared, process watches armed, deadlines read), as the
			// daemon is when it tells systemd READY=1.
			b.Run(name+"/until=ready", func(b *testing.B) {
				for b.Loop() {
					if cold {
						b.StopTimer()
						evict(b, path)
						b.StartTimer()
					}
					db, err := ledger.Open(path, ledger.Options{RebuildFreelist: !fl.sync})
					if err != nil {
						b.Fatal(err)
					}
					// An hour before the ledger's "now": nothing is due, so the
					// start-up alone is timed.
					eng := &engine.Engine{Store: db, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
						Clock: clockwork.NewFakeClockAt(due1MNow.Add(-time.Hour)), ProcessAlive: func(int, uint64) bool { return true },
						Providers: engine.ProviderSet{Enabled: map[string]reaper.Provider{"e2b": ledgertest.NopProvider{Type: "e2b"}}}}
					ctx, cancel := context.WithCancel(context.Background())
					done := make(chan error, 1)
					go func() { done <- eng.Run(ctx) }()
					<-eng.Started()
					b.StopTimer()
					cancel()
					<-done
					db.Close()
					b.StartTimer()
				}
			})
		}
	}
}

// evict drops a file's pages from the page cache.
func evict(b *testing.B, path string) {
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		b.Fatal(err)
	}
}
