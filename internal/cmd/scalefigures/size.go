package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/reaperd/reaperd/api"
	"github.com/reaperd/reaperd/ledger/ledgertest"
	"github.com/reaperd/reaperd/providers/e2b/e2btest"
	"github.com/reaperd/reaperd/reaper"
)

const (
	// tail is how many of the last registrations the tail rate covers.
	tail = 10_000
	// verifyGrace is the engine's: a sandbox missing from a listing taken
	// less than this after its registration is listed again later (see
	// engine/observe.go). A listing that starts this long after the last
	// registration settles every entry.
	verifyGrace = 5 * time.Second
	// idleWindow, idleTicks and idleIO define idle: at most idleTicks clock
	// ticks (10 ms each) of CPU and idleIO bytes of storage I/O in
	// idleWindow (the daemon's alive stamp is a small commit now and then).
	idleWindow = time.Second
	idleTicks  = 2
	idleIO     = 1 << 20
)

// sizeRun measures one ledger size.
type sizeRun struct {
	cfg  *config
	bin  string
	dir  string
	n    int
	log  *progress
	r    *runResult
	fake *e2btest.Server
	d    *daemon
	// buildEnd is when the last registration was answered.
	buildEnd time.Time
}

func (s *sizeRun) printf(format string, args ...any) {
	s.log.printf("%s: %s", sizeName(s.n), fmt.Sprintf(format, args...))
}

// build registers N sandboxes from cfg.clients clients.
func (s *sizeRun) build(ctx context.Context) error {
	d, n, clients := s.d, s.n, s.cfg.clients
	pid := d.pid()
	io0, err := readIO(pid)
	if err != nil {
		return err
	}
	tx0, err := boltTxID(d.ledger)
	if err != nil {
		return fmt.Errorf("read the ledger's transaction id: %w", err)
	}
	s.printf("registering %d sandboxes from %d clients", n, clients)

	lat := make([]time.Duration, n)
	var next, completed atomic.Int64
	var tailStart atomic.Int64 // unix nanoseconds
	tailN := min(tail, n)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var firstErr error
	var errOnce sync.Once
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; cancel() })
	}
	var wg sync.WaitGroup
	t0 := time.Now()
	if tailN == n {
		tailStart.Store(t0.UnixNano())
	}
	for c := range clients {
		cl := api.NewClient(d.sock)
		cl.Timeout = 5 * time.Minute
		session := fmt.Sprintf("scale-%02d", c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				req := reaper.RegisterRequest{Provider: "e2b", ID: ledgertest.ScatteredID(uint64(n), uint64(i)), Session: session,
					TTL: reaper.Duration(s.cfg.ttl), Lease: reaper.Duration(s.cfg.ttl), Labels: map[string]string{"task": "scale"}}
				start := time.Now()
				ent, err := cl.Register(ctx, req)
				lat[i-1] = time.Since(start)
				switch {
				case err != nil && ctx.Err() == nil:
					fail(fmt.Errorf("register e2b/%s (client %d, registration %d): %w", req.ID, c, i, errors.Join(err, d.alive())))
					return
				case err != nil:
					return
				case ent.State != reaper.StateActive || ent.Owner == nil:
					fail(fmt.Errorf("register e2b/%s: the daemon answered state %q, owner %v; want a new active entry with its owner", req.ID, ent.State, ent.Owner))
					return
				}
				if done := completed.Add(1); done == int64(n-tailN) {
					tailStart.Store(time.Now().UnixNano())
				}
			}
		}()
	}
	stopProgress := make(chan struct{})
	go func() {
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		last, lastAt := int64(0), t0
		for {
			select {
			case <-stopProgress:
				return
			case now := <-t.C:
				c := completed.Load()
				s.printf("%d/%d registered; %.0f/s over the last %.0fs, %.0f/s overall", c, n,
					float64(c-last)/now.Sub(lastAt).Seconds(), now.Sub(lastAt).Seconds(), float64(c)/now.Sub(t0).Seconds())
				last, lastAt = c, now
			}
		}
	}()
	wg.Wait()
	end := time.Now()
	close(stopProgress)
	if firstErr != nil {
		return firstErr
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	io1, err := readIO(pid)
	if err != nil {
		return err
	}
	tx1, err := boltTxID(d.ledger)
	if err != nil {
		return fmt.Errorf("read the ledger's transaction id: %w", err)
	}
	s.buildEnd = end

	took := end.Sub(t0)
	r := s.r
	r.set("reg_per_s", float64(n)/took.Seconds())
	r.set("reg_per_s_tail", float64(tailN)/end.Sub(time.Unix(0, tailStart.Load())).Seconds())
	slices.Sort(lat)
	r.set("reg_p50_ms", ms(lat[(n-1)/2]))
	r.set("reg_p99_ms", ms(lat[(n*99+99)/100-1]))
	r.set("reg_max_ms", ms(lat[n-1]))
	r.set("build_s", seconds(took))
	written := (io1.WriteBytes - io0.WriteBytes) - (io1.CancelledBytes - io0.CancelledBytes)
	r.set("written_per_reg_bytes", float64(written)/float64(n))
	r.set("written_mib", mib(written))
	r.set("commits", float64(tx1-tx0))
	r.set("regs_per_commit", float64(n)/float64(max(1, tx1-tx0)))
	s.printf("registered %d in %.1fs (%.0f/s)", n, took.Seconds(), float64(n)/took.Seconds())
	return nil
}

