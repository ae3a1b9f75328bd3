package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/reaperd/reaperd/reaper"
)

// Listings are the engine's second signal. A provider's not-found alone is
// never proof that a sandbox is gone: providers answer it for sandboxes
// that exist when their access check fails, and to a key of another
// organisation. So:
//
//   - a close answered not-found marks the entry NotFoundAt, and asks for a
//     listing of its provider soon (batched: one listing confirms every
//     pending entry of the provider); a delete the provider accepted but
//     performs asynchronously (ErrAccepted) marks it AcceptedAt, and is
//     confirmed the same way, so that no close worker waits while the
//     provider works: absent from two listings taken after it, the
//     sandbox is gone; still listed, it is still being destroyed;
//   - a registration asks for a listing too, later and at most every
//     verifyGap: the listing shows whether reaperd's credentials see the
//     sandbox (Seen), or not (Unverified);
//   - the listings taken after a not-found decide it: absent from two of
//     them, and seen in an earlier listing, the sandbox is gone (closed);
//     still listed, the provider contradicted itself (the close is retried,
//     and that is recorded); absent but never seen, nothing can be proven
//     (unverified: the close is retried, never recorded closed on that
//     ground). Two listings, because a paginated listing can miss a
//     sandbox that changes state while it pages (a Runloop devbox moving
//     between the status filters, a resumed E2B sandbox overtaking the
//     cursor); one such miss would otherwise prove a live sandbox gone.
const (
	// confirmDelay batches the not-founds of one provider into one listing.
	confirmDelay = time.Second
	// verifyDelay and verifyGap pace the listings that verify registrations.
	verifyDelay = 2 * time.Second
	verifyGap   = 15 * time.Second
	// verifyGrace is how long after its registration a sandbox may still
	// be missing from a listing (the provider's listing may lag its create)
	// before it counts as unverified.
	verifyGrace = 5 * time.Second
	// confirmWait is the least time before a close answered not-found is
	// tried again: enough for the two listings that decide it.
	confirmWait = 10 * time.Second
	// acceptedDelay and acceptedWait are the same for a delete the
	// provider accepted and performs asynchronously: the first listing
	// after it waits a little for the provider to work, and the close is
	// tried again only if no listing has decided it meanwhile.
	acceptedDelay = 2 * time.Second
	acceptedWait  = 30 * time.Second
)

