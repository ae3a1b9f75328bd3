// Package reaper is reaperd's domain: entries, sessions and audit events,
// the reaping policy, the Provider and Store interfaces, the Service that
// clients use, validation and the errors they share. It depends on the
// standard library only; the machinery that runs the policy is package
// engine, the ledger is package ledger, the API is package api.
//
// # Basics
//
// An Entry is one sandbox, keyed PROVIDER/ID. It moves through four states:
//
//	active ──(due, not keep/attached)──▶ closing ──(provider confirmed or already gone)──▶ closed
//	   │                                    └──(error)──▶ stays closing, retried with backoff
//	   └──(session closed it itself / attached session ended)──▶ released
//
// An active entry is due when its expiry passed, or its Session stopped
// vouching for it: the lease lapsed, the session's process exited, or the
// session ended. Decide is the policy, a pure function of (entry, session,
// now); DueAt is the instant at which it changes, and the only definition
// of due-ness the ledger indexes.
//
// # Invariants
//
// Who may change what. An entry and a session belong to the uid that
// created them (Owner). Only that uid, root, the daemon's own user or a
// member of a configured admin group may tag, release, heartbeat, end or
// register into them (Access). A record without an owner may be changed by
// anyone who can reach the daemon.
//
// What is committed before a provider is called. The move to closing is
// committed in a transaction that reads the entry afresh and applies
// Decide, so keep and attached are re-checked at that instant; a closing
// entry can no longer be tagged. Each close call is preceded by a second
// commit that re-reads the entry (it must still be closing and held by
// this daemon) and counts the attempt. A crash anywhere leaves entries
// closing, which the next start resumes; Provider.Close is idempotent.
//
// What "closed" means. An entry is closed only once the provider has
// confirmed the delete (or, for asynchronous deletes, that the sandbox is
// gone). Timeouts, 5xx, conflicts and rate limits leave it closing, to be
// retried with capped backoff; they never count as closed.
//
// What is never done. A keep entry is never closed; an attached entry is
// never closed and is released when its session ends. An entry of a
// session is never closed while the session lives and its own expiry has
// not passed.
//
// # Caveats
//
// Store.Update may call its function more than once (group commit): code
// inside it must only read and write the transaction and set its own
// results. Logs, metrics and notifications happen after Update returns.
//
// A ledger record that cannot be decoded (ErrCorrupt) is quarantined, not
// acted on: an entry's sandbox is left alone, since its tags cannot be
// read. A quarantined session counts as missing, which the policy treats
// as ended: its entries, whose own keep and attached tags are intact, are
// closed or released as for any ended session.
package reaper
