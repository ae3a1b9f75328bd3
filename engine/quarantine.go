package engine

import (
	"context"
	"errors"

	"github.com/reaperd/reaperd/reaper"
)

// maxQuarantines bounds how many corrupt records one operation moves aside
// before it gives up and returns the error.
const maxQuarantines = 64

// update runs fn in Store.Update. When fn meets a record that cannot be
// decoded, the record is quarantined and fn is run again, so that one
// corrupt record never stops the rest of the ledger from being served or
// reaped.
func (e *Engine) update(ctx context.Context, fn func(reaper.Tx) error) error {
	for n := 0; ; n++ {
		err := e.Store.Update(ctx, fn)
		var ce *reaper.CorruptError
		if err == nil || n >= maxQuarantines || !errors.As(err, &ce) {
			return err
		}
		if qerr := e.quarantine(ctx, ce); qerr != nil {
			return err
		}
	}
}

// view runs fn in Store.View, quarantining corrupt records as update does.
func (e *Engine) view(ctx context.Context, fn func(reaper.Tx) error) error {
	for n := 0; ; n++ {
		err := e.Store.View(ctx, fn)
		var ce *reaper.CorruptError
		if err == nil || n >= maxQuarantines || !errors.As(err, &ce) {
			return err
		}
		if qerr := e.quarantine(ctx, ce); qerr != nil {
			return err
		}
	}
}

// quarantine moves a corrupt record aside, records it in the audit log and
// reports it. The sandbox it named is left alone: without the record, its
// keep and attached tags cannot be read.
func (e *Engine) quarantine(ctx context.Context, ce *reaper.CorruptError) error {
	now := e.now()
	ev := reaper.AuditEvent{Time: now, Kind: reaper.EventQuarantined, Error: ce.Err.Error(),
		Detail: "undecodable ledger record moved aside; its sandbox is left alone"}
	if ce.Kind == reaper.DueSession {
		ev.Session = ce.Key
	} else {
		ev.Key = ce.Key
	}
	err := e.Store.Update(ctx, func(tx reaper.Tx) error {
		if err := tx.Quarantine(ce.Kind, ce.Key, ce.Err.Error(), now); err != nil {
			return err
		}
		return tx.Append(ev)
	})
	if err != nil {
		e.logger().Error("quarantine a corrupt ledger record", LogKey, ce.Key, LogErr, err)
		return err
	}
	e.quarantinedSinceOpen.Add(1)
	if m := e.Metrics; m != nil {
		m.Quarantined.Inc()
	}
	what := "entry"
	if ce.Kind == reaper.DueSession {
		what = "session"
	}
	e.logger().Error("quarantined a ledger record that cannot be decoded; it is no longer acted on: see `reaperd status`",
		"record", what, LogKey, ce.Key, LogErr, ce.Err)
	return nil
}
