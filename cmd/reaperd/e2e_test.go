package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reaperd/reaperd/api"
	"github.com/reaperd/reaperd/reaper"
)

// e2eFake is what the end-to-end test needs of every provider fake.
type e2eFake interface {
	Create(labels map[string]string, createdAt time.Time) string
	Alive(id string) bool
}

// e2eKind is the role a sandbox plays in TestE2EAllProviders.
type e2eKind string

const (
	e2eTTL      e2eKind = "ttl"      // short ttl: closed at its deadline (expired)
	e2eKeep     e2eKind = "keep"     // short ttl, keep: never closed, stays active
	e2eAttached e2eKind = "attached" // attached, short lease never renewed: released, left alone
	e2eOrphan   e2eKind = "orphan"   // short lease never renewed: closed (orphaned-lease)
	e2eLong     e2eKind = "long"     // long ttl: stays active
)

const (
	e2eShortTTL   = time.Second
	e2eShortLease = 2 * time.Second
	// e2eMaxLatency bounds deadline → gone at the fake. The deadline timer
	// closes within about a second; full sweeps run once an hour here.
	e2eMaxLatency = 5 * time.Second
)

// e2eSandbox is one sandbox of the test, created at a fake and registered
// with the daemon.
type e2eSandbox struct {
	provider string
	kind     e2eKind
	fake     e2eFake
	id       string
	key      string
	deadline time.Time // when it became due (ttl expiry or lease end); zero for keep/long

	// goneAt is when the poller first saw the sandbox gone at its fake.
	goneAt time.Time
}

func (s *e2eSandbox) shouldClose() bool { return s.kind == e2eTTL || s.kind == e2eOrphan }