// settle waits until the daemon has taken a verification listing of its
// E2B provider that started at or after from, and has then gone idle.
// Neither wait is fatal: a daemon still busy after cfg.settle is measured
// as it is, and the progress says so.
func (s *sizeRun) settle(ctx context.Context, from time.Time, why string) error {
	deadline := time.Now().Add(s.cfg.settle)
	for listed := false; !listed; {
		for _, req := range s.fake.RequestLog() {
			// Credential checks list one sandbox (limit=1); the observer
			// lists pages of 100.
			if req.Method == http.MethodGet && req.Path == "/v2/sandboxes" && req.Query.Get("limit") != "1" &&
				!req.Time.Before(from) && req.Status != 0 {
				listed = true
			}
		}
		if listed {
			break
		}
		if err := s.d.alive(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			s.printf("warning: no verification listing %s within -settle %s; measuring anyway", why, s.cfg.settle)
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return s.waitIdle(ctx, deadline)
}

// waitIdle waits until the daemon is idle: at most idleTicks of CPU and
// idleIO bytes read from or written to storage in an idleWindow (a walk
// of a ledger that is not in the page cache waits on the disk, not the
// CPU), or until deadline.
func (s *sizeRun) waitIdle(ctx context.Context, deadline time.Time) error {
	pid := s.d.pid()
	sample := func() (int64, ioCounters, error) {
		c, err := cpuTicks(pid)
		if err != nil {
			return 0, ioCounters{}, errors.Join(err, s.d.alive())
		}
		ioc, err := readIO(pid)
		if err != nil {
			return 0, ioCounters{}, errors.Join(err, s.d.alive())
		}
		return c, ioc, nil
	}
	for {
		c0, io0, err := sample()
		if err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(idleWindow):
		}
		c1, io1, err := sample()
		if err != nil {
			return err
		}
		moved := (io1.ReadBytes - io0.ReadBytes) + (io1.WriteBytes - io0.WriteBytes)
		if c1-c0 <= idleTicks && moved <= idleIO {
			return nil
		}
		if time.Now().After(deadline) {
			s.printf("warning: the daemon still used %d ms of CPU and moved %d KiB to or from storage in a second, after -settle %s; measuring anyway",
				(c1-c0)*1000/clockTicks, moved>>10, s.cfg.settle)
			return nil
		}
	}
}

// memory records the daemon's memory under the figures' suffix.
func (s *sizeRun) memory(ctx context.Context, suffix string) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(s.cfg.idle):
	}
	m, err := readMemory(s.d.pid())
	if err != nil {
		return err
	}
	heap, err := s.d.metric(ctx, "go_memstats_heap_inuse_bytes")
	if err != nil {
		return err
	}
	s.r.set("rss_"+suffix+"_mib", mib(m.RSS))
	s.r.set("rss_anon_"+suffix+"_mib", mib(m.Anon))
	s.r.set("rss_file_"+suffix+"_mib", mib(m.File))
	s.r.set("heap_"+suffix+"_mib", heap/(1<<20))
	return nil
}

