package engine

import (
	"context"
	"errors"
	"time"

	"github.com/reaperd/reaperd/reaper"
)

var errStop = errors.New("stop")

// Entry returns one entry.
func (e *Engine) Entry(ctx context.Context, key string) (*reaper.Entry, error) {
	e.init()
	if _, _, err := reaper.ParseKey(key); err != nil {
		return nil, err
	}
	var out *reaper.Entry
	err := e.view(ctx, func(tx reaper.Tx) error {
		var err error
		out, err = tx.Entry(key)
		return err
	})
	if err == nil && out == nil {
		return nil, reaper.Errorf(reaper.ENOTFOUND, "%s is not registered", key)
	}
	return out, err
}

// Entries returns the entries matching f, at most limit of them (zero: no
// limit), in key order.
func (e *Engine) Entries(ctx context.Context, f reaper.EntryFilter, limit int) ([]*reaper.Entry, error) {
	e.init()
	if f.Provider != "" {
		if err := reaper.ValidateProviderName(f.Provider); err != nil {
			return nil, err
		}
	}
	if f.Session != "" {
		if err := reaper.ValidateID("session", f.Session); err != nil {
			return nil, err
		}
	}
	for _, s := range f.States {
		if !s.Valid() {
			return nil, reaper.Errorf(reaper.EINVALID, "state %q is invalid: use active, closing, closed or released", s)
		}
	}
	if f.After != "" {
		if _, _, err := reaper.ParseKey(f.After); err != nil {
			return nil, reaper.Errorf(reaper.EINVALID, "after %q: not an entry key: %s", f.After, reaper.ErrorMessage(err))
		}
	}
	var out []*reaper.Entry
	err := e.view(ctx, func(tx reaper.Tx) error {
		out = []*reaper.Entry{}
		return tx.Entries(f, func(ent *reaper.Entry) error {
			out = append(out, ent)
			if limit > 0 && len(out) >= limit {
				return errStop
			}
			return nil
		})
	})
	if errors.Is(err, errStop) {
		err = nil
	}
	return out, err
}

// Session returns one session.
func (e *Engine) Session(ctx context.Context, id string) (*reaper.Session, error) {
	e.init()
	if err := reaper.ValidateID("session", id); err != nil {
		return nil, err
	}
	var out *reaper.Session
	err := e.view(ctx, func(tx reaper.Tx) error {
		var err error
		out, err = tx.Session(id)
		return err
	})
	if err == nil && out == nil {
		return nil, reaper.Errorf(reaper.ENOTFOUND, "session %s is not known", id)
	}
	return out, err
}

// Sessions returns the sessions in id order; only live ones when liveOnly
// is set.
func (e *Engine) Sessions(ctx context.Context, liveOnly bool) ([]*reaper.Session, error) {
	e.init()
	var out []*reaper.Session
	err := e.view(ctx, func(tx reaper.Tx) error {
		out = []*reaper.Session{}
		return tx.Sessions(func(s *reaper.Session) error {
			if !liveOnly || !s.Ended() {
				out = append(out, s)
			}
			return nil
		})
	})
	return out, err
}

// Audit returns audit events at or after since, oldest first, at most
// limit (zero: no limit; the newest are kept).
func (e *Engine) Audit(ctx context.Context, since time.Time, limit int) ([]reaper.AuditEvent, error) {
	e.init()
	out := []reaper.AuditEvent{}
	err := e.view(ctx, func(tx reaper.Tx) error {
		out = out[:0]
		return tx.Audit(since, func(ev reaper.AuditEvent) error {
			out = append(out, ev)
			if limit > 0 && len(out) > 2*limit {
				out = append(out[:0], out[len(out)-limit:]...)
			}
			return nil
		})
	})
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out, err
}

// errPageFull stops a page's read once it holds one event more than asked.
var errPageFull = errors.New("page full")

// upcomingShown is how many of the next deadlines Status names.
const upcomingShown = 10

// AuditPage returns up to limit events after cursor (at or after since
// when cursor is empty), oldest first, and the next page's cursor. Each
// page is one short read transaction, so a slow reader holds nothing.
func (e *Engine) AuditPage(ctx context.Context, since time.Time, cursor string, limit int) ([]reaper.AuditEvent, string, error) {
	e.init()
	if limit <= 0 {
		return nil, "", reaper.Errorf(reaper.EINVALID, "limit %d: a page holds at least one event", limit)
	}
	var out []reaper.AuditEvent
	var next string
	err := e.view(ctx, func(tx reaper.Tx) error {
		out, next = out[:0], ""
		var last string
		err := tx.AuditAfter(cursor, since, func(c string, ev reaper.AuditEvent) error {
			if len(out) == limit {
				next = last
				return errPageFull
			}
			out, last = append(out, ev), c
			return nil
		})
		if errors.Is(err, errPageFull) {
			return nil
		}
		return err
	})
	return out, next, err
}

