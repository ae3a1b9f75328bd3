package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/reaperd/reaperd/api"
	"github.com/reaperd/reaperd/providers/providertest"
	"github.com/reaperd/reaperd/reaper"
)

// truthFake is what these tests need of every provider fake.
type truthFake interface {
	Create(labels map[string]string, createdAt time.Time) string
	Alive(id string) bool
	Fail(f providertest.Failure)
}

// TestSpuriousNotFoundsAtEveryProvider runs a daemon against all four
// fakes, each answering not-found to closes of sandboxes that exist and
// that its listing still shows. Nothing may be recorded closed; every
// contradiction is recorded; once the providers answer truly, every
// sandbox is closed.
func TestSpuriousNotFoundsAtEveryProvider(t *testing.T) {
	f := allFakes(t)
	daytonaFake, e2bFake, modalFake, runloopFake := f.daytona, f.e2b, f.modal, f.runloop
	fakes := map[string]truthFake{"daytona": daytonaFake, "e2b": e2bFake, "modal": modalFake, "runloop": runloopFake}

	d := startDaemon(t, "", f.env(), "--schedule", "@every 1h")

	type sandbox struct{ provider, id, key string }
	var sbs []sandbox
	for _, name := range []string{"daytona", "e2b", "modal", "runloop"} {
		for range 3 {
			id := fakes[name].Create(map[string]string{"truth": "yes"}, time.Now().Add(-time.Minute))
			sbs = append(sbs, sandbox{name, id, name + "/" + id})
		}
	}
	for _, s := range sbs {
		d.mustCLI("register", s.key, "--ttl", "4s")
	}
	// Each registration is verified by its provider's listing.
	eventually(t, 15*time.Second, "every registration to be verified", func() bool {
		ents := listJSON(t, d)
		for _, s := range sbs {
			if !ents[s.key].Seen {
				return false
			}
		}
		return true
	})
	for _, f := range fakes {
		f.Fail(providertest.Failure{Kind: providertest.FailSpuriousNotFound})
	}

	// Every close is answered not-found; every listing still shows them.
	eventually(t, 30*time.Second, "every provider to contradict itself", func() bool {
		byKey := auditKinds(t, d)
		for _, s := range sbs {
			if !slices.Contains(byKey[s.key], reaper.EventContradicted) {
				return false
			}
		}
		return true
	})
	ents := listJSON(t, d)
	for _, s := range sbs {
		if e := ents[s.key]; e.State == reaper.StateClosed || !fakes[s.provider].Alive(s.id) {
			t.Fatalf("%s: %s in the ledger, alive %v at its fake, after spurious not-founds; want closing and alive",
				s.key, e.State, fakes[s.provider].Alive(s.id))
		}
	}
	if out := d.mustCLI("status"); !strings.Contains(out, "queue:") {
		t.Fatalf("status = %q", out)
	}
	if !strings.Contains(d.log.String(), "the provider contradicted itself") {
		t.Fatalf("the daemon did not say that a provider contradicted itself:\n%s", d.log.String())
	}

	// The providers answer truly again: every sandbox is closed.
	for _, f := range fakes {
		f.Fail(providertest.Failure{})
	}
	eventually(t, 60*time.Second, "every sandbox to be closed once the providers answer truly", func() bool {
		ents := listJSON(t, d)
		for _, s := range sbs {
			if ents[s.key].State != reaper.StateClosed || fakes[s.provider].Alive(s.id) {
				return false
			}
		}
		return true
	})
}

// auditKinds returns the audit events of the last hour, by entry key.
func auditKinds(t *testing.T, d *testDaemon) map[string][]reaper.EventKind {
	t.Helper()
	var evs []reaper.AuditEvent
	if err := json.Unmarshal([]byte(d.mustCLI("audit", "-o", "json", "--since", "1h")), &evs); err != nil {
		t.Fatalf("audit -o json: %v", err)
	}
	out := map[string][]reaper.EventKind{}
	for _, ev := range evs {
		out[ev.Key] = append(out[ev.Key], ev.Kind)
	}
	return out
}

// TestWrongOrganisationKeyIsCaught registers sandboxes that reaperd's
// credentials cannot see (as with a key of another organisation): they are
// flagged unverified within seconds, shown so by list and status, and never
// recorded closed when their close answers not-found.
func TestWrongOrganisationKeyIsCaught(t *testing.T) {
	d, fake := e2bDaemon(t, "--schedule", "@every 1h")
	ours := fake.Create(nil, time.Now().Add(-time.Minute))
	d.mustCLI("register", "e2b/"+ours, "--ttl", "1h")
	theirs := []string{"ibelongtoanotherorg01", "ibelongtoanotherorg02"}
	for _, id := range theirs {
		d.mustCLI("register", "e2b/"+id, "--ttl", "6s")
	}
	eventually(t, 20*time.Second, "the other organisation's sandboxes to be flagged unverified", func() bool {
		ents := listJSON(t, d)
		for _, id := range theirs {
			if !ents["e2b/"+id].Unverified {
				return false
			}
		}
		return ents["e2b/"+ours].Seen && !ents["e2b/"+ours].Unverified
	})
	if out := d.mustCLI("list"); !strings.Contains(out, "unverified") {
		t.Errorf("list = %q, want the unverified entries marked", out)
	}
	if out := d.mustCLI("status"); !strings.Contains(out, "2 UNVERIFIED") {
		t.Errorf("status = %q, want 2 unverified entries at e2b", out)
	}
	var st api.Status
	if err := json.Unmarshal([]byte(d.mustCLI("status", "-o", "json")), &st); err != nil || st.Engine == nil || st.Engine.Providers["e2b"].Unverified != 2 {
		t.Errorf("status -o json = %+v (%v), want e2b with 2 unverified", st.Engine, err)
	}
	if !strings.Contains(d.log.String(), "not visible to reaperd's credentials") {
		t.Errorf("the daemon did not warn about the unverified sandboxes:\n%s", d.log.String())
	}
	// Their TTL passes: the close answers not-found, and nothing proves
	// them gone.
	eventually(t, 30*time.Second, "the not-founds to be refused as proof", func() bool {
		ents := listJSON(t, d)
		for _, id := range theirs {
			if ents["e2b/"+id].ErrorClass != "unverified" {
				return false
			}
		}
		return true
	})
	ents := listJSON(t, d)
	for _, id := range theirs {
		if e := ents["e2b/"+id]; e.State != reaper.StateClosing {
			t.Errorf("e2b/%s = %s, want closing: never recorded closed on a not-found alone (%s)", id, e.State, fmt.Sprint(e.LastError))
		}
	}
}