// wantListing asks the provider's observer for a listing at or after at,
// and never sooner than gap after the previous one.
func (e *Engine) wantListing(provider string, at time.Time, gap time.Duration) {
	q := e.providers.queue(provider)
	if q == nil {
		return
	}
	q.mu.Lock()
	if !q.lastList.IsZero() {
		at = maxTime(at, q.lastList.Add(gap))
	}
	if q.listAt.IsZero() || at.Before(q.listAt) {
		q.listAt = at
	}
	q.mu.Unlock()
	select {
	case q.listSignal <- struct{}{}:
	default:
	}
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// observer takes the listings its provider's queue asks for, one at a
// time, each bounded by ListTimeout, and applies them to the ledger.
func (e *Engine) observer(q *closeQueue) {
	defer e.workers.Done()
	t := e.clock.NewTimer(time.Hour)
	defer t.Stop()
	failures := 0
	for {
		q.mu.Lock()
		at := q.listAt
		q.mu.Unlock()
		if !at.IsZero() {
			resetAt(e.clock, t, at)
		} else {
			stopTimer(t)
		}
		select {
		case <-e.workCtx.Done():
			return
		case <-q.listSignal:
			continue
		case <-t.Chan():
		}
		now := e.clock.Now()
		q.mu.Lock()
		if q.listAt.IsZero() || now.Before(q.listAt) {
			q.mu.Unlock()
			continue
		}
		q.listAt, q.lastList = time.Time{}, now
		q.mu.Unlock()
		var err error
		e.safely("listing for confirmation", func() { err = e.listAndObserve(q.name, now) })
		if err == nil {
			failures = 0
			continue
		}
		failures++
		if m := e.Metrics; m != nil {
			m.ListErrors.WithLabelValues(q.name, "confirmation").Inc()
		}
		wait := ledgerBackoff(failures + 3) // from 800ms, doubling to 10s
		if isPowerOfTwo(failures) {
			e.logger().Warn("list sandboxes to confirm not-founds and verify registrations", LogProvider, q.name, LogErr, err, LogRetryIn, wait)
		}
		e.wantListing(q.name, now.Add(wait), 0)
	}
}

// listAndObserve lists the provider's sandboxes, page by page, and applies
// the listing to the entries waiting for one (see waiting), read before it
// starts: those that become waiting meanwhile (a registration, a
// not-found) could not be decided by it anyway, and ask for a listing of
// their own. Between pages it keeps only those entries, and whether the
// listing showed them; a page that shows a registration not seen yet
// records it seen. The decisions that need the sandbox's absence are taken
// once the last page arrived, and only if the listing completed.
func (e *Engine) listAndObserve(name string, started time.Time) error {
	ctx := e.workCtx
	waiting, err := e.waiting(ctx, name)
	if err != nil {
		return err
	}
	unverified, err := e.unverifiedCount(ctx, name)
	if err != nil {
		return err
	}
	err = e.listProvider(ctx, name, func(page []reaper.Sandbox) error {
		var unseen, others []string
		for i := range page {
			if w, ok := waiting[page[i].ID]; ok {
				if !w.listed {
					w.listed = true
					if w.unseen {
						unseen = append(unseen, w.key)
					}
				}
			} else if unverified > 0 {
				others = append(others, name+"/"+page[i].ID)
			}
		}
		// An unverified registration is not among the waiting (they would
		// be as many as a foreign key's registrations, walked at every
		// listing): one the page shows is looked up, and recorded seen.
		if len(others) > 0 {
			shown, err := e.unverifiedAmong(ctx, others)
			if err != nil {
				return err
			}
			unseen = append(unseen, shown...)
		}
		return e.markSeen(ctx, unseen)
	})
	if errors.Is(err, errNoProvider) {
		return nil
	}
	if err != nil {
		return err
	}
	if q := e.providers.queue(name); q != nil {
		q.noteOK(e.clock.Now())
	}
	keys := make([]string, 0, len(waiting))
	for _, w := range waiting {
		keys = append(keys, w.key)
	}
	sort.Strings(keys)
	return e.settle(ctx, name, keys, func(id string) bool {
		w := waiting[id]
		return w != nil && w.listed
	}, started)
}

// waitingEntry is an entry that waits for a listing, and whether the
// listing under way showed its sandbox.
type waitingEntry struct {
	key            string
	unseen, listed bool
}

// waiting returns the provider's entries that wait for a listing, by
// sandbox id: registrations no listing has judged yet (pending), and
// closing ones with a not-found or an accepted delete to confirm. The
// unverified registrations are left out: nothing changes for them until a
// listing shows them, which listAndObserve finds by looking up what it
// shows.
func (e *Engine) waiting(ctx context.Context, provider string) (map[string]*waitingEntry, error) {
	var out map[string]*waitingEntry
	err := e.view(ctx, func(tx reaper.Tx) error {
		out = map[string]*waitingEntry{}
		if err := tx.Pending(provider, func(ent *reaper.Entry) error {
			out[ent.ID] = &waitingEntry{key: ent.Key(), unseen: true}
			return nil
		}); err != nil {
			return err
		}
		return tx.Closing(provider, func(ent *reaper.Entry) error {
			if _, ok := out[ent.ID]; !ok && (!ent.NotFoundAt.IsZero() || !ent.AcceptedAt.IsZero()) {
				out[ent.ID] = &waitingEntry{key: ent.Key()}
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read the entries of %s waiting for a listing: %w", provider, err)
	}
	return out, nil
}

// unverifiedCount returns the number of the provider's unverified entries.
func (e *Engine) unverifiedCount(ctx context.Context, provider string) (int, error) {
	n := 0
	err := e.view(ctx, func(tx reaper.Tx) error {
		return tx.Unverified(func(p string, c int) error {
			if p == provider {
				n = c
			}
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("count the unverified entries of %s: %w", provider, err)
	}
	return n, nil
}

// unverifiedAmong returns those of keys that name an unverified entry.
func (e *Engine) unverifiedAmong(ctx context.Context, keys []string) ([]string, error) {
	var out []string
	err := e.view(ctx, func(tx reaper.Tx) error {
		out = out[:0]
		for _, key := range keys {
			ent, err := tx.Entry(key)
			if err != nil {
				return err
			}
			if ent != nil && !ent.State.Final() && !ent.Seen && ent.Unverified {
				out = append(out, key)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("look up listed sandboxes: %w", err)
	}
	return out, nil
}

// markSeen records that a listing showed the entries' sandboxes, for those
// not yet seen.
func (e *Engine) markSeen(ctx context.Context, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	err := e.update(ctx, func(tx reaper.Tx) error {
		for _, key := range keys {
			ent, err := tx.Entry(key)
			if err != nil {
				return err
			}
			if ent == nil || ent.State.Final() || ent.Seen {
				continue
			}
			if err := tx.SetVerification(ent, true, false); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record registrations seen: %w", err)
	}
	return nil
}

// observation is what applying one listing did.
type observation struct {
	closed, contradicted, unconfirmed []string
	reasons                           map[reaper.Reason]int // of the closed
	unverifiedNow                     int                   // entries left unverified
	unverified, verified              []string
	pending                           bool // entries still wait for a later listing
	partial                           bool // not every waiting entry was visited
}

// add merges o into ob.
func (ob *observation) add(o *observation) {
	ob.closed = append(ob.closed, o.closed...)
	ob.contradicted = append(ob.contradicted, o.contradicted...)
	ob.unconfirmed = append(ob.unconfirmed, o.unconfirmed...)
	ob.unverified = append(ob.unverified, o.unverified...)
	ob.verified = append(ob.verified, o.verified...)
	for r, n := range o.reasons {
		if ob.reasons == nil {
			ob.reasons = map[reaper.Reason]int{}
		}
		ob.reasons[r] += n
	}
	ob.unverifiedNow += o.unverifiedNow
	ob.pending = ob.pending || o.pending
}

// settleAfter applies a complete listing of the provider, started at
// listed, to the entries that wait for one, read now; listedNow says
// whether the listing showed a sandbox.
func (e *Engine) settleAfter(ctx context.Context, provider string, listedNow func(id string) bool, listed time.Time) error {
	waiting, err := e.waiting(ctx, provider)
	if err != nil {
		return err
	}
	keys := make([]string, 0, len(waiting))
	for _, w := range waiting {
		keys = append(keys, w.key)
	}
	sort.Strings(keys)
	return e.settle(ctx, provider, keys, listedNow, listed)
}

// settle applies a complete listing of the provider, started at listed, to
// the entries named by keys, in transactions of settleChunk entries: it
// decides the not-founds and accepted deletes reported before the listing
// started, and verifies the entries the listing shows or should show.
// listedNow says whether the listing showed a sandbox. The caller
// guarantees that the listing completed: an absence decides here.
func (e *Engine) settle(ctx context.Context, provider string, keys []string, listedNow func(id string) bool, listed time.Time) error {
	var ob observation
	for chunk := range slices.Chunk(keys, settleChunk) {
		var part observation
		err := e.update(ctx, func(tx reaper.Tx) error {
			part = observation{}
			now := e.now()
			for _, key := range chunk {
				ent, err := tx.Entry(key)
				if err != nil {
					return err
				}
				if ent == nil || ent.State.Final() {
					continue
				}
				if err := e.observeEntry(tx, provider, ent, listedNow(ent.ID), listed, now, &part); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			ob.partial = true
			e.reportObservation(provider, &ob) // what was committed stands
			return fmt.Errorf("apply a listing of %s: %w", provider, err)
		}
		ob.add(&part)
	}
	n, err := e.unverifiedCount(ctx, provider)
	if err != nil {
		ob.partial = true
	}
	ob.unverifiedNow = n
	e.reportObservation(provider, &ob)
	return nil
}

// observeEntry applies a listing to one entry.
func (e *Engine) observeEntry(tx reaper.Tx, provider string, ent *reaper.Entry, listedNow bool, listed, now time.Time, ob *observation) error {
	key := ent.Key()
	// Verification: recorded in the ledger's index, not by rewriting the
	// entry, so that it costs registrations little.
	switch {
	case listedNow && !ent.Seen:
		ent.Seen, ent.Unverified = true, false
		ob.verified = append(ob.verified, key)
		if err := tx.SetVerification(ent, true, false); err != nil {
			return err
		}
	case !listedNow && !ent.Seen && !ent.Unverified:
		if listed.Sub(ent.RegisteredAt) >= verifyGrace {
			ent.Unverified = true
			ob.unverified = append(ob.unverified, key)
			if err := tx.SetVerification(ent, false, true); err != nil {
				return err
			}
		} else {
			ob.pending = true
		}
	}
	// Confirmation of a not-found reported before this listing started.
	if ent.State == reaper.StateClosing && !ent.InFlight && !ent.NotFoundAt.IsZero() {
		if !listed.After(ent.NotFoundAt) {
			ob.pending = true // this listing may have begun before the answer
		} else {
			return e.confirm(tx, provider, ent, listedNow, listed, now, ob)
		}
		return nil
	}
	// Confirmation of a delete the provider accepted before this listing
	// started.
	if ent.State == reaper.StateClosing && !ent.InFlight && !ent.AcceptedAt.IsZero() {
		if !listed.After(ent.AcceptedAt) {
			ob.pending = true
			return nil
		}
		return e.confirmAccepted(tx, provider, ent, listedNow, listed, now, ob)
	}
	return nil
}

// confirmAccepted decides a delete the provider accepted, with a listing
// that started after it. Still listed, the provider is still destroying
// the sandbox: nothing to record, and the absences start over. Left out of
// two consecutive listings, the sandbox is gone. The acceptance shows that
// reaperd's credentials reach the sandbox, so, unlike a not-found, it needs
// no earlier sight of it.
func (e *Engine) confirmAccepted(tx reaper.Tx, provider string, ent *reaper.Entry, listedNow bool, listed, now time.Time, ob *observation) error {
	key := ent.Key()
	if listedNow {
		e.forgetAbsence(provider, key)
		ob.pending = true
		return nil
	}
	if !e.absentBefore(provider, key, listed) {
		ob.pending = true // the first listing without it: wait for a second
		return nil
	}
	e.forgetAbsence(provider, key)
	return closeConfirmed(tx, ent, now, ob,
		fmt.Sprintf("the provider accepted the delete (%s), and two listings of the provider since no longer show the sandbox", fmtTime(ent.AcceptedAt)))
}

// closeConfirmed records an entry closed once the provider's listings have
// confirmed a not-found or an accepted delete.
func closeConfirmed(tx reaper.Tx, ent *reaper.Entry, now time.Time, ob *observation, detail string) error {
	ent.NotFoundAt, ent.AcceptedAt = time.Time{}, time.Time{}
	ent.State, ent.ClosedAt, ent.NextAttemptAt = reaper.StateClosed, now, time.Time{}
	ent.LastError, ent.ErrorClass = "", ""
	ob.closed = append(ob.closed, ent.Key())
	if ob.reasons == nil {
		ob.reasons = map[reaper.Reason]int{}
	}
	ob.reasons[ent.CloseReason]++
	if err := tx.PutEntry(ent); err != nil {
		return err
	}
	return tx.Append(reaper.AuditEvent{Time: now, Kind: reaper.EventClosed, Key: ent.Key(), Session: ent.Session, Reason: ent.CloseReason,
		Detail: detail})
}

// confirm decides a not-found with a listing that started at listed, after
// it.
func (e *Engine) confirm(tx reaper.Tx, provider string, ent *reaper.Entry, listedNow bool, listed, now time.Time, ob *observation) error {
	key := ent.Key()
	if !listedNow && ent.Seen && !e.absentBefore(provider, key, listed) {
		// The first listing without the sandbox: wait for a second one.
		ob.pending = true
		return nil
	}
	e.forgetAbsence(provider, key)
	notFound := ent.NotFoundAt
	ent.NotFoundAt = time.Time{}
	switch {
	case !listedNow && ent.Seen:
		return closeConfirmed(tx, ent, now, ob,
			fmt.Sprintf("attempt %d answered not found (%s), and two listings of the provider since no longer show the sandbox", ent.Attempts, fmtTime(notFound)))
	case listedNow:
		ent.LastError = "the provider answered not found, but its listing still shows the sandbox: its answer is not trusted; the close is retried"
		ent.ErrorClass = "contradicted"
		ob.contradicted = append(ob.contradicted, key)
		if err := tx.PutEntry(ent); err != nil {
			return err
		}
		return tx.Append(reaper.AuditEvent{Time: now, Kind: reaper.EventContradicted, Key: key, Session: ent.Session,
			Reason: ent.CloseReason, ErrorClass: ent.ErrorClass, Detail: ent.LastError})
	default:
		ent.Unverified = true
		ent.LastError = "the provider answered not found, and reaperd's credentials have never seen the sandbox in its listing: nothing proves it gone (a key of another organisation?); the close is retried"
		ent.ErrorClass = "unverified"
		ob.unconfirmed = append(ob.unconfirmed, key)
		if err := tx.PutEntry(ent); err != nil {
			return err
		}
		return tx.Append(reaper.AuditEvent{Time: now, Kind: reaper.EventCloseFailed, Key: key, Session: ent.Session,
			Reason: ent.CloseReason, ErrorClass: ent.ErrorClass, Detail: ent.LastError})
	}
}

// absentBefore reports whether a listing that started before listed already
// left out the sandbox key after its not-found. If not, it notes that the
// listing that started at listed left it out. Idempotent, so a rerun of the
// transaction that calls it changes nothing.
func (e *Engine) absentBefore(provider, key string, listed time.Time) bool {
	q := e.providers.queue(provider)
	if q == nil {
		return false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if first, ok := q.absent[key]; ok && first.Before(listed) {
		return true
	}
	if q.absent == nil {
		q.absent = map[string]time.Time{}
	}
	if _, ok := q.absent[key]; !ok {
		// Forget what no listing came back for (entries released or
		// ended meanwhile): they would only need one listing more. Once
		// per listing, not per entry it leaves out.
		if !q.absentSwept.Equal(listed) {
			q.absentSwept = listed
			for k, t := range q.absent {
				if listed.Sub(t) > time.Hour {
					delete(q.absent, k)
				}
			}
		}
		q.absent[key] = listed
	}
	return false
}

// forgetAbsence drops what absentBefore noted for key.
func (e *Engine) forgetAbsence(provider, key string) {
	if q := e.providers.queue(provider); q != nil {
		q.mu.Lock()
		delete(q.absent, key)
		q.mu.Unlock()
	}
}

// reportObservation logs and counts what a listing decided.
func (e *Engine) reportObservation(provider string, ob *observation) {
	log := e.logger().With(LogProvider, provider)
	if n := len(ob.closed); n > 0 {
		log.Info("sandboxes closed: their delete accepted or answered not found, and gone from the provider's listing", LogCount, n, "keys", sample(ob.closed))
	}
	if n := len(ob.contradicted); n > 0 {
		log.Warn("the provider contradicted itself: it answered not found, but its listing still shows these sandboxes; the closes are retried",
			LogCount, n, "keys", sample(ob.contradicted))
	}
	if n := len(ob.unconfirmed); n > 0 {
		log.Warn("not found, but never seen in the provider's listing: cannot prove these sandboxes gone (check that the credentials belong to their organisation); the closes are retried",
			LogCount, n, "keys", sample(ob.unconfirmed))
	}
	if n := len(ob.unverified); n > 0 {
		log.Warn("registered sandboxes not visible to reaperd's credentials at the provider (a key of another organisation?); they are never closed on a not-found alone",
			LogCount, n, "keys", sample(ob.unverified))
	}
	if m := e.Metrics; m != nil {
		m.Contradictions.WithLabelValues(provider).Add(float64(len(ob.contradicted)))
		if !ob.partial {
			m.Unverified.WithLabelValues(provider).Set(float64(ob.unverifiedNow))
		}
		for reason, n := range ob.reasons {
			m.Closed.WithLabelValues(provider, string(reason)).Add(float64(n))
		}
	}
	if len(ob.contradicted)+len(ob.unconfirmed) > 0 {
		e.Wake()
	}
	if ob.pending {
		e.wantListing(provider, e.clock.Now().Add(confirmDelay), confirmDelay)
	}
}

// sample names up to five keys, for a log line.
func sample(keys []string) string {
	sort.Strings(keys)
	if len(keys) > 5 {
		return strings.Join(keys[:5], ", ") + fmt.Sprintf(" and %d more", len(keys)-5)
	}
	return strings.Join(keys, ", ")
}