// maxQuarantinedKeys is how many quarantined records Status names.
const maxQuarantinedKeys = 10

// Status reports the engine's state: each provider's queue and health, the
// next deadline, why the ledger cannot be written (while it cannot), and
// the quarantined records.
func (e *Engine) Status(ctx context.Context) (*reaper.EngineStatus, error) {
	e.init()
	st := &reaper.EngineStatus{Providers: map[string]reaper.ProviderStatus{}}
	for _, name := range e.providers.enabledNames() {
		ps := reaper.ProviderStatus{Enabled: true}
		if q := e.providers.queue(name); q != nil {
			qs := q.status()
			ps.Queued, ps.Running, ps.LastError = qs.Queued, qs.Running, qs.LastError
			if qs.PausedUntil.After(e.clock.Now()) {
				ps.PausedUntil = qs.PausedUntil
			}
			// One read, so that the state, the error and the hint agree.
			q.mu.Lock()
			ps.Credentials, ps.LastOK = q.credentials, q.lastOK
			credErr := q.credErr
			q.mu.Unlock()
			if credErr != "" && ps.LastError == "" {
				ps.LastError = credErr
			}
			if ps.Credentials == credRefused {
				ps.Enabled = false
				ps.Hint = "its credentials were refused (" + credErr + "): fix them and reload reaperd"
			}
		}
		st.Providers[name] = ps
	}
	for name, hint := range e.providers.disabledHints() {
		st.Providers[name] = reaper.ProviderStatus{Hint: hint}
	}
	if h, ok := e.Store.(interface{ WriteError() error }); ok {
		if err := h.WriteError(); err != nil {
			st.LedgerError = reaper.ErrorMessage(err)
		}
	}
	if st.LedgerError == "" {
		e.mu.Lock()
		if err := e.lastPassErr; err != nil {
			st.LedgerError = reaper.ErrorMessage(err)
		}
		e.mu.Unlock()
	}
	err := e.view(ctx, func(tx reaper.Tx) error {
		st.Quarantined, st.QuarantinedKeys = 0, nil
		var err error
		if st.NextDeadline, err = tx.NextDeadline(); err != nil {
			return err
		}
		next, err := tx.Due(time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC), upcomingShown)
		if err != nil {
			return err
		}
		st.Upcoming = st.Upcoming[:0]
		for _, it := range next {
			st.Upcoming = append(st.Upcoming, reaper.Deadline{At: it.At, Kind: it.Kind.String(), Key: it.Key})
		}
		confirming, unverified, stuck := map[string]int{}, map[string]int{}, map[string]int{}
		oldest := map[string]time.Time{}
		if err := tx.Closing("", func(ent *reaper.Entry) error {
			if !ent.NotFoundAt.IsZero() || !ent.AcceptedAt.IsZero() {
				confirming[ent.Provider]++
			}
			if ent.Stuck {
				stuck[ent.Provider]++
			}
			if o := oldest[ent.Provider]; o.IsZero() || ent.ClosingSince.Before(o) {
				oldest[ent.Provider] = ent.ClosingSince
			}
			return nil
		}); err != nil {
			return err
		}
		if err := tx.Unverified(func(provider string, n int) error {
			unverified[provider] = n
			return nil
		}); err != nil {
			return err
		}
		for name, ps := range st.Providers {
			ps.Confirming, ps.Unverified, ps.Stuck, ps.OldestClosing = confirming[name], unverified[name], stuck[name], oldest[name]
			st.Providers[name] = ps
		}
		return tx.Quarantined(func(q reaper.QuarantinedRecord) error {
			st.Quarantined++
			name := q.Key
			if q.Kind == reaper.DueSession {
				name = "session " + q.Key
			}
			st.QuarantinedKeys = append(st.QuarantinedKeys, name)
			if len(st.QuarantinedKeys) > maxQuarantinedKeys {
				st.QuarantinedKeys = st.QuarantinedKeys[1:]
			}
			return nil
		})
	})
	return st, err
}

// Health returns nil while the engine can use its ledger, and otherwise
// the reason it cannot (an EUNAVAILABLE error): /healthz answers 503 with
// it.
func (e *Engine) Health() error {
	e.init()
	if h, ok := e.Store.(interface{ WriteError() error }); ok {
		if err := h.WriteError(); err != nil {
			return err
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.lastPassErr
}
