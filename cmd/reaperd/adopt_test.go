package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/reaperd/reaperd/api"
	"github.com/reaperd/reaperd/providers/modal/modaltest"
	"github.com/reaperd/reaperd/reaper"
)

// TestAdoptionEndToEnd runs one daemon against the fakes of all four
// providers with the openhands preset (reap), an E2B reap rule and an E2B
// report rule. Old matching sandboxes are adopted and closed at their
// fakes; a young one, a running one, an unmatched one, a registered keep
// one and one labelled reaperd.keep=true are untouched; the dry run shows
// the adoptions first; the report rule only reports; an entry whose
// sandbox someone else deleted becomes closed (gone).
func TestAdoptionEndToEnd(t *testing.T) {
	f := allFakes(t)
	dy, eb, md, rl := f.daytona, f.e2b, f.modal, f.runloop

	old := time.Now().Add(-3 * time.Hour)
	sid := map[string]string{"OpenHands_SID": "oh-session-1"}
	// Daytona: OpenHands stops its sandboxes; only stopped/archived ones
	// are the preset's.
	dOld := dy.Create(sid, old)
	dy.SetState(dOld, "stopped")
	dYoung := dy.Create(sid, time.Now().Add(-20*time.Minute))
	dy.SetState(dYoung, "stopped")
	dRunning := dy.Create(sid, old)
	dUnmatched := dy.Create(map[string]string{"team": "infra"}, old)
	dy.SetState(dUnmatched, "stopped")
	dKeepLabel := dy.Create(map[string]string{"OpenHands_SID": "s2", reaper.LabelKeep: "true"}, old)
	dy.SetState(dKeepLabel, "stopped")
	dRegistered := dy.Create(sid, old)
	dy.SetState(dRegistered, "stopped")
	dGone := dy.Create(map[string]string{"team": "gone"}, old)
	// Runloop, Modal: the preset's other rules.
	rOld := rl.Create(map[string]string{"container-name": "openhands-runtime-abc"}, old)
	rOther := rl.Create(map[string]string{"container-name": "my-service"}, old)
	mOld := md.CreateSandbox(modaltest.SandboxSpec{App: "openhands", CreatedAt: old})
	mOther := md.CreateSandbox(modaltest.SandboxSpec{App: "batch-jobs", CreatedAt: old})
	// E2B reports no creation time: age runs from the first listing.
	eReap := eb.Create(map[string]string{"agent": "ci"}, old)
	eReport := eb.Create(map[string]string{"team": "report-me"}, old)

	dir := t.TempDir()
	cfg := filepath.Join(dir, "reaperd.toml")
	if err := os.WriteFile(cfg, []byte(`
adopt_grace = "1s"

[[adopt]]
preset = "openhands"
action = "reap"

[[adopt]]
provider = "e2b"
labels = { agent = "ci" }
min_age = "3s"
action = "reap"

[[adopt]]
provider = "e2b"
labels = { team = "report-*" }
min_age = "1s"
`), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, "", f.env(), "--schedule", "@every 1h", "--config", cfg)
	d.mustCLI("register", "daytona/"+dRegistered, "--keep")
	d.mustCLI("register", "daytona/"+dGone, "--ttl", "10h")

	// The dry run lists the adoptions first, and does nothing.
	var dry reaper.SweepReport
	if err := json.Unmarshal([]byte(d.mustCLI("sweep", "--dry-run", "-o", "json")), &dry); err != nil {
		t.Fatal(err)
	}
	wantAdopt := map[string]bool{"daytona/" + dOld: true, "runloop/" + rOld: true, "modal/" + mOld: true}
	for i, it := range dry.Items {
		if i < len(wantAdopt) {
			if it.Action != "adopt" || !wantAdopt[it.Key] {
				t.Fatalf("dry run item %d = %+v, want the adoptions first: %v", i, it, wantAdopt)
			}
		} else if it.Action == "adopt" {
			t.Fatalf("dry run adopts %s too", it.Key)
		}
	}
	if len(dry.Items) < len(wantAdopt) {
		t.Fatalf("dry run = %+v, want the adoptions of %v", dry.Items, wantAdopt)
	}
	for key := range wantAdopt {
		if _, _, code := d.cli("list", key); code == 0 {
			if ents := listJSON(t, d); ents[key].Entry != nil {
				t.Fatalf("the dry run adopted %s", key)
			}
		}
	}

	// The first sweep adopts and closes the three old matching sandboxes,
	// records the E2B ones as first seen, and sees the registered ones.
	d.mustCLI("sweep")
	eventually(t, 15*time.Second, "the adopted sandboxes to be closed at their fakes", func() bool {
		return !dy.Alive(dOld) && !rl.Alive(rOld) && !md.Alive(mOld)
	})
	// The fakes see the close before the ledger records it (Daytona's
	// delete is confirmed by polling).
	var ents map[string]api.EntryView
	eventually(t, 15*time.Second, "the adopted entries to be recorded closed", func() bool {
		ents = listJSON(t, d)
		for key := range wantAdopt {
			if ents[key].Entry == nil || ents[key].State != reaper.StateClosed {
				return false
			}
		}
		return true
	})
	for key := range wantAdopt {
		e := ents[key]
		if e.Entry == nil || e.State != reaper.StateClosed || e.CloseReason != reaper.ReasonAdopted || e.Adopted == "" {
			t.Fatalf("%s = %+v, want closed (adopted)", key, e.Entry)
		}
	}
	if ents["daytona/"+dOld].Session != "" {
		t.Errorf("the preset records no session, got %q", ents["daytona/"+dOld].Session)
	}
	// E2B: not old enough by first sight yet; then adopted.
	if !eb.Alive(eReap) {
		t.Fatal("the E2B sandbox was adopted at first sight")
	}
	firstSweep := time.Now()
	// Someone deletes the registered daytona sandbox meanwhile.
	dy.SetState(dGone, "destroyed")
	// E2B ages from first sight (min_age 3s): sweeps adopt it once it is
	// that old, and not before.
	eventually(t, 15*time.Second, "the E2B sandbox to be adopted and closed", func() bool {
		d.mustCLI("sweep")
		time.Sleep(100 * time.Millisecond)
		return !eb.Alive(eReap)
	})
	if waited := time.Since(firstSweep); waited < 2*time.Second {
		t.Fatalf("the E2B sandbox was adopted %v after it was first seen, before its min_age of 3s", waited)
	}
	ents = listJSON(t, d)
	if e := ents["daytona/"+dGone]; e.State != reaper.StateClosed || e.CloseReason != reaper.ReasonGone {
		t.Fatalf("the entry whose sandbox was deleted = %s (%s), want closed (gone)", e.State, e.CloseReason)
	}

	for name, alive := range map[string]bool{
		"young": dy.Alive(dYoung), "running": dy.Alive(dRunning), "unmatched": dy.Alive(dUnmatched),
		"labelled keep": dy.Alive(dKeepLabel), "registered keep": dy.Alive(dRegistered),
		"runloop other": rl.Alive(rOther), "modal other": md.Alive(mOther), "e2b report": eb.Alive(eReport),
	} {
		if !alive {
			t.Errorf("the %s sandbox was closed", name)
		}
	}
	if e := ents["daytona/"+dRegistered]; e.State != reaper.StateActive || !e.Keep {
		t.Errorf("registered keep entry = %s, want active and kept", e.State)
	}

	// discover lists what is left, with each one's rule and outcome.
	var disc struct {
		Untracked []reaper.Untracked `json:"untracked"`
	}
	if err := json.Unmarshal([]byte(d.mustCLI("discover", "-o", "json")), &disc); err != nil {
		t.Fatal(err)
	}
	got := map[string]reaper.Untracked{}
	for _, u := range disc.Untracked {
		got[u.Provider+"/"+u.Sandbox.ID] = u
	}
	if u := got["e2b/"+eReport]; u.Rule != "adopt-3" || u.Action != reaper.AdoptReport || u.Adopted {
		t.Errorf("report-rule sandbox = %+v, want matched by adopt-3 for report only", u)
	}
	if u := got["daytona/"+dKeepLabel]; u.Rule != "openhands/daytona" || u.Note == "" {
		t.Errorf("keep-labelled sandbox = %+v, want matched, with a note saying why it is left alone", u)
	}
	if u := got["daytona/"+dYoung]; u.Rule != "openhands/daytona" || u.Note == "" {
		t.Errorf("young sandbox = %+v, want matched, not yet old enough", u)
	}
	if _, ok := got["daytona/"+dRegistered]; ok {
		t.Errorf("a registered sandbox is listed untracked")
	}
}
