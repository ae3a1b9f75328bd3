package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/reaperd/reaperd/reaper"
)

// Credential states of a provider, from its last check (reaper.Checker).
const (
	credOK       = "ok"
	credRefused  = "refused"
	credDegraded = "degraded"
)

// recheckRefused is how often a provider whose credentials were refused is
// checked again (a provider's own authentication outage answers 401 too).
const recheckRefused = time.Minute

// checkCredentials runs the named providers' credential checks at once,
// each bounded by ListTimeout. A refusal (401/403) disables the provider
// until a reload or a later check passes: its registrations are refused
// with the reason, and its closes wait. Other failures mark it degraded.
func (e *Engine) checkCredentials(names []string) {
	var wg sync.WaitGroup
	for _, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.safely("credential check", func() { e.checkOne(name) })
		}()
	}
	wg.Wait()
}

func (e *Engine) checkOne(name string) {
	p, release := e.providers.acquireConfigured(name)
	defer release()
	q := e.providers.queue(name)
	if p == nil || q == nil {
		return
	}
	c, ok := p.Provider.(reaper.Checker)
	if !ok {
		return
	}
	ctx, cancel := withTimeout(e.workCtx, e.clock, e.listTimeout())
	err := safeCheck(ctx, c)
	cancel()
	if e.workCtx.Err() != nil {
		return
	}
	now := e.clock.Now()
	q.mu.Lock()
	was := q.credentials
	switch {
	case err == nil:
		q.credentials, q.credErr, q.lastOK = credOK, "", now
	case errors.Is(err, reaper.ErrUnauthorized):
		q.credentials, q.credErr = credRefused, err.Error()
	default:
		q.credentials, q.credErr = credDegraded, err.Error()
	}
	state := q.credentials
	q.mu.Unlock()
	e.updateProviderMetrics()
	log := e.logger().With(LogProvider, name)
	switch {
	case state == credRefused && was != credRefused:
		log.Error("the provider refused reaperd's credentials: it is disabled (registrations are refused, closes wait) until a reload, or a check a minute from now, passes",
			LogErr, err)
	case state == credDegraded && was != credDegraded:
		log.Warn("the provider's credential check failed; closes are tried anyway", LogErr, err)
	case state == credOK && was == credRefused:
		log.Info("the provider accepts reaperd's credentials again: it is enabled")
		go e.recoverProvider(name, "its credentials are accepted again")
	case state == credOK && was == "":
		log.Debug("credentials checked")
	}
}

func safeCheck(ctx context.Context, c reaper.Checker) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &reaper.ProviderError{Op: "check", Kind: reaper.ErrTransient, Err: fmt.Errorf("provider panicked: %v", r)}
		}
	}()
	return c.Check(ctx)
}

// recheckLoop checks again, every recheckRefused, the providers whose
// credentials were refused.
func (e *Engine) recheckLoop() {
	defer e.background.Done()
	t := e.clock.NewTimer(time.Hour)
	defer t.Stop()
	for {
		resetAt(e.clock, t, e.clock.Now().Add(recheckRefused))
		select {
		case <-e.workCtx.Done():
			return
		case <-t.Chan():
		}
		var refused []string
		for _, q := range e.providers.allQueues() {
			q.mu.Lock()
			if q.credentials == credRefused {
				refused = append(refused, q.name)
			}
			q.mu.Unlock()
		}
		e.checkCredentials(refused)
	}
}

// refusal returns why the provider is disabled by a refused credential
// check, or "".
func (q *closeQueue) refusal() string {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.credentials == credRefused {
		return q.credErr
	}
	return ""
}

// noteOK records a call the provider answered well.
func (q *closeQueue) noteOK(now time.Time) {
	q.mu.Lock()
	q.lastOK = now
	q.mu.Unlock()
}
