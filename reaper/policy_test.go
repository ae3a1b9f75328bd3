package reaper_test

import (
	"testing"
	"time"

	"github.com/reaperd/reaperd/reaper"
)

func TestDecide(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	past, future := now.Add(-time.Minute), now.Add(time.Hour)
	live := &reaper.Session{ID: "s1", Lease: reaper.Duration(2 * time.Minute), LastHeartbeat: now.Add(-time.Minute)}
	leaseEnd := now.Add(time.Minute)
	lapsed := &reaper.Session{ID: "s1", Lease: reaper.Duration(2 * time.Minute), LastHeartbeat: now.Add(-2 * time.Minute)}
	noLease := &reaper.Session{ID: "s1", LastHeartbeat: now.Add(-100 * time.Hour)}
	ended := &reaper.Session{ID: "s1", EndedAt: past, EndReason: reaper.ReasonSessionEnded}
	exited := &reaper.Session{ID: "s1", EndedAt: past, EndReason: reaper.ReasonOrphanedProcess, PID: 42}
	lapseRecorded := &reaper.Session{ID: "s1", EndedAt: past, EndReason: reaper.ReasonOrphanedLease}

	entry := func(f func(e *reaper.Entry)) *reaper.Entry {
		e := &reaper.Entry{Provider: "daytona", ID: "x", State: reaper.StateActive}
		f(e)
		return e
	}
	tests := []struct {
		name string
		e    *reaper.Entry
		s    *reaper.Session
		want reaper.Decision
	}{
		{"closing: nothing to decide", entry(func(e *reaper.Entry) { e.State = reaper.StateClosing; e.ExpiresAt = past }), nil,
			reaper.Decision{Action: reaper.ActionNone}},
		{"closed: nothing to decide", entry(func(e *reaper.Entry) { e.State = reaper.StateClosed }), nil,
			reaper.Decision{Action: reaper.ActionNone}},
		{"released: nothing to decide", entry(func(e *reaper.Entry) { e.State = reaper.StateReleased; e.ExpiresAt = past }), nil,
			reaper.Decision{Action: reaper.ActionNone}},
		{"no deadline at all: wait forever", entry(func(e *reaper.Entry) {}), nil,
			reaper.Decision{Action: reaper.ActionWait}},
		{"ttl not reached: wait until expiry", entry(func(e *reaper.Entry) { e.ExpiresAt = future }), nil,
			reaper.Decision{Action: reaper.ActionWait, At: future}},
		{"ttl reached exactly: close expired", entry(func(e *reaper.Entry) { e.ExpiresAt = now }), nil,
			reaper.Decision{Action: reaper.ActionClose, Reason: reaper.ReasonExpired}},
		{"ttl passed: close expired", entry(func(e *reaper.Entry) { e.ExpiresAt = past }), nil,
			reaper.Decision{Action: reaper.ActionClose, Reason: reaper.ReasonExpired}},
		{"keep and expired: skip", entry(func(e *reaper.Entry) { e.ExpiresAt = past; e.Keep = true }), nil,
			reaper.Decision{Action: reaper.ActionSkip, Reason: reaper.ReasonKeep}},
		{"keep and session ended: skip", entry(func(e *reaper.Entry) { e.Session = "s1"; e.Keep = true }), ended,
			reaper.Decision{Action: reaper.ActionSkip, Reason: reaper.ReasonKeep}},
		{"keep and attached and expired: skip keep", entry(func(e *reaper.Entry) { e.ExpiresAt = past; e.Keep = true; e.Attached = true }), nil,
			reaper.Decision{Action: reaper.ActionSkip, Reason: reaper.ReasonKeep}},
		{"live session: wait until lease end", entry(func(e *reaper.Entry) { e.Session = "s1" }), live,
			reaper.Decision{Action: reaper.ActionWait, At: leaseEnd}},
		{"live session and later ttl: wait until lease end", entry(func(e *reaper.Entry) { e.Session = "s1"; e.ExpiresAt = future }), live,
			reaper.Decision{Action: reaper.ActionWait, At: leaseEnd}},
		{"live session and earlier ttl: wait until expiry", entry(func(e *reaper.Entry) { e.Session = "s1"; e.ExpiresAt = now.Add(30 * time.Second) }), live,
			reaper.Decision{Action: reaper.ActionWait, At: now.Add(30 * time.Second)}},
		{"session without lease: wait forever", entry(func(e *reaper.Entry) { e.Session = "s1" }), noLease,
			reaper.Decision{Action: reaper.ActionWait}},
		{"lease lapsed exactly now: close orphaned-lease", entry(func(e *reaper.Entry) { e.Session = "s1" }), lapsed,
			reaper.Decision{Action: reaper.ActionClose, Reason: reaper.ReasonOrphanedLease}},
		{"lease lapse recorded: close orphaned-lease", entry(func(e *reaper.Entry) { e.Session = "s1" }), lapseRecorded,
			reaper.Decision{Action: reaper.ActionClose, Reason: reaper.ReasonOrphanedLease}},
		{"session ended: close session-ended", entry(func(e *reaper.Entry) { e.Session = "s1"; e.ExpiresAt = future }), ended,
			reaper.Decision{Action: reaper.ActionClose, Reason: reaper.ReasonSessionEnded}},
		{"process exited: close orphaned-process", entry(func(e *reaper.Entry) { e.Session = "s1" }), exited,
			reaper.Decision{Action: reaper.ActionClose, Reason: reaper.ReasonOrphanedProcess}},
		{"session missing: close session-ended", entry(func(e *reaper.Entry) { e.Session = "gone" }), nil,
			reaper.Decision{Action: reaper.ActionClose, Reason: reaper.ReasonSessionEnded}},
		{"expired beats session ended", entry(func(e *reaper.Entry) { e.Session = "s1"; e.ExpiresAt = past }), ended,
			reaper.Decision{Action: reaper.ActionClose, Reason: reaper.ReasonExpired}},
		{"attached, live session: skip until lease end", entry(func(e *reaper.Entry) { e.Session = "s1"; e.Attached = true }), live,
			reaper.Decision{Action: reaper.ActionSkip, Reason: reaper.ReasonAttached, At: leaseEnd}},
		{"attached, no session, no ttl: skip", entry(func(e *reaper.Entry) { e.Attached = true }), nil,
			reaper.Decision{Action: reaper.ActionSkip, Reason: reaper.ReasonAttached}},
		{"attached, session ended: release", entry(func(e *reaper.Entry) { e.Session = "s1"; e.Attached = true }), ended,
			reaper.Decision{Action: reaper.ActionRelease, Reason: reaper.ReasonSessionEnded}},
		{"attached, lease lapsed: release", entry(func(e *reaper.Entry) { e.Session = "s1"; e.Attached = true }), lapsed,
			reaper.Decision{Action: reaper.ActionRelease, Reason: reaper.ReasonOrphanedLease}},
		{"attached, process exited: release", entry(func(e *reaper.Entry) { e.Session = "s1"; e.Attached = true }), exited,
			reaper.Decision{Action: reaper.ActionRelease, Reason: reaper.ReasonOrphanedProcess}},
		{"attached, expired: release, never close", entry(func(e *reaper.Entry) { e.Attached = true; e.ExpiresAt = past }), nil,
			reaper.Decision{Action: reaper.ActionRelease, Reason: reaper.ReasonExpired}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := reaper.Decide(tt.e, tt.s, now)
			if got.Action != tt.want.Action || got.Reason != tt.want.Reason || !got.At.Equal(tt.want.At) {
				t.Errorf("Decide() = {%v %q %v}, want {%v %q %v}", got.Action, got.Reason, got.At, tt.want.Action, tt.want.Reason, tt.want.At)
			}
		})
	}
}

