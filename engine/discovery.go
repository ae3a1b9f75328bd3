package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/reaperd/reaperd/reaper"
)

// Discovery at scale. A provider's listing is applied page by page as it
// arrives (reaper.PageLister), so that a discovery of 100,000 live
// sandboxes never holds them all: each page is applied in its own ledger
// transaction, taken after the page arrived (never across a provider
// call), and then dropped. Between pages a discovery keeps only what the
// decisions taken at its end need: the ids of the listed sandboxes that
// live entries track, and the provider's untracked records, each with
// whether this listing showed it.
//
// What a page shows is a fact, applied at once: a registration the
// listing shows is verified (Seen), a tracked sandbox's run state and size
// are recorded, an untracked one is recorded with when it was first seen
// and matched against the adoption rules, a sandbox listed again ends an
// absence noted earlier. What a page does not show proves nothing until
// the whole listing has arrived: a not-found confirmed, an accepted delete
// confirmed, an entry closed as gone, an untracked sandbox forgotten, a
// registration marked unverified are all decided after the last page, and
// only when the listing went through to its end without error. A listing
// that fails on its seventh page leads to no decision from absence at all.
const (
	// settleChunk bounds the entries decided, and the records forgotten,
	// in one ledger transaction after a listing.
	settleChunk = 1000
	// sweepUntracked bounds the untracked sandboxes a sweep's report
	// lists (adopted ones first); it counts them all. A discovery asked
	// for (reaperd discover) lists every one.
	sweepUntracked = 1000
)

// errNeedsWrite ends the read-only pass over a page that has something to
// record: the page is then applied in a write transaction.
var errNeedsWrite = errors.New("the page has something to record")

// errNoProvider is listProvider's answer for a provider disabled meanwhile.
var errNoProvider = errors.New("provider disabled")

// listPages lists the provider's live sandboxes page by page, calling fn
// with each page: through reaper.PageLister where the provider implements
// it, else as one page holding List's whole answer. It returns nil only
// when the listing went through to its end and fn accepted every page:
// only then may a caller conclude anything from a sandbox's absence. A
// provider that goes on after fn refused a page, or calls fn after it
// returned, gets fn's refusal and an error; a panic is a transient error.
func listPages(ctx context.Context, p reaper.Provider, name string, fn func([]reaper.Sandbox) error) (err error) {
	var (
		fnErr    error
		returned atomic.Bool
	)
	guarded := func(page []reaper.Sandbox) error {
		switch {
		case returned.Load():
			return errors.New("list sandboxes: a page came after the listing returned")
		case fnErr != nil:
			return fnErr
		}
		fnErr = fn(page)
		return fnErr
	}
	defer func() {
		returned.Store(true)
		if r := recover(); r != nil {
			err = &reaper.ProviderError{Provider: name, Op: "list", Kind: reaper.ErrTransient, Err: fmt.Errorf("provider panicked: %v", r)}
		}
		if err == nil && fnErr != nil {
			err = fnErr
		}
	}()
	if pl, ok := p.(reaper.PageLister); ok {
		return pl.ListPages(ctx, reaper.ListFilter{}, guarded)
	}
	sbs, err := p.List(ctx, reaper.ListFilter{})
	if err != nil {
		return err
	}
	return guarded(sbs)
}

