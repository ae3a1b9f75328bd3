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
// The file holds these buckets:
//
//	meta             schema version
//	entries          PROVIDER/ID → entry (JSON)
//	sessions         session id → session (JSON)
//	session_entries  session id NUL PROVIDER/ID → ∅
//	deadlines        be64(unix ns) kind key → ∅   (entry expiry or retry; session lease end or end)
//	processes        session id → ∅               (live sessions with a pid)
//	retire           be64(unix ns) kind key → ∅   (final entries and settled sessions, for pruning)
//	audit            be64(unix ns) be64(seq) → event (JSON)
//
// The deadlines index makes selecting due entries cost O(due) rather than
// O(ledger): a cursor seeks to the start and stops at the first deadline in
// the future.
//
// # Caveats
//
// The free list is not written at each commit (bbolt's NoFreelistSync, as
// etcd runs it): commits write fewer pages, and opening the ledger rebuilds
// the free list by scanning the file, which takes longer the larger it is.
//
// An Update function may run more than once when a transaction it was
// batched with fails, so it must not have side effects outside the
// transaction. A function that returns an error or panics is removed from
// the batch and the rest are committed without it.
package ledger