// TestDecideNeverClosesProtected checks, over a grid of times and session
// states, that keep and attached entries are never closed.
func TestDecideNeverClosesProtected(t *testing.T) {
	base := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	sessions := []*reaper.Session{nil,
		{ID: "s", Lease: reaper.Duration(time.Minute), LastHeartbeat: base},
		{ID: "s", EndedAt: base, EndReason: reaper.ReasonSessionEnded},
		{ID: "s", EndedAt: base, EndReason: reaper.ReasonOrphanedProcess}}
	for _, keep := range []bool{false, true} {
		for _, attached := range []bool{false, true} {
			if !keep && !attached {
				continue
			}
			for _, s := range sessions {
				for _, sess := range []string{"", "s"} {
					for off := -2 * time.Hour; off <= 2*time.Hour; off += 7 * time.Minute {
						e := &reaper.Entry{Provider: "e2b", ID: "x", State: reaper.StateActive, Keep: keep, Attached: attached,
							Session: sess, ExpiresAt: base}
						if d := reaper.Decide(e, s, base.Add(off)); d.Action == reaper.ActionClose {
							t.Fatalf("Decide closed a protected entry (keep=%v attached=%v session=%+v at %v)", keep, attached, s, off)
						}
					}
				}
			}
		}
	}
}

