// Package ledger is reaperd's durable store of entries, sessions and the
// audit log, on a single bbolt file.
//
// # Basics
//
// Open a ledger with Open; it implements reaper.Store. One process may hold
// a ledger file at a time: bbolt takes an exclusive flock, and Open gives up
// after Options.LockTimeout with an error that names the file instead of
// waiting forever.
//
// Writes go through a group committer: concurrent Update calls are run
// one after another inside a single read-write transaction that is fsync'd
// once, and each caller returns only after that commit. Durability is never
// traded for throughput; throughput comes from sharing the fsync.
//
// The file holds these buckets (schema version 4):
//
//	meta             schema version; the daemon's alive stamp; the counts' and a migration's marks
//	entries          PROVIDER/ID → entry (binary, entry.go; JSON before version 4)
//	sessions         session id → session (binary, entry.go; JSON before version 4)
//	session_entries  session id NUL PROVIDER/ID → ∅
//	deadlines        be64(unix ns) kind key → ∅   (entry at reaper.DueAt; live session at its lease end)
//	processes        session id → ∅               (live sessions with a pid)
//	closing          PROVIDER/ID → ∅              (entries in state closing)
//	keep             PROVIDER/ID → ∅              (active entries tagged keep)
//	in_flight        PROVIDER/ID → ∅              (closing entries a running daemon holds)
//	unseen           be64(registered ns) kind key → "" | "u"  (entries no listing has shown yet; "u": unverified)
//	retire           be64(unix ns) kind key → ∅   (final entries; sessions that may be pruned)
//	quarantine       be64(unix ns) kind key → {reason, raw}  (undecodable records moved aside)
//	untracked        PROVIDER/ID → be64(first seen ns)  (live sandboxes no entry tracks)
//	counts           PROVIDER NUL state → be64(n)  (entries by provider and state)
//	audit            be64(unix ns) be64(seq) → event (binary, event.go; JSON before version 3)
//
// The deadlines index makes selecting due entries cost O(due) rather than
// O(ledger): a cursor seeks to the start and stops at the first deadline in
// the future. An entry is indexed at reaper.DueAt(entry, its session), so
// that its session's end is reflected in it: PutEntry reads the session, and
// PutSession re-indexes the session's entries when the session ends.
//
// An older ledger is migrated when it is opened. From version 1 the
// indexes are rebuilt from the entries and sessions in one transaction;
// from version 3 the keep index is built, then the JSON entries and
// sessions are rewritten in the binary form, 20,000 to a transaction (an interrupted
// rewrite goes on at the next Open; both forms are read meanwhile).
//
// The buckets whose keys start with a time (audit, deadlines, retire,
// unseen) are written at a fill of 0.95 rather than bbolt's default half:
// their writes land at or near their end, and at half fill every page of
// them would stay half empty.
//
// # Caveats
//
// The free list is written at each commit, so that opening a large ledger
// reads it rather than every page of the file: a 1,000,000-entry ledger
// out of the page cache opens in 72 ms instead of 11.6 s, and registrations
// are not measurably slower for it. A ledger written without it
// (Options.RebuildFreelist, or an older reaperd) is scanned once, at its
// next open, and written with it from then on.
//
// An Update function may run more than once when another function of its
// batch fails after writing, so it must not have side effects outside the
// transaction. A function that returns an error before its first write
// costs the others nothing; one that fails or panics after writing is
// removed from the batch and the rest are run again without it.
//
// A commit that fails (a full disk, an I/O error) is returned as a
// reaper.Error with code EUNAVAILABLE naming the cause, and WriteError
// reports it until a commit succeeds. bbolt rolls the transaction back; the
// same DB works again once the cause is gone.
//
// # Tools
//
// DB.Backup streams a consistent copy from one read transaction while the
// daemon serves (reaperd ledger backup). Check verifies a ledger file
// offline: bbolt's own check, then that every record decodes and every
// index (deadlines at reaper.DueAt, closing, in-flight, session members,
// processes, retirement, counts) agrees with the records (reaperd ledger
// check). Compact copies a file without its free pages (reaperd ledger
// compact). Both offline tools refuse a file a running daemon holds.
//
// The counts bucket keeps the number of entries by provider and state, so
// that metrics cost the same at any size; a quarantine marks it stale and
// the next open counts again.
package ledger
