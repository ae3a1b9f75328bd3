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
// transaction from its oldest event to the window's end.
func (e *Engine) AuditReport(ctx context.Context, q reaper.ReportQuery) (*reaper.Report, error) {
	e.init()
	if err := q.Validate(); err != nil {
		return nil, err
	}
	var r *reaper.Report
	err := e.view(ctx, func(tx reaper.Tx) error {
		b := report.New(q, e.pricing.Load())
		n := 0
		err := tx.Audit(time.Unix(0, 0), func(ev reaper.AuditEvent) error {
			if b.Done(ev.Time) {
				return errWindowRead
			}
			if n++; n&0xffff == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			b.Add(&ev)
			return nil
		})
		if err != nil && !errors.Is(err, errWindowRead) {
			return err
		}
		r = b.Report()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}