// afterBuild: the listing that verifies the last registrations, then the
// ledger's size, the daemon's idle memory and its status.
func (s *sizeRun) afterBuild(ctx context.Context) error {
	s.printf("waiting for the registrations' verification listing and for the daemon to go idle")
	if err := s.settle(ctx, s.buildEnd.Add(verifyGrace), "after the build"); err != nil {
		return err
	}
	fi, err := os.Stat(s.d.ledger)
	if err != nil {
		return err
	}
	s.r.set("ledger_mib", mib(fi.Size()))
	s.r.set("ledger_bytes_per_entry", float64(fi.Size())/float64(s.n))
	if err := s.memory(ctx, "build"); err != nil {
		return err
	}
	var st api.Status
	took, err := s.d.get(ctx, "/v1/status", &st)
	if err != nil {
		return err
	}
	s.r.set("status_ms", ms(took))
	if st.Engine == nil {
		return errors.New("GET /v1/status has no engine status")
	}
	unverified := st.Engine.Providers["e2b"].Unverified
	s.r.set("unverified", float64(unverified))
	if unverified != s.n {
		s.printf("warning: %d of %d entries unverified after the build's listing; want all (the fake lists none)", unverified, s.n)
	}
	return nil
}

// restarts stops the daemon and starts it warm, then cold.
func (s *sizeRun) restarts(ctx context.Context) error {
	stopped, err := s.d.stop()
	if err != nil {
		return err
	}
	s.r.set("stop_ms", ms(stopped))

	if err := warm(s.d.ledger); err != nil {
		return err
	}
	res, err := resident(s.d.ledger)
	if err != nil {
		return err
	}
	s.r.set("resident_warm_pct", 100*res)
	s.printf("starting warm (%.0f%% of the ledger in the page cache)", 100*res)
	ready, answer, err := s.d.start(ctx)
	if err != nil {
		return fmt.Errorf("warm start: %w", err)
	}
	s.r.set("ready_warm_ms", ms(ready))
	s.r.set("answer_warm_ms", ms(answer))
	if _, err := s.d.stop(); err != nil {
		return err
	}

	how, err := evict(s.d.ledger, s.cfg.dropCaches)
	if err != nil {
		return err
	}
	s.r.Notes["cold start"] = how
	if res, err = resident(s.d.ledger); err != nil {
		return err
	}
	s.r.set("resident_cold_pct", 100*res)
	s.printf("starting cold (%s; %.1f%% of the ledger in the page cache)", how, 100*res)
	if ready, answer, err = s.d.start(ctx); err != nil {
		return fmt.Errorf("cold start: %w", err)
	}
	s.r.set("ready_cold_ms", ms(ready))
	s.r.set("answer_cold_ms", ms(answer))
	s.printf("ready in %.0f ms warm, %.0f ms cold", s.r.Figures["ready_warm_ms"], ms(ready))
	return nil
}

// afterRestart waits for the start-up listing (the engine lists every
// provider soon after it starts) and records the idle memory.
func (s *sizeRun) afterRestart(ctx context.Context) error {
	s.printf("waiting for the restarted daemon's start-up listing and for it to go idle")
	if err := s.settle(ctx, s.d.startedAt, "after the restart"); err != nil {
		return err
	}
	return s.memory(ctx, "restart")
}

// timeRepeated runs f up to 5 times, while the runs so far took less than
// 3 s in all, and returns the median time f returned.
func timeRepeated(ctx context.Context, f func() (time.Duration, error)) (time.Duration, error) {
	var ds []time.Duration
	var total time.Duration
	for len(ds) < 5 && total < 3*time.Second {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		d, err := f()
		if err != nil {
			return 0, err
		}
		ds, total = append(ds, d), total+d
	}
	return median(ds), nil
}

