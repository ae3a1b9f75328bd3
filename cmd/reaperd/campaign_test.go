package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reaperd/reaperd/providers/e2b/e2btest"
	"github.com/reaperd/reaperd/providers/providertest"
	"github.com/reaperd/reaperd/providers/runloop/runlooptest"
	"github.com/reaperd/reaperd/reaper"
)

// campaignKind is the role a sandbox plays in TestCrashCampaign.
type campaignKind string

const (
	campTTL      campaignKind = "ttl"      // short ttl: must be closed
	campOrphan   campaignKind = "orphan"   // session with a short lease never renewed: must be closed
	campKeep     campaignKind = "keep"     // short ttl + keep: never closed
	campAttached campaignKind = "attached" // session with a short lease + attached: never closed, released
	campLong     campaignKind = "long"     // ttl 1h: stays active
)

func (k campaignKind) due() bool       { return k == campTTL || k == campOrphan }
func (k campaignKind) protected() bool { return k == campKeep || k == campAttached }

// campaignFake is one provider fake of the campaign, behind a common face.
type campaignFake struct {
	name  string
	fake  providertest.Fake
	calls func() map[string]int // close calls received so far, by sandbox id
}

type campaignSandbox struct {
	fake  *campaignFake
	kind  campaignKind
	id    string
	key   string
	round int // the round it was registered in (0: before the first)
}

// campaignFaultNames names providertest failure kinds in the campaign's log.
var campaignFaultNames = map[providertest.FailureKind]string{
	providertest.FailNone:        "none",
	providertest.FailServerError: "5xx",
	providertest.FailHang:        "hang",
	providertest.FailRateLimited: "429",
}

func campaignFault(f providertest.Failure) string {
	if f.Kind == providertest.FailRateLimited {
		return fmt.Sprintf("429/%v", f.RetryAfter)
	}
	return campaignFaultNames[f.Kind]
}