// TestE2EAllProviders runs one daemon with all four providers enabled
// against their fakes and checks, per provider, that expired and orphaned
// sandboxes are closed at their deadlines (within seconds, with full sweeps
// an hour apart) while keep, attached and long-lived ones are left alone.
func TestE2EAllProviders(t *testing.T) {
	f := allFakes(t)
	daytonaFake, e2bFake, modalFake, runloopFake := f.daytona, f.e2b, f.modal, f.runloop

	fakes := []struct {
		name string
		fake e2eFake
	}{
		{"daytona", daytonaFake},
		{"e2b", e2bFake},
		{"modal", modalFake},
		{"runloop", runloopFake},
	}

	d := startDaemon(t, "", f.env(), "--schedule", "@every 1h")

	// The startup log says all four providers are enabled, none disabled.
	// (The log reaches the buffer through a pipe: allow it a moment.)
	var enabledLine string
	eventually(t, 5*time.Second, `the "providers enabled" log line`, func() bool {
		for _, l := range strings.Split(d.log.String(), "\n") {
			if strings.Contains(l, "providers enabled") {
				enabledLine = l
				return true
			}
		}
		return false
	})
	if want := `enabled="[daytona e2b modal runloop]"`; !strings.Contains(enabledLine, want) {
		t.Fatalf("startup log line %q lacks %s", enabledLine, want)
	}
	if strings.Contains(d.log.String(), "provider disabled") {
		t.Fatalf("a provider is disabled:\n%s", d.log.String())
	}
	if out := d.mustCLI("status"); !strings.Contains(out, "@every 1h") {
		t.Fatalf("status = %q, want the schedule @every 1h", out)
	}

	// Create the sandboxes at every fake first, then register them all, so
	// that the deadlines fall close together.
	kinds := []e2eKind{e2eTTL, e2eKeep, e2eAttached, e2eOrphan, e2eLong}
	var sbs []*e2eSandbox
	created := time.Now().Add(-time.Minute)
	for _, f := range fakes {
		for _, k := range kinds {
			id := f.fake.Create(map[string]string{"e2e": string(k)}, created)
			sbs = append(sbs, &e2eSandbox{provider: f.name, kind: k, fake: f.fake, id: id, key: f.name + "/" + id})
		}
	}

	// Watch the fakes closely from before the first registration, to time
	// each close from its deadline.
	var mu sync.Mutex
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, s := range sbs {
				mu.Lock()
				seen := !s.goneAt.IsZero()
				mu.Unlock()
				if seen || s.fake.Alive(s.id) {
					continue
				}
				now := time.Now()
				mu.Lock()
				s.goneAt = now
				mu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	stopWatch := sync.OnceFunc(func() { close(stop); <-watched })
	t.Cleanup(stopWatch)

	for _, s := range sbs {
		args := []string{"register", s.key, "-o", "json", "--label", "e2e=" + string(s.kind)}
		session := "e2e-" + s.provider + "-" + string(s.kind)
		switch s.kind {
		case e2eTTL:
			args = append(args, "--ttl", e2eShortTTL.String())
		case e2eKeep:
			args = append(args, "--ttl", e2eShortTTL.String(), "--keep")
		case e2eAttached:
			args = append(args, "--session", session, "--attached", "--lease", e2eShortLease.String())
		case e2eOrphan:
			args = append(args, "--session", session, "--lease", e2eShortLease.String())
		case e2eLong:
			args = append(args, "--ttl", "1h")
		}
		var ent api.EntryView
		out := d.mustCLI(args...)
		if err := json.Unmarshal([]byte(out), &ent); err != nil || ent.Entry == nil {
			t.Fatalf("register %s -o json: %v\n%s", s.key, err, out)
		}
		if ent.Key != s.key || ent.State != reaper.StateActive {
			t.Fatalf("registered %+v, want %s active", ent, s.key)
		}
		switch s.kind {
		case e2eTTL:
			s.deadline = ent.ExpiresAt
		case e2eOrphan, e2eAttached:
			// Registering is the session's only heartbeat, in the same
			// transaction: its lease ends a lease after registration.
			s.deadline = ent.RegisteredAt.Add(e2eShortLease)
		}
	}
	t.Logf("registered %d sandboxes at 4 providers", len(sbs))

	wantState := func(s *e2eSandbox) reaper.State {
		switch s.kind {
		case e2eTTL, e2eOrphan:
			return reaper.StateClosed
		case e2eAttached:
			return reaper.StateReleased
		}
		return reaper.StateActive
	}
	var ents map[string]api.EntryView
	var pending string // what the wait below still waits for
	defer func() {
		if t.Failed() && pending != "" {
			t.Logf("still waiting for: %s", pending)
		}
	}()
	eventually(t, 15*time.Second, "every due sandbox to be closed at its fake and in the ledger", func() bool {
		for _, s := range sbs {
			if s.shouldClose() && s.fake.Alive(s.id) {
				pending = fmt.Sprintf("%s (%s) to be gone at its fake", s.key, s.kind)
				return false
			}
		}
		ents = listJSON(t, d)
		for _, s := range sbs {
			if s.kind == e2eKeep || s.kind == e2eLong {
				continue
			}
			if e, ok := ents[s.key]; !ok || e.State != wantState(s) {
				pending = fmt.Sprintf("%s (%s) to be %s in the ledger; it is %+v", s.key, s.kind, wantState(s), e.Entry)
				return false
			}
		}
		pending = ""
		return true
	})
	stopWatch()

	// Every sandbox is where it should be, at its fake and in the ledger.
	for _, s := range sbs {
		e, ok := ents[s.key]
		if !ok {
			t.Errorf("%s (%s): not in reaperd list --all", s.key, s.kind)
			continue
		}
		if e.State != wantState(s) {
			t.Errorf("%s (%s): state %s, want %s", s.key, s.kind, e.State, wantState(s))
		}
		switch s.kind {
		case e2eTTL, e2eOrphan:
			wantReason := reaper.ReasonExpired
			if s.kind == e2eOrphan {
				wantReason = reaper.ReasonOrphanedLease
			}
			if e.CloseReason != wantReason || e.Attempts < 1 || e.ClosedAt.IsZero() {
				t.Errorf("%s (%s): closed with reason %q after %d attempts at %v; want reason %q",
					s.key, s.kind, e.CloseReason, e.Attempts, e.ClosedAt, wantReason)
			}
		case e2eAttached:
			if !s.fake.Alive(s.id) {
				t.Errorf("%s (attached): the sandbox was closed at the provider", s.key)
			}
			if e.CloseReason != reaper.ReasonOrphanedLease {
				t.Errorf("%s (attached): released for %q, want %q", s.key, e.CloseReason, reaper.ReasonOrphanedLease)
			}
		case e2eKeep, e2eLong:
			if !s.fake.Alive(s.id) {
				t.Errorf("%s (%s): the sandbox was closed at the provider", s.key, s.kind)
			}
			if s.kind == e2eKeep && !e.Keep {
				t.Errorf("%s (keep): entry lost its keep tag: %+v", s.key, e.Entry)
			}
		}
	}

	// Deadline → gone at the fake: seconds, not a schedule tick.
	perProvider := map[string][]string{}
	for _, s := range sbs {
		if !s.shouldClose() {
			continue
		}
		if s.goneAt.IsZero() {
			t.Errorf("%s (%s): the watcher never saw it gone", s.key, s.kind)
			continue
		}
		lat := s.goneAt.Sub(s.deadline)
		perProvider[s.provider] = append(perProvider[s.provider], fmt.Sprintf("%s %v", s.kind, lat.Round(time.Millisecond)))
		switch {
		case lat < 0:
			t.Errorf("%s (%s): gone at %v, %v BEFORE its deadline %v", s.key, s.kind,
				s.goneAt.Format(time.StampMilli), -lat, s.deadline.Format(time.StampMilli))
		case lat > e2eMaxLatency:
			t.Errorf("%s (%s): gone %v after its deadline; want at most %v", s.key, s.kind, lat, e2eMaxLatency)
		}
	}
	for _, f := range fakes {
		t.Logf("deadline → gone at the fake, %-7s: %s", f.name, strings.Join(perProvider[f.name], ", "))
	}

	// The audit log: a closed event for each closed sandbox, no close
	// started for any protected one, a release for each attached one.
	out := d.mustCLI("audit", "-o", "json", "--since", "1h")
	var evs []reaper.AuditEvent
	if err := json.Unmarshal([]byte(out), &evs); err != nil {
		t.Fatalf("audit -o json: %v\n%s", err, out)
	}
	byKey := map[string][]reaper.EventKind{}
	for _, ev := range evs {
		byKey[ev.Key] = append(byKey[ev.Key], ev.Kind)
	}
	for _, s := range sbs {
		kinds := byKey[s.key]
		if !slices.Contains(kinds, reaper.EventRegistered) {
			t.Errorf("%s (%s): no registered event in the audit log: %v", s.key, s.kind, kinds)
		}
		switch s.kind {
		case e2eTTL, e2eOrphan:
			if !slices.Contains(kinds, reaper.EventClosed) || !slices.Contains(kinds, reaper.EventCloseStarted) {
				t.Errorf("%s (%s): audit events %v, want close-started and closed", s.key, s.kind, kinds)
			}
		default:
			if slices.Contains(kinds, reaper.EventCloseStarted) || slices.Contains(kinds, reaper.EventClosed) {
				t.Errorf("%s (%s): audit events %v: a protected sandbox was being closed", s.key, s.kind, kinds)
			}
			if s.kind == e2eAttached && !slices.Contains(kinds, reaper.EventReleased) {
				t.Errorf("%s (attached): audit events %v, want released", s.key, kinds)
			}
		}
	}
	if t.Failed() {
		t.Logf("audit log:\n%s", d.mustCLI("audit", "--since", "1h"))
	}
}
