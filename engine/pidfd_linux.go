//go:build linux

package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/reaperd/reaperd/reaper"
	"golang.org/x/sys/unix"
)

const (
	// reconcileEvery is how often the pidfd watcher compares its watches
	// with the ledger's live sessions, which closes the pidfds of sessions
	// that ended otherwise (end-session, a lapsed lease). A registration
	// that names a pid makes it compare at once.
	reconcileEvery = time.Minute
	// fdReserveMin is the least number of open files left to everything
	// but pidfds (the ledger, sockets, provider connections): a quarter of
	// the limit, at least this many.
	fdReserveMin = 256
	// maxFDBudget bounds the pidfds held at once, whatever the limit.
	maxFDBudget = 1 << 20
)

// pidfdWatcher watches session processes through pidfds. One goroutine
// (run) owns every pidfd and blocks in poll(2) on all of them and on an
// eventfd that others write to wake it: a registration naming a pid
// (through Engine.pidWatch), a timer on the engine's clock, the engine's
// stop. A pidfd becomes readable when its process exits, so an exit is seen
// at once, and nothing runs while no process exits.
//
// A pidfd names one process, never a later one with the same pid; the
// start time recorded at registration is checked once the pidfd is open,
// so a pid reused before that counts as the session's process having
// exited. Sessions whose pidfd cannot be opened (the open-file budget is
// spent, or the pid is not a process leader) are checked every
// ProcessCheck, as the polling watcher does.
type pidfdWatcher struct {
	e     *Engine
	limit int // most pidfds held at once

	mu  sync.Mutex // orders kick against the eventfd's close
	efd int        // the eventfd; -1 once closed

	reconcile atomic.Bool // compare the watches with the ledger
	pollDue   atomic.Bool // check the sessions without a pidfd

	// The rest is owned by run's goroutine.
	pfds     []unix.PollFd // pfds[0] is the eventfd; pfds[i] is the pidfd of fds[i-1]
	fds      []*procWatch
	byID     map[string]*procWatch // every watched session, with or without a pidfd
	polled   int                   // watched sessions without a pidfd
	starved  int                   // those of them without one for want of descriptors
	exited   map[string]*procWatch // exits seen, not yet committed
	reconT   clockwork.Timer       // the periodic reconciliation
	pollT    clockwork.Timer       // the next check of sessions without a pidfd
	retryT   clockwork.Timer       // the retry after a ledger failure
	pollSet  bool                  // pollT is armed
	failures int                   // consecutive ledger failures
	warned   bool                  // the budget's exhaustion was logged
}

// procWatch is one watched session process.
type procWatch struct {
	id    string
	pid   int
	start uint64
	fd    int  // its pidfd, -1 when it has none
	slot  int  // index of its pidfd in pfds
	full  bool // it has none for want of descriptors
}

// openPidfdWatcher returns a pidfd watcher, or nil and why the process
// watcher polls instead.
func (e *Engine) openPidfdWatcher() (*pidfdWatcher, string) {
	switch {
	case e.ProcessAlive != nil:
		return nil, "an injected ProcessAlive decides which processes live"
	case e.maxPidfds < 0:
		return nil, "pidfds are turned off"
	}
	fd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		return nil, fmt.Sprintf("pidfd_open is unavailable (%v): it needs Linux 5.3 or later, allowed by any seccomp filter", err)
	}
	_ = unix.Close(fd)
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Sprintf("eventfd is unavailable (%v)", err)
	}
	limit := e.maxPidfds
	if limit == 0 {
		limit = pidfdBudget(e.logger())
	}
	return &pidfdWatcher{
		e: e, limit: limit, efd: efd,
		pfds:   []unix.PollFd{{Fd: int32(efd), Events: unix.POLLIN}},
		byID:   map[string]*procWatch{},
		exited: map[string]*procWatch{},
	}, ""
}

// pidfdBudget raises the soft limit on open files to the hard limit when
// it is lower (the Go runtime does so at start on Linux too), and returns
// how many pidfds the watcher may hold: the limit less a quarter of it, at
// least fdReserveMin, for everything else. Sessions beyond are polled.
func pidfdBudget(log *slog.Logger) int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		log.Warn("read the open-file limit; assuming 1024", LogErr, err)
		rl.Cur, rl.Max = 1024, 1024
	}
	if rl.Cur < rl.Max {
		raised := syscall.Rlimit{Cur: rl.Max, Max: rl.Max}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
			log.Warn("raise the open-file limit to its hard limit; sessions beyond the soft limit are polled",
				LogLimit, rl.Cur, LogErr, err)
		} else {
			log.Info("raised the open-file limit to its hard limit, to watch session processes", LogLimit, rl.Max)
			rl = raised
		}
	}
	n := int(min(rl.Cur, maxFDBudget))
	return max(0, n-max(n/4, fdReserveMin))
}