// TestCrashCampaign runs a daemon with the E2B and Runloop fakes behind it
// through 20 rounds of random provider faults (5xx, hung requests, 429
// with Retry-After, or none), each ended by a SIGKILL at a random moment
// 100–700 ms into the round and a restart on the same ledger, with new
// short-lived sandboxes registered in some rounds so that closes are in
// flight at the kills. Between rounds it checks the two safety promises
// against the ledger and the fakes:
//
//   - no keep or attached sandbox is ever sent a close call, and none is
//     closing or closed in the ledger;
//   - no entry is closed in the ledger while its sandbox is alive at the
//     fake (the ledger is read first, then the fakes).
//
// Then it clears the faults and measures how long the daemon takes to
// close every due sandbox (gone at the fake and closed in the ledger): with
// the default schedule (@every 1m) that must be about a minute, at most
// 90 s. At the end, keep, attached and long-lived sandboxes are alive;
// every closed entry counts at least one attempt, no fewer than the close
// calls its fake received, and not absurdly many.
//
// The schedule is random (the seed is logged); the assertions are not.
func TestCrashCampaign(t *testing.T) {
	const (
		rounds      = 20
		runloopKey  = "ak_campaign_runloop_0123456789"
		maxRecovery = 90 * time.Second
		maxAttempts = 30
	)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed>>32|1))
	testStart := time.Now()

	e2bFake := e2btest.NewServer(e2bKey)
	t.Cleanup(e2bFake.Close)
	rlFake := runlooptest.NewServer(runloopKey)
	t.Cleanup(rlFake.Close)
	fakes := []*campaignFake{
		{name: "e2b", fake: e2bFake, calls: func() map[string]int {
			m := map[string]int{}
			for _, r := range e2bFake.RequestLog() {
				if id, ok := strings.CutPrefix(r.Path, "/sandboxes/"); ok && r.Method == "DELETE" {
					m[id]++
				}
			}
			return m
		}},
		{name: "runloop", fake: rlFake, calls: func() map[string]int {
			m := map[string]int{}
			for _, line := range rlFake.Requests() {
				rest, ok := strings.CutPrefix(line, "POST /v1/devboxes/")
				if id, _, found := strings.Cut(rest, "/shutdown"); ok && found {
					m[id]++
				}
			}
			return m
		}},
	}

	// Default engine settings, but for the grace of a graceful stop (the
	// campaign only SIGKILLs; the grace matters to nothing but cleanup).
	cfg := filepath.Join(t.TempDir(), "reaperd.toml")
	if err := os.WriteFile(cfg, []byte("[engine]\nshutdown_grace = \"1s\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, "", []string{
		"E2B_API_KEY=" + e2bKey, "E2B_API_URL=" + e2bFake.URL,
		"RUNLOOP_API_KEY=" + runloopKey, "RUNLOOP_BASE_URL=" + rlFake.URL,
	}, "--config", cfg)

	var sbs []*campaignSandbox
	sessions := 0
	register := func(f *campaignFake, kind campaignKind, round int) {
		t.Helper()
		id := f.fake.Create(map[string]string{"campaign": string(kind)}, time.Now())
		s := &campaignSandbox{fake: f, kind: kind, id: id, key: f.name + "/" + id, round: round}
		shortTTL := fmt.Sprintf("%dms", 1000+rng.IntN(2001)) // 1–3 s
		args := []string{"register", s.key}
		switch kind {
		case campTTL:
			args = append(args, "--ttl", shortTTL)
		case campKeep:
			args = append(args, "--ttl", shortTTL, "--keep")
		case campLong:
			args = append(args, "--ttl", "1h")
		case campOrphan, campAttached:
			sessions++
			args = append(args, "--session", fmt.Sprintf("%s-%d", kind, sessions), "--lease", "2s")
			if kind == campAttached {
				args = append(args, "--attached")
			}
		}
		d.mustCLI(args...)
		sbs = append(sbs, s)
	}

	// ~40 sandboxes: per provider, 8 short-ttl, 2 orphaned by their lease,
	// 4 keep, 3 attached, 3 long-lived.
	mix := []struct {
		kind campaignKind
		n    int
	}{{campTTL, 8}, {campOrphan, 2}, {campKeep, 4}, {campAttached, 3}, {campLong, 3}}
	for _, f := range fakes {
		for _, m := range mix {
			for range m.n {
				register(f, m.kind, 0)
			}
		}
	}
	initial := len(sbs)
	setupTook := time.Since(testStart)

	// check verifies the safety invariants; it returns the ledger it read.
	check := func(when string) map[string]*reaper.Entry {
		t.Helper()
		ents := map[string]*reaper.Entry{}
		for k, v := range listJSON(t, d) {
			ents[k] = v.Entry
		}
		// The fakes are read after the ledger: an entry the ledger shows
		// closed was confirmed gone before, and nothing revives a sandbox.
		calls := map[*campaignFake]map[string]int{}
		for _, f := range fakes {
			calls[f] = f.calls()
		}
		for _, s := range sbs {
			e := ents[s.key]
			if e == nil {
				t.Fatalf("%s: %s (%s) is not in the ledger", when, s.key, s.kind)
			}
			alive := s.fake.fake.Alive(s.id)
			if e.State == reaper.StateClosed && alive {
				t.Fatalf("%s: %s (%s) is closed in the ledger (attempt %d) but alive at the fake",
					when, s.key, s.kind, e.Attempts)
			}
			if s.kind.protected() {
				if n := calls[s.fake][s.id]; n > 0 || !alive {
					t.Fatalf("%s: %s sandbox %s received %d close calls (alive %v); entry %+v",
						when, s.kind, s.key, n, alive, e)
				}
				if e.State == reaper.StateClosing || e.State == reaper.StateClosed || e.Attempts > 0 {
					t.Fatalf("%s: %s entry %s is %s with %d attempts", when, s.kind, s.key, e.State, e.Attempts)
				}
			}
			if s.kind == campLong && (e.State != reaper.StateActive || !alive || calls[s.fake][s.id] > 0) {
				t.Fatalf("%s: long-lived %s is %s (alive %v, %d close calls)", when, s.key, e.State, alive, calls[s.fake][s.id])
			}
		}
		return ents
	}

	// The rounds: fault, run a random 100–700 ms, SIGKILL, restart, check.
	faults := []providertest.FailureKind{providertest.FailNone, providertest.FailServerError,
		providertest.FailHang, providertest.FailRateLimited}
	pick := func() providertest.Failure {
		f := providertest.Failure{Kind: faults[rng.IntN(len(faults))]}
		if f.Kind == providertest.FailRateLimited {
			f.RetryAfter = time.Duration(1+rng.IntN(3)) * time.Second
		}
		return f
	}
	roundsStart := time.Now()
	kills := 0
	var schedule []string
	for r := 1; r <= rounds; r++ {
		var desc []string
		for _, f := range fakes {
			fl := pick()
			f.fake.Fail(fl)
			desc = append(desc, f.name+"="+campaignFault(fl))
		}
		if rng.IntN(2) == 0 {
			n := 1 + rng.IntN(3)
			for range n {
				register(fakes[rng.IntN(len(fakes))], campTTL, r)
			}
			desc = append(desc, fmt.Sprintf("+%d ttl", n))
			if rng.IntN(3) == 0 {
				register(fakes[rng.IntN(len(fakes))], campKeep, r)
				desc = append(desc, "+1 keep")
			}
		}
		run := 100*time.Millisecond + time.Duration(rng.Int64N(int64(600*time.Millisecond)))
		time.Sleep(run)
		if code := d.stop(syscall.SIGKILL); code != -1 {
			t.Fatalf("round %d: SIGKILL exit code %d", r, code)
		}
		kills++
		d.start("--config", cfg)
		check(fmt.Sprintf("after round %d", r))
		schedule = append(schedule, fmt.Sprintf("%d: %s, kill at %v", r, strings.Join(desc, " "), run.Round(time.Millisecond)))
	}
	roundsTook := time.Since(roundsStart)
	ents := check("after the rounds")
	var due, closedUnderFaults int
	for _, s := range sbs {
		if s.kind.due() {
			due++
			if ents[s.key].State == reaper.StateClosed {
				closedUnderFaults++
			}
		}
	}
	t.Logf("schedule:\n\t%s", strings.Join(schedule, "\n\t"))

	// Recovery: the providers answer again. Every due sandbox must be gone
	// at its fake and closed in the ledger within about a minute.
	for _, f := range fakes {
		f.fake.Fail(providertest.Failure{})
	}
	cleared := time.Now()
	var pending []string
	for {
		ents = check("during recovery")
		pending = pending[:0]
		for _, s := range sbs {
			if s.kind.due() && (s.fake.fake.Alive(s.id) || ents[s.key].State != reaper.StateClosed) {
				pending = append(pending, fmt.Sprintf("%s (%s, %s, attempts %d, next attempt %s, error %q)", s.key, s.kind,
					ents[s.key].State, ents[s.key].Attempts, campaignNext(ents[s.key].NextAttemptAt), ents[s.key].LastError))
			}
		}
		if len(pending) == 0 || time.Since(cleared) > maxRecovery+30*time.Second {
			break
		}
		if el := time.Since(cleared); el > 10*time.Second && el%(10*time.Second) < 100*time.Millisecond {
			t.Logf("recovery, %v in: %d due sandboxes pending:\n\t%s", el.Round(time.Second), len(pending), strings.Join(pending, "\n\t"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	recovery := time.Since(cleared)
	if len(pending) > 0 {
		t.Fatalf("%d due sandboxes still not closed %v after the faults stopped:\n\t%s", len(pending),
			recovery.Round(time.Millisecond), strings.Join(pending, "\n\t"))
	}
	if recovery > maxRecovery {
		t.Errorf("recovery after the faults stopped took %v, want at most %v (about a minute with @every 1m)", recovery, maxRecovery)
	}

	// Final state: protected and long-lived sandboxes alive and untouched;
	// attached entries released; attempts counted, and sanely.
	ents = check("at the end")
	calls := map[*campaignFake]map[string]int{}
	for _, f := range fakes {
		calls[f] = f.calls()
	}
	maxAtt, maxAttKey, totalCalls := 0, "", 0
	// unsent counts attempts the ledger counted that no fake received: a
	// kill between the commit of an attempt and its request. At most one
	// per entry and daemon process.
	unsent, maxUnsent := 0, 0
	var attempts []int
	for _, s := range sbs {
		e := ents[s.key]
		n := calls[s.fake][s.id]
		totalCalls += n
		switch s.kind {
		case campKeep, campLong:
			if e.State != reaper.StateActive {
				t.Errorf("%s entry %s is %s, want active", s.kind, s.key, e.State)
			}
		case campAttached:
			if e.State != reaper.StateReleased {
				t.Errorf("attached entry %s is %s, want released (its session's lease lapsed)", s.key, e.State)
			}
		}
		if e.State != reaper.StateClosed {
			continue
		}
		if e.Attempts < 1 {
			t.Errorf("closed entry %s counts %d attempts, want at least 1", s.key, e.Attempts)
		}
		if n > e.Attempts {
			t.Errorf("closed entry %s counts %d attempts but its fake received %d close calls: a call was not counted",
				s.key, e.Attempts, n)
		}
		if u := e.Attempts - n; u > kills+1 {
			t.Errorf("closed entry %s counts %d attempts but its fake received only %d close calls over %d daemon processes",
				s.key, e.Attempts, n, kills+1)
		} else if u > 0 {
			unsent += u
			maxUnsent = max(maxUnsent, u)
		}
		if e.Attempts >= maxAttempts {
			t.Errorf("closed entry %s counts %d attempts (%d close calls received): inflated", s.key, e.Attempts, n)
		}
		if e.Attempts > maxAtt {
			maxAtt, maxAttKey = e.Attempts, s.key
		}
		attempts = append(attempts, e.Attempts)
	}
	slices.Sort(attempts)
	t.Logf("setup %v: %d sandboxes registered (%d during the rounds, %d due in all)",
		setupTook.Round(time.Millisecond), len(sbs), len(sbs)-initial, due)
	t.Logf("rounds: %d in %v, %d SIGKILLs; %d of %d due sandboxes closed under faults",
		rounds, roundsTook.Round(time.Millisecond), kills, closedUnderFaults, due)
	t.Logf("recovery after the faults stopped: %v", recovery.Round(time.Millisecond))
	t.Logf("attempts of closed entries: median %d, max %d (%s); %d close calls at the fakes; %d attempts counted but not received (at most %d for one entry)",
		attempts[len(attempts)/2], maxAtt, maxAttKey, totalCalls, unsent, maxUnsent)
	t.Logf("total %v", time.Since(testStart).Round(time.Millisecond))
}

func campaignNext(t time.Time) string {
	if t.IsZero() {
		return "now"
	}
	return "in " + time.Until(t).Round(time.Millisecond).String()
}
