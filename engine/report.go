package engine

import (
	"context"
	"errors"
	"time"

	"github.com/reaperd/reaperd/reaper"
	"github.com/reaperd/reaperd/report"
)

// SetPricing replaces the prices and saving rules that cost reports use.
// p must have passed reaper.Pricing.Validate.
func (e *Engine) SetPricing(p *reaper.Pricing) { e.pricing.Store(p) }

// Pricing returns the prices reports use (nil: none).
func (e *Engine) Pricing() *reaper.Pricing { return e.pricing.Load() }

var errWindowRead = errors.New("window read")

// AuditReport builds a cost report from the audit log, read in one read
// transaction from its oldest event to the window's end. Reading and
// decoding run on one goroutine and the report on another, in batches.
func (e *Engine) AuditReport(ctx context.Context, q reaper.ReportQuery) (*reaper.Report, error) {
	e.init()
	if err := q.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	const batch = 4096
	batches := make(chan []reaper.AuditEvent, 4)
	free := make(chan []reaper.AuditEvent, 6)
	b := report.New(q, e.pricing.Load())
	built := make(chan struct{})
	go func() {
		defer close(built)
		for evs := range batches {
			for i := range evs {
				b.Add(&evs[i])
			}
			select {
			case free <- evs[:0]:
			default:
			}
		}
	}()
	err := e.view(ctx, func(tx reaper.Tx) error {
		defer close(batches)
		evs := make([]reaper.AuditEvent, 0, batch)
		send := func() error {
			select {
			case batches <- evs:
			case <-ctx.Done():
				return ctx.Err()
			}
			select {
			case evs = <-free:
			default:
				evs = make([]reaper.AuditEvent, 0, batch)
			}
			return nil
		}
		err := tx.AuditScan(time.Unix(0, 0), func(ev reaper.AuditEvent) error {
			if b.Done(ev.Time) {
				return errWindowRead
			}
			evs = append(evs, ev)
			if len(evs) == batch {
				return send()
			}
			return nil
		})
		if err != nil && !errors.Is(err, errWindowRead) {
			return err
		}
		return send()
	})
	<-built
	if err != nil {
		return nil, err
	}
	return b.Report(), nil
}