// run watches until the engine stops, then closes every descriptor it
// holds. It returns an error only when poll(2) fails, and the process
// watcher polls instead.
func (w *pidfdWatcher) run() error {
	e := w.e
	ctx, cancel := context.WithCancel(e.workCtx)
	defer w.closeAll()
	var forward sync.WaitGroup
	defer forward.Wait()
	defer cancel()
	defer context.AfterFunc(ctx, w.kick)()
	forward.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-e.pidWatch:
				w.reconcile.Store(true)
				w.kick()
			}
		}
	})
	w.reconT = e.clock.AfterFunc(reconcileEvery, w.raise(&w.reconcile))
	w.reconcile.Store(true) // sessions with a pid from the ledger
	for ctx.Err() == nil {
		e.safely("process watcher", func() { w.handle(ctx) })
		if ctx.Err() != nil {
			break
		}
		if _, err := unix.Poll(w.pfds, -1); err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return fmt.Errorf("poll pidfds: %w", err)
		}
		w.collect()
	}
	return nil
}

// raise returns a timer function that sets flag and wakes the watcher.
func (w *pidfdWatcher) raise(flag *atomic.Bool) func() {
	return func() {
		flag.Store(true)
		w.kick()
	}
}

// kick wakes the watcher from poll(2). It may be called from any goroutine,
// also after the watcher stopped.
func (w *pidfdWatcher) kick() {
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.efd >= 0 {
		_, _ = unix.Write(w.efd, one[:]) // EAGAIN: the counter is already set
	}
}

// handle does what the flags and the exits seen ask for.
func (w *pidfdWatcher) handle(ctx context.Context) {
	e := w.e
	var err error
	if w.reconcile.Swap(false) {
		w.reconT.Reset(reconcileEvery)
		if err = w.reconcileLedger(ctx); err != nil {
			w.reconcile.Store(true) // again after the backoff
		}
	}
	if w.pollDue.Swap(false) {
		w.pollSet = false
		w.checkPolled()
	}
	if w.starved > 0 && w.len() < w.limit {
		w.upgrade()
	}
	if err == nil && len(w.exited) > 0 {
		dead := make([]*reaper.Session, 0, len(w.exited))
		for _, pw := range w.exited {
			dead = append(dead, &reaper.Session{ID: pw.id, PID: pw.pid, PIDStart: pw.start})
		}
		if err = e.endExited(ctx, dead); err == nil {
			clear(w.exited)
		}
	}
	if w.polled > 0 && !w.pollSet {
		w.pollSet = true
		w.pollT = resetOrAfter(e.clock, w.pollT, e.processCheck(), w.raise(&w.pollDue))
	}
	switch {
	case err != nil && ctx.Err() != nil:
	case err != nil:
		w.failures++
		wait := ledgerBackoff(w.failures)
		if isPowerOfTwo(w.failures) {
			e.logger().Error("check session processes", LogErr, err, LogRetryIn, wait)
		}
		w.retryT = resetOrAfter(e.clock, w.retryT, wait, w.raise(&w.reconcile))
	default:
		w.failures = 0
	}
}

// resetOrAfter sets t to call f after d, making it when t is nil.
func resetOrAfter(clock clockwork.Clock, t clockwork.Timer, d time.Duration, f func()) clockwork.Timer {
	if t == nil {
		return clock.AfterFunc(d, f)
	}
	t.Reset(d)
	return t
}

// reconcileLedger makes the watches follow the ledger's live sessions with
// a pid: it opens pidfds for new ones and closes those of sessions that
// ended or changed their pid.
func (w *pidfdWatcher) reconcileLedger(ctx context.Context) error {
	live := map[string]procWatch{}
	err := w.e.view(ctx, func(tx reaper.Tx) error {
		clear(live)
		return tx.ProcessSessions(func(s *reaper.Session) error {
			live[s.ID] = procWatch{id: s.ID, pid: s.PID, start: s.PIDStart, fd: -1}
			return nil
		})
	})
	if err != nil {
		return err
	}
	same := func(a *procWatch, b procWatch, ok bool) bool { return ok && a.pid == b.pid && a.start == b.start }
	for id, pw := range w.byID {
		if l, ok := live[id]; !same(pw, l, ok) {
			w.unwatch(pw) // ended otherwise, or its pid changed
		}
	}
	for id, pw := range w.exited {
		if l, ok := live[id]; !same(pw, l, ok) {
			delete(w.exited, id)
		}
	}
	for id, l := range live {
		if _, ok := w.byID[id]; ok {
			continue
		}
		if _, ok := w.exited[id]; ok {
			continue
		}
		w.watch(l)
	}
	return nil
}

// len returns the number of pidfds held.
func (w *pidfdWatcher) len() int { return len(w.fds) }