// page gets one page of GET /v1/sandboxes and checks its length.
func (s *sizeRun) page(ctx context.Context, query string, want int) (time.Duration, error) {
	var p api.ListPage
	took, err := s.d.get(ctx, "/v1/sandboxes"+query, &p)
	if err != nil {
		return 0, err
	}
	if len(p.Sandboxes) != want {
		return 0, fmt.Errorf("GET /v1/sandboxes%s: %d entries, want %d", query, len(p.Sandboxes), want)
	}
	return took, nil
}

// cli runs a reaperd client command against the daemon, with its output
// to stdout, and returns its wall time and peak RSS.
func (s *sizeRun) cli(ctx context.Context, stdout *os.File, out *bytes.Buffer, args ...string) (time.Duration, int64, error) {
	cmd := exec.CommandContext(ctx, s.bin, append([]string{"--socket", s.d.sock, "--timeout", "10m"}, args...)...)
	var stderr bytes.Buffer
	if stdout != nil {
		cmd.Stdout = stdout
	} else {
		cmd.Stdout = out
	}
	cmd.Stderr = &stderr
	t0 := time.Now()
	err := cmd.Run()
	took := time.Since(t0)
	if err != nil {
		return 0, 0, fmt.Errorf("reaperd %v: %w: %s", args, err, bytes.TrimSpace(stderr.Bytes()))
	}
	var rss int64
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rss = ru.Maxrss << 10 // KiB on Linux
	}
	return took, rss, nil
}

// reads times the reads that grow with the ledger.
func (s *sizeRun) reads(ctx context.Context) error {
	n, r := s.n, s.r
	s.printf("timing reads")
	first, err := timeRepeated(ctx, func() (time.Duration, error) { return s.page(ctx, "", min(n, api.DefaultListPage)) })
	if err != nil {
		return err
	}
	r.set("first_page_ms", ms(first))

	cl := api.NewClient(s.d.sock)
	cl.Timeout = 10 * time.Minute
	listed := 0
	t0 := time.Now()
	err = cl.EntryPages(ctx, reaper.EntryFilter{Provider: "e2b"}, 0, func(p []api.EntryView) error {
		listed += len(p)
		return nil
	})
	if err != nil {
		return fmt.Errorf("list every entry through the API: %w", err)
	}
	r.set("list_api_s", seconds(time.Since(t0)))
	if listed != n {
		return fmt.Errorf("listing every entry through the API gave %d entries, want %d", listed, n)
	}

	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer devnull.Close()
	pid := s.d.pid()
	if err := resetPeak(pid); err != nil {
		return err
	}
	before, err := readMemory(pid)
	if err != nil {
		return err
	}
	took, rss, err := s.cli(ctx, devnull, nil, "list", "-o", "json")
	if err != nil {
		return err
	}
	after, err := readMemory(pid)
	if err != nil {
		return err
	}
	r.set("list_cli_s", seconds(took))
	r.set("list_cli_maxrss_mib", mib(rss))
	r.set("list_daemon_hwm_mib", mib(max(0, after.HWM-before.RSS)))

	closing, err := timeRepeated(ctx, func() (time.Duration, error) { return s.page(ctx, "?state=closing", 0) })
	if err != nil {
		return err
	}
	r.set("closing_ms", ms(closing))
	scan, err := timeRepeated(ctx, func() (time.Duration, error) { return s.page(ctx, "?state=released", 0) })
	if err != nil {
		return err
	}
	r.set("scan_ms", ms(scan))

	var out bytes.Buffer
	took, _, err = s.cli(ctx, nil, &out, "sweep", "--dry-run", "-o", "json")
	if err != nil {
		return err
	}
	var rep reaper.SweepReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		return fmt.Errorf("reaperd sweep --dry-run -o json: %w", err)
	}
	if len(rep.Items) > 0 || rep.Waiting != n {
		return fmt.Errorf("reaperd sweep --dry-run: %d due, %d waiting; want none due and %d waiting (did entries fall due?)", len(rep.Items), rep.Waiting, n)
	}
	r.set("sweep_dry_run_ms", ms(took))
	return nil
}