// TestDueAtAgreesWithDecide checks, over a grid of entries, sessions and
// instants (none before its records were written), that DueAt is exactly
// when Decide starts to act: an active
// entry is closed or released at now iff DueAt is set and not after now, or
// its live session's lease ended by now (the session's own deadline).
func TestDueAtAgreesWithDecide(t *testing.T) {
	base := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	lease := reaper.Duration(10 * time.Minute)
	sessions := []*reaper.Session{
		nil,
		{ID: "s", LastHeartbeat: base},
		{ID: "s", Lease: lease, LastHeartbeat: base},
		{ID: "s", Lease: lease, LastHeartbeat: base, LeaseGrace: reaper.Duration(5 * time.Minute)},
		{ID: "s", LastHeartbeat: base, EndedAt: base.Add(3 * time.Minute), EndReason: reaper.ReasonSessionEnded},
		{ID: "s", LastHeartbeat: base, EndedAt: base.Add(7 * time.Minute), EndReason: reaper.ReasonOrphanedProcess},
		{ID: "s", Lease: lease, LastHeartbeat: base, EndedAt: base.Add(10 * time.Minute), EndReason: reaper.ReasonOrphanedLease},
	}
	expiries := []time.Time{{}, base.Add(-time.Minute), base.Add(5 * time.Minute), base.Add(20 * time.Minute)}
	n := 0
	for _, s := range sessions {
		for _, sess := range []string{"", "s"} {
			if s != nil && sess == "" {
				continue
			}
			for _, exp := range expiries {
				for _, keep := range []bool{false, true} {
					for _, attached := range []bool{false, true} {
						e := &reaper.Entry{Provider: "e2b", ID: "x", State: reaper.StateActive, Session: sess,
							RegisteredAt: base.Add(-3 * time.Hour), ExpiresAt: exp, Keep: keep, Attached: attached}
						due := reaper.DueAt(e, s)
						for off := -2 * time.Hour; off <= 2*time.Hour; off += time.Minute {
							now := base.Add(off)
							if s != nil && (now.Before(s.LastHeartbeat) || s.Ended() && now.Before(s.EndedAt)) {
								continue // a session record is never from the future
							}
							d := reaper.Decide(e, s, now)
							acts := d.Action == reaper.ActionClose || d.Action == reaper.ActionRelease
							leaseEnded := s != nil && !s.Ended() && !s.Deadline().IsZero() && !now.Before(s.Deadline())
							want := !keep && (!due.IsZero() && !now.Before(due) || leaseEnded)
							if acts != want {
								t.Fatalf("entry %+v, session %+v, at %v: Decide = %v, but DueAt = %v (lease ended %v)",
									e, s, off, d.Action, due, leaseEnded)
							}
							n++
						}
					}
				}
			}
		}
	}
	t.Logf("%d cases", n)
}

func TestDueAtOfClosingEntries(t *testing.T) {
	base := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		e    reaper.Entry
		want time.Time
	}{
		{"next attempt set", reaper.Entry{State: reaper.StateClosing, ClosingSince: base, NextAttemptAt: base.Add(time.Minute)}, base.Add(time.Minute)},
		{"no next attempt: at once", reaper.Entry{State: reaper.StateClosing, ClosingSince: base}, base},
		{"held by a daemon: not due", reaper.Entry{State: reaper.StateClosing, ClosingSince: base, InFlight: true}, time.Time{}},
		{"closed", reaper.Entry{State: reaper.StateClosed, ExpiresAt: base}, time.Time{}},
		{"released", reaper.Entry{State: reaper.StateReleased, ExpiresAt: base}, time.Time{}},
	}
	for _, tt := range tests {
		if got := reaper.DueAt(&tt.e, nil); !got.Equal(tt.want) {
			t.Errorf("%s: DueAt = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestValidateID(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{"7f3c2a", true}, {"sbx_1.a:b-c", true}, {"a.b", true}, {"...", true},
		{"", false}, {".", false}, {"..", false}, {"a/b", false}, {"a b", false}, {"a\tb", false},
		{"a\x00b", false}, {"a\nb", false}, {"é", false},
	}
	for _, tt := range tests {
		err := reaper.ValidateID("sandbox id", tt.id)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateID(%q) = %v, want ok=%v", tt.id, err, tt.ok)
		}
		if err != nil && reaper.ErrorCode(err) != reaper.EINVALID {
			t.Errorf("ValidateID(%q) code = %s, want invalid", tt.id, reaper.ErrorCode(err))
		}
	}
}