// watch opens a pidfd for the session process l, or records that it
// exited, or polls it when no pidfd can be had.
func (w *pidfdWatcher) watch(l procWatch) {
	pw := &l
	if w.len() >= w.limit {
		w.poll(pw, nil)
		return
	}
	fd, err := unix.PidfdOpen(pw.pid, 0)
	switch {
	case errors.Is(err, unix.ESRCH):
		w.exited[pw.id] = pw
		return
	case err != nil:
		w.poll(pw, err)
		return
	}
	// The pidfd names whatever process has the pid now: it is the
	// session's only if it started when the session's did.
	if !w.e.processAlive(pw.pid, pw.start) {
		_ = unix.Close(fd)
		w.exited[pw.id] = pw
		return
	}
	pw.fd, pw.slot = fd, len(w.pfds)
	w.pfds = append(w.pfds, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
	w.fds = append(w.fds, pw)
	w.byID[pw.id] = pw
}

// poll watches pw without a pidfd: it is checked every ProcessCheck.
func (w *pidfdWatcher) poll(pw *procWatch, err error) {
	if !w.e.processAlive(pw.pid, pw.start) {
		w.exited[pw.id] = pw
		return
	}
	pw.fd = -1
	pw.full = err == nil || errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) || errors.Is(err, unix.ENOMEM)
	w.byID[pw.id] = pw
	w.polled++
	if pw.full {
		w.starved++
	}
	switch {
	case !pw.full:
		w.e.logger().Warn("cannot watch a session process with a pidfd; checking it every process_check",
			LogSession, pw.id, LogPID, pw.pid, LogErr, err, LogInterval, w.e.processCheck())
	case !w.warned:
		w.warned = true
		args := []any{LogMaxFDs, w.limit, LogInterval, w.e.processCheck()}
		if err != nil {
			args = append(args, LogErr, err)
		}
		w.e.logger().Warn("too many session processes for the open-file limit; checking the rest every process_check (raise LimitNOFILE)", args...)
	}
}

// unwatch stops watching pw, closing its pidfd.
func (w *pidfdWatcher) unwatch(pw *procWatch) {
	delete(w.byID, pw.id)
	if pw.fd < 0 {
		w.polled--
		if pw.full {
			w.starved--
		}
		return
	}
	_ = unix.Close(pw.fd)
	last := len(w.pfds) - 1
	if pw.slot != last {
		moved := w.fds[last-1]
		w.pfds[pw.slot] = w.pfds[last]
		w.fds[pw.slot-1] = moved
		moved.slot = pw.slot
	}
	w.pfds, w.fds = w.pfds[:last], w.fds[:last-1]
	pw.fd = -1
}

// collect reads what poll(2) reported: the eventfd is drained, and the
// sessions whose pidfd is readable have exited.
func (w *pidfdWatcher) collect() {
	if w.pfds[0].Revents != 0 {
		var buf [8]byte
		_, _ = unix.Read(w.efd, buf[:]) // EAGAIN: another poll drained it
		w.pfds[0].Revents = 0
	}
	// From the end, so that unwatch moves only descriptors already seen.
	for i := len(w.pfds) - 1; i >= 1; i-- {
		rev := w.pfds[i].Revents
		if rev == 0 {
			continue
		}
		w.pfds[i].Revents = 0
		pw := w.fds[i-1]
		w.unwatch(pw)
		switch {
		case rev&(unix.POLLIN|unix.POLLHUP) != 0:
			// Readable: the process exited (a zombie, or reaped).
			w.exited[pw.id] = pw
		default:
			// POLLERR or POLLNVAL: not a pidfd's answer. Look again.
			w.reconcile.Store(true)
		}
	}
}

// upgrade gives pidfds, while the budget allows, to the sessions polled for
// want of descriptors.
func (w *pidfdWatcher) upgrade() {
	var starved []*procWatch
	for _, pw := range w.byID {
		if pw.full {
			starved = append(starved, pw)
		}
	}
	for _, pw := range starved {
		if w.len() >= w.limit {
			return
		}
		w.unwatch(pw)
		w.watch(procWatch{id: pw.id, pid: pw.pid, start: pw.start, fd: -1})
		if again := w.byID[pw.id]; again != nil && again.full {
			return // the process is out of descriptors: later
		}
	}
}

// checkPolled checks the sessions watched without a pidfd.
func (w *pidfdWatcher) checkPolled() {
	for _, pw := range w.byID {
		if pw.fd < 0 && !w.e.processAlive(pw.pid, pw.start) {
			w.unwatch(pw)
			w.exited[pw.id] = pw
		}
	}
}

// closeAll stops the timers and closes every descriptor the watcher holds.
func (w *pidfdWatcher) closeAll() {
	for _, t := range []clockwork.Timer{w.reconT, w.pollT, w.retryT} {
		if t != nil {
			t.Stop()
		}
	}
	for _, pw := range w.fds {
		_ = unix.Close(pw.fd)
	}
	w.fds, w.pfds = nil, nil
	clear(w.byID)
	w.mu.Lock()
	defer w.mu.Unlock()
	_ = unix.Close(w.efd)
	w.efd = -1
}
