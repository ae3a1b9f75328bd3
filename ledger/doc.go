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
//	session_members  session id NUL be64(registered ns) PROVIDER/ID → ∅  (a session's entries)
//	session_joins    be64(registered ns) session id NUL PROVIDER/ID → ∅  (memberships not folded into session_members yet)
//	deadlines        be64(unix ns) kind key → ∅   (entry at reaper.DueAt; live session at its lease end)
//	processes        session id → ∅               (live sessions with a pid)
//	closing          PROVIDER/ID → ∅              (entries in state closing)
//	keep             PROVIDER/ID → ∅              (active entries tagged keep)
//	in_flight        PROVIDER/ID → ∅              (closing entries a running daemon holds)
//	unseen           be64(registered ns) kind key → "" | "u"  (entries no listing has shown yet; "u": unverified)
//	retire           be64(unix ns) kind key → ∅   (final entries; sessions that may be pruned)
//	quarantine       be64(unix ns) kind key → {reason, raw}  (undecodable records moved aside)
//	untracked        PROVIDER/ID → be64(first seen ns)  (live sandboxes no entry tracks)
//	counts           PROVIDER NUL state → be64(n)  (entries by provider and state; and, after 0x01, unverified entries and joins)
//	audit            be64(unix ns) be64(seq) → event (binary, event.go; JSON before version 3)
//
// The deadlines index makes selecting due entries cost O(due) rather than
// O(ledger): a cursor seeks to the start and stops at the first deadline in
// the future. An entry is indexed at reaper.DueAt(entry, its session), so
// that its session's end is reflected in it: PutEntry reads the session, and
// PutSession re-indexes the session's entries when the session ends.
//
// An older ledger is migrated when it is opened. From version 1 the
// indexes are rebuilt from the entries and sessions in one transaction.
// From version 3 the keep index is built; then, 20,000 records to a
// transaction, the JSON entries and sessions are rewritten in the binary
// form and the session membership (session NUL key) is moved to
// session_members. An interrupted migration goes on at the next Open; both
// forms are read meanwhile.
//
// A registration writes little at random. Its entry goes where its key
// says, but everything else it writes is appended: its deadline, unseen
// and audit keys start with a time, and its session membership goes first
// to session_joins, keyed by registration time; every 1,024 joins the
// committer folds them into session_members in one transaction, where a
// session's members are ordered by time too, so that a fold appends to
// each session's last page. The buckets written at their end (audit,
// deadlines, retire, unseen, session_joins, and session_members in a fold)
// are filled to 0.95 rather than bbolt's default half, which would leave
// every page of them half empty.
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