// listProvider lists the named provider page by page (listPages), bounded
// by ListTimeout, holding the provider only while it lists. A stop ends the
// listing too: its calls hold the provider that a stop shuts down. It
// returns errNoProvider when the provider is no longer enabled.
func (e *Engine) listProvider(ctx context.Context, name string, fn func([]reaper.Sandbox) error) error {
	p, release := e.providers.acquire(name)
	defer release()
	if p == nil {
		return errNoProvider
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopListing := context.AfterFunc(e.workCtx, cancel)
	defer stopListing()
	lctx, cancelList := withTimeout(ctx, e.clock, e.listTimeout())
	defer cancelList()
	return listPages(lctx, p.Provider, name, fn)
}

// discovered is what one provider's discovery found.
type discovered struct {
	name string
	// shown are the untracked sandboxes kept for the report: all of them,
	// or, with a limit, up to it adopted ones and up to it others.
	shown, shownAdopted []reaper.Untracked
	total, adopted      int
	err                 error
}

// discover lists every enabled provider at once, each page by page, and
// reconciles the ledger with what they hold, both ways:
//
//   - the listing decides not-founds and accepted deletes and verifies
//     registrations (observe.go), and an active entry whose sandbox two
//     listings no longer show, after one did, is closed with reason gone
//     (reconcile);
//   - a live sandbox no entry tracks is untracked: recorded with the time
//     it was first seen (audit discovered-untracked the first time),
//     matched against the adoption rules, and, when adoptNow, adopted if a
//     reap rule matches and it is old enough (adopt.go); a recorded one the
//     listing no longer shows is forgotten (audit untracked-gone).
//
// Sandboxes created after the sweep started are left for the next one,
// since their registration may be on its way. It returns the untracked
// sandboxes found (with limit > 0, at most limit of them, adopted ones
// first), how many there were, and why a provider could not be listed.
func (e *Engine) discover(ctx context.Context, now time.Time, adoptNow bool, limit int) ([]reaper.Untracked, int, map[string]string) {
	names := e.providers.enabledNames()
	results := make([]discovered, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		results[i] = discovered{name: name, err: errors.New("discovery panicked")}
		wg.Go(func() {
			e.safely("discovery of "+name, func() { results[i] = e.discoverProvider(ctx, name, now, adoptNow, limit) })
		})
	}
	wg.Wait()
	var adopted, others []reaper.Untracked
	total, nAdopted := 0, 0
	errs := map[string]string{}
	for _, r := range results {
		if r.err != nil {
			errs[r.name] = r.err.Error()
		}
		total += r.total
		nAdopted += r.adopted
		adopted = append(adopted, r.shownAdopted...)
		others = append(others, r.shown...)
	}
	if nAdopted > 0 {
		e.Wake()
	}
	out := append(adopted, others...)
	if limit > 0 && len(out) > limit {
		out = out[:limit:limit]
	}
	if len(errs) == 0 {
		errs = nil
	}
	return out, total, errs
}

// discoverProvider is discover for one provider.
func (e *Engine) discoverProvider(ctx context.Context, name string, now time.Time, adoptNow bool, limit int) discovered {
	s, err := e.newScan(ctx, name, now, adoptNow, limit)
	if err != nil {
		e.logger().Error("discovery: read untracked sandboxes", LogProvider, name, LogErr, err)
		return discovered{name: name, err: err}
	}
	started := e.clock.Now()
	err = e.listProvider(ctx, name, s.page)
	s.report()
	res := discovered{name: name, shown: s.shown, shownAdopted: s.shownAdopted, total: s.total, adopted: s.adopted}
	if err != nil {
		if errors.Is(err, errNoProvider) {
			err = fmt.Errorf("provider %s was disabled", name)
		}
		// Nothing is concluded from what the pages read so far did not
		// show: the listing is incomplete.
		var pe *pageError
		if errors.As(err, &pe) {
			e.logger().Error("discovery: stopped the listing", LogProvider, name, LogPages, s.pages, LogErr, err)
		} else {
			e.logger().Warn("discovery: list sandboxes", LogProvider, name, LogPages, s.pages, LogErr, err)
			if m := e.Metrics; m != nil {
				m.ListErrors.WithLabelValues(name, "discovery").Inc()
			}
		}
		res.err = err
		return res
	}
	if m := e.Metrics; m != nil {
		m.LastListing.WithLabelValues(name).Set(float64(e.clock.Now().UnixNano()) / 1e9)
	}
	// The listing is complete: absences count now.
	listed := func(id string) bool { _, ok := s.live[id]; return ok }
	if err := e.settleAfter(ctx, name, listed, started); err != nil {
		e.logger().Error("apply a discovery listing", LogProvider, name, LogErr, err)
	}
	if err := e.reconcile(ctx, name, listed, started); err != nil {
		e.logger().Error("reconcile the ledger with a listing", LogProvider, name, LogErr, err)
	}
	if err := s.forgetUnlisted(ctx); err != nil {
		res.err = fmt.Errorf("record untracked sandboxes of %s: %w", name, err)
		return res
	}
	s.countUntracked()
	return res
}

// scan is one provider's discovery listing, applied page by page.
type scan struct {
	e        *Engine
	ctx      context.Context // for the ledger
	provider string
	now      time.Time // the sweep's start: sandboxes created later wait
	adoptNow bool
	ad       *Adoption
	uid      uint32
	limit    int

	// live holds the ids of the listed sandboxes that a live (active or
	// closing) entry tracks: absent from it after a complete listing, an
	// entry's sandbox was not listed.
	live map[string]struct{}
	// records are the provider's untracked records, read before the
	// listing, and those it added.
	records map[string]untrackedRecord
	pages   int

	total, untracked, adopted int
	matches                   map[[2]string]int
	adoptedBy                 map[string]int // rule -> adoptions
	shown, shownAdopted       []reaper.Untracked
	fresh, adoptedKeys        keySample
}

// untrackedRecord is an untracked record, with whether this listing showed
// its sandbox untracked and did not adopt it (then the record stays).
type untrackedRecord struct {
	firstSeen int64 // Unix nanoseconds
	listed    bool
}

// newScan reads the provider's untracked records, for a listing to be
// applied page by page.
func (e *Engine) newScan(ctx context.Context, provider string, now time.Time, adoptNow bool, limit int) (*scan, error) {
	s := &scan{e: e, ctx: ctx, provider: provider, now: now, adoptNow: adoptNow, ad: e.adoption(), uid: uint32(os.Getuid()), limit: limit,
		live: map[string]struct{}{}, matches: map[[2]string]int{}, adoptedBy: map[string]int{}}
	err := e.view(ctx, func(tx reaper.Tx) error {
		s.records = map[string]untrackedRecord{}
		return tx.Untracked(provider, func(id string, t time.Time) error {
			s.records[id] = untrackedRecord{firstSeen: t.UnixNano()}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read untracked sandboxes of %s: %w", provider, err)
	}
	return s, nil
}

// pageResult is what applying one page did, merged into the scan once its
// transaction is committed.
type pageResult struct {
	live, present           []string // ids of live entries' sandboxes, their keys
	fresh, kept, adoptedIDs []string // untracked ids: recorded now, recorded before, adopted
	found                   []reaper.Untracked
	matches                 map[[2]string]int
}

// page applies one page of the listing: in a read-only transaction when
// it has nothing to record (the usual case once a fleet is known), else
// in one write transaction for the page.
func (s *scan) page(page []reaper.Sandbox) error {
	s.pages++
	ctx := s.ctx
	var r pageResult
	at := s.e.now()
	err := s.e.view(ctx, func(tx reaper.Tx) error { return s.apply(tx, page, at, false, &r) })
	if errors.Is(err, errNeedsWrite) {
		err = s.e.update(ctx, func(tx reaper.Tx) error { return s.apply(tx, page, at, true, &r) })
	}
	if err != nil {
		return &pageError{fmt.Errorf("apply page %d of the listing of %s: %w", s.pages, s.provider, err)}
	}
	s.merge(&r)
	return nil
}

// pageError is a page the engine could not apply (the ledger failed): the
// listing stops there, incomplete, but the provider did not fail.
type pageError struct{ err error }

func (e *pageError) Error() string { return e.err.Error() }
func (e *pageError) Unwrap() error { return e.err }

// apply applies a page in tx; with write false it returns errNeedsWrite
// at the first thing to record. It sets r afresh on each call (a write
// transaction may run it twice) and changes nothing outside tx and r.
func (s *scan) apply(tx reaper.Tx, page []reaper.Sandbox, at time.Time, write bool, r *pageResult) error {
	*r = pageResult{matches: map[[2]string]int{}}
	var inPage map[string]bool // untracked ids of this page, against repeats
	for i := range page {
		sb := &page[i]
		if sb.ID == "" {
			continue
		}
		key := s.provider + "/" + sb.ID
		ent, err := tx.Entry(key)
		if err != nil {
			return err
		}
		if ent != nil && !ent.State.Final() {
			r.live = append(r.live, sb.ID)
			r.present = append(r.present, key)
			if !ent.Seen {
				if !write {
					return errNeedsWrite
				}
				ent.Seen, ent.Unverified = true, false
				if err := tx.SetVerification(ent, true, false); err != nil {
					return err
				}
			}
			if ent.State == reaper.StateActive && billingChanged(ent, sb) {
				if !write {
					return errNeedsWrite
				}
				if err := recordBilling(tx, ent, sb, at); err != nil {
					return err
				}
			}
			continue
		}
		if ent != nil && ent.State != reaper.StateClosed {
			continue // tracked (released ones included: their session let them go)
		}
		if !sb.CreatedAt.IsZero() && sb.CreatedAt.After(s.now) {
			continue // created after the sweep started: its registration may be on its way
		}
		rec, recorded := s.records[sb.ID]
		if rec.listed || inPage[sb.ID] {
			continue // given twice
		}
		if inPage == nil {
			inPage = map[string]bool{}
		}
		inPage[sb.ID] = true
		fs := s.now
		if recorded {
			fs = time.Unix(0, rec.firstSeen).UTC()
		} else {
			if !write {
				return errNeedsWrite
			}
			if err := recordUntracked(tx, s.provider, key, sb, s.now); err != nil {
				return err
			}
			r.fresh = append(r.fresh, sb.ID)
		}
		u := reaper.Untracked{Provider: s.provider, Sandbox: *sb, FirstSeen: fs}
		reap := s.ad.assess(&u, s.now)
		if u.Rule != "" {
			r.matches[[2]string{u.Rule, string(u.Action)}]++
		}
		switch {
		case ent != nil:
			u.Note = "its entry is closed, yet the provider lists it: check it by hand"
		case reap && reaper.ValidateID("sandbox id", sb.ID) != nil:
			u.Note = "its id is not one reaperd can track"
		case reap && !s.adoptNow:
			u.Note = "to be adopted and closed by the next sweep"
		case reap:
			if !write {
				return errNeedsWrite
			}
			if err := adopt(tx, s.provider, &u, s.uid, s.now, s.ad); err != nil {
				return err
			}
			r.adoptedIDs = append(r.adoptedIDs, sb.ID)
			r.live = append(r.live, sb.ID) // tracked from now on
		}
		if !u.Adopted && recorded {
			r.kept = append(r.kept, sb.ID)
		}
		r.found = append(r.found, u)
	}
	return nil
}

// recordUntracked records a sandbox seen untracked for the first time: in
// the ledger, with when it was first seen, and in the audit log.
func recordUntracked(tx reaper.Tx, provider, key string, sb *reaper.Sandbox, now time.Time) error {
	if err := tx.PutUntracked(provider, sb.ID, now); err != nil {
		return err
	}
	detail := "state " + orNone(sb.State)
	if !sb.CreatedAt.IsZero() {
		detail += ", created " + fmtTime(sb.CreatedAt)
	}
	ev := reaper.AuditEvent{Time: now, Kind: reaper.EventDiscovered, Key: key, Detail: detail,
		Resources: sb.Resources, RunState: reaper.RunStateOf(sb.State)}
	if reaper.ValidateLabels(sb.Labels) == nil {
		ev.Labels = sb.Labels
	}
	return tx.Append(ev)
}

// merge takes in a page's committed result.
func (s *scan) merge(r *pageResult) {
	for _, id := range r.live {
		s.live[id] = struct{}{}
	}
	if q := s.e.providers.queue(s.provider); q != nil && len(r.present) > 0 {
		// Listed again: an absence noted earlier starts over.
		q.mu.Lock()
		for _, k := range r.present {
			delete(q.absent, k)
		}
		q.mu.Unlock()
	}
	for _, id := range r.fresh {
		s.records[id] = untrackedRecord{firstSeen: s.now.UnixNano(), listed: true}
		s.fresh.add(s.provider + "/" + id)
	}
	for _, id := range r.kept {
		rec := s.records[id]
		rec.listed = true
		s.records[id] = rec
	}
	for _, id := range r.adoptedIDs {
		delete(s.records, id) // adopt deleted the record
		s.adoptedKeys.add(s.provider + "/" + id)
	}
	for k, n := range r.matches {
		s.matches[k] += n
	}
	for _, u := range r.found {
		s.total++
		if u.Adopted {
			s.adopted++
			s.adoptedBy[u.Rule]++
		} else {
			s.untracked++
		}
		switch {
		case s.limit <= 0:
			s.shown = append(s.shown, u)
		case u.Adopted && len(s.shownAdopted) < s.limit:
			s.shownAdopted = append(s.shownAdopted, u)
		case !u.Adopted && len(s.shown) < s.limit:
			s.shown = append(s.shown, u)
		}
	}
}

// report logs what the pages applied so far found and adopted, and counts
// the adoptions: they stand whether or not the listing went on to its end.
func (s *scan) report() {
	log := s.e.logger().With(LogProvider, s.provider)
	if s.fresh.n > 0 {
		log.Warn("found sandboxes nobody registered", LogCount, s.fresh.n, "keys", s.fresh.String())
	}
	if s.adoptedKeys.n > 0 {
		log.Warn("adopted untracked sandboxes: they are closed like expired entries", LogCount, s.adoptedKeys.n, "keys", s.adoptedKeys.String())
	}
	if m := s.e.Metrics; m != nil {
		for rule, n := range s.adoptedBy {
			m.Adopted.WithLabelValues(s.provider, rule).Add(float64(n))
		}
	}
}

// countUntracked sets the gauges of untracked sandboxes and adoption
// matches, after a complete listing.
func (s *scan) countUntracked() {
	m := s.e.Metrics
	if m == nil {
		return
	}
	m.Untracked.WithLabelValues(s.provider).Set(float64(s.untracked))
	m.AdoptionMatches.DeletePartialMatch(map[string]string{"provider": s.provider})
	for k, n := range s.matches {
		m.AdoptionMatches.WithLabelValues(s.provider, k[0], k[1]).Set(float64(n))
	}
}

// forgetUnlisted deletes, after a complete listing, the untracked records
// it did not show untracked: the sandbox is gone (audit untracked-gone),
// or an entry tracks it now. In transactions of settleChunk records.
func (s *scan) forgetUnlisted(ctx context.Context) error {
	var ids []string
	for id, rec := range s.records {
		if !rec.listed {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	for chunk := range slices.Chunk(ids, settleChunk) {
		err := s.e.update(ctx, func(tx reaper.Tx) error {
			now := s.e.now()
			for _, id := range chunk {
				if err := forgetUntracked(tx, s.provider, id, now); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, id := range chunk {
			delete(s.records, id)
		}
	}
	return nil
}

// keySample counts keys and keeps the five smallest, for a log line.
type keySample struct {
	n    int
	keys []string
}

func (k *keySample) add(key string) {
	k.n++
	i, _ := slices.BinarySearch(k.keys, key)
	if i < 5 {
		k.keys = slices.Insert(k.keys, i, key)
		if len(k.keys) > 5 {
			k.keys = k.keys[:5]
		}
	}
}

func (k *keySample) String() string {
	s := strings.Join(k.keys, ", ")
	if more := k.n - len(k.keys); more > 0 {
		s += fmt.Sprintf(" and %d more", more)
	}
	return s
}

// forgetUntracked drops the record of an untracked sandbox the listing no
// longer shows and, unless an entry tracks it now, records it gone, so
// that the cost report stops counting it.
func forgetUntracked(tx reaper.Tx, provider, id string, now time.Time) error {
	if err := tx.DeleteUntracked(provider, id); err != nil {
		return err
	}
	key := provider + "/" + id
	ent, err := tx.Entry(key)
	if err != nil || (ent != nil && !ent.State.Final()) {
		return err
	}
	return tx.Append(reaper.AuditEvent{Time: now, Kind: reaper.EventUntrackedGone, Key: key,
		Detail: "the provider's listing no longer shows it"})
}
