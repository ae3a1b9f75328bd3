package engine

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/reaperd/reaperd/reaper"
	"golang.org/x/time/rate"
)

// ProviderSet is the providers a daemon runs with.
type ProviderSet struct {
	// Enabled are the providers with credentials, by name.
	Enabled map[string]reaper.Provider
	// Disabled names the providers reaperd knows but that are not enabled,
	// each with a one-line hint on how to enable it. Registering for one is
	// an EDISABLED error; any other unknown name is EUNKNOWN.
	Disabled map[string]string
	// Rates caps close calls per second per provider, with a burst of the
	// same (at least 1). A provider without a positive rate is not limited.
	Rates map[string]float64
	// Concurrency is the number of close workers of each provider. A
	// provider without one has Engine.Concurrency. A reload may raise it;
	// a lower figure takes effect at the next start.
	Concurrency map[string]int
}

// shutdowner is implemented by providers that hold connections to release
// (Modal's gRPC channel).
type shutdowner interface{ Shutdown() }

// provider is an enabled provider with its rate limiter. calls counts the
// calls outstanding, so that a provider replaced by a reload is shut down
// once the calls that still use it have ended.
type provider struct {
	reaper.Provider
	limiter *rate.Limiter // nil: not limited
	calls   sync.WaitGroup
}

// providerRegistry holds the current providers and one close queue per
// provider name ever enabled.
type providerRegistry struct {
	e        *Engine
	mu       sync.RWMutex
	enabled  map[string]*provider
	disabled map[string]string
	queues   map[string]*closeQueue
	workers  map[string]int // close workers wanted per provider; 0: the engine's
}

func (r *providerRegistry) init(e *Engine) {
	r.e = e
	r.enabled = map[string]*provider{}
	r.disabled = map[string]string{}
	r.queues = map[string]*closeQueue{}
	r.workers = map[string]int{}
}

// set installs a provider set. It returns the providers it replaced and the
// names that became enabled. A provider instance that stays (a reload that
// hands the same instance back) keeps its wrapper, so that its calls in
// flight are still counted.
func (r *providerRegistry) set(ps ProviderSet) (replaced []*provider, added []string) {
	r.mu.Lock()
	old := r.enabled
	next := map[string]*provider{}
	reused := map[*provider]bool{}
	for name, p := range ps.Enabled {
		var lim *rate.Limiter
		if rps := ps.Rates[name]; rps > 0 {
			lim = rate.NewLimiter(rate.Limit(rps), max(1, int(rps)))
		}
		if cur := old[name]; cur != nil && same(cur.Provider, p) {
			if !sameRate(cur.limiter, lim) {
				cur.limiter = lim
			}
			next[name] = cur
			reused[cur] = true
			continue
		}
		next[name] = &provider{Provider: p, limiter: lim}
	}
	r.enabled = next
	r.workers = maps.Clone(ps.Concurrency)
	if r.workers == nil {
		r.workers = map[string]int{}
	}
	r.disabled = maps.Clone(ps.Disabled)
	if r.disabled == nil {
		r.disabled = map[string]string{}
	}
	for name := range next {
		if _, ok := r.queues[name]; !ok {
			r.queues[name] = newCloseQueue(name, r.e.queueLimit())
		}
		if _, was := old[name]; !was {
			added = append(added, name)
		}
	}
	r.mu.Unlock()
	for _, p := range old {
		if !reused[p] {
			replaced = append(replaced, p)
		}
	}
	sort.Strings(added)
	return replaced, added
}

// concurrency returns how many close workers the provider wants; zero when
// the engine's default applies.
func (r *providerRegistry) concurrency(name string) int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.workers[name]
}

func sameRate(a, b *rate.Limiter) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Limit() == b.Limit() && a.Burst() == b.Burst()
}

func same(a, b reaper.Provider) (eq bool) {
	defer func() {
		if recover() != nil {
			eq = false // values of an incomparable type
		}
	}()
	return a == b
}

// acquire returns the enabled provider with the given name, counting a
// call on it, and the function that ends the call; nil when the provider
// is not enabled, or is disabled by refused credentials.
func (r *providerRegistry) acquire(name string) (*provider, func()) {
	if q := r.queue(name); q != nil && q.refusal() != "" {
		return nil, func() {}
	}
	return r.acquireConfigured(name)
}

// acquireConfigured is acquire for a provider whose credentials were
// refused too: for the check that may enable it again.
func (r *providerRegistry) acquireConfigured(name string) (*provider, func()) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	p := r.enabled[name]
	if p == nil {
		return nil, func() {}
	}
	p.calls.Add(1)
	return p, p.calls.Done
}

// current returns the enabled providers.
func (r *providerRegistry) current() []*provider {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*provider, 0, len(r.enabled))
	for _, p := range r.enabled {
		out = append(out, p)
	}
	return out
}

func (r *providerRegistry) isEnabled(name string) bool {
	r.mu.RLock()
	_, ok := r.enabled[name]
	q := r.queues[name]
	r.mu.RUnlock()
	return ok && (q == nil || q.refusal() == "")
}

func (r *providerRegistry) limiter(name string) *rate.Limiter {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if p := r.enabled[name]; p != nil {
		return p.limiter
	}
	return nil
}

func (r *providerRegistry) queue(name string) *closeQueue {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.queues[name]
}

func (r *providerRegistry) allQueues() []*closeQueue {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := slices.Sorted(maps.Keys(r.queues))
	out := make([]*closeQueue, 0, len(names))
	for _, n := range names {
		out = append(out, r.queues[n])
	}
	return out
}

func (r *providerRegistry) enabledNames() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return slices.Sorted(maps.Keys(r.enabled))
}

func (r *providerRegistry) disabledHints() map[string]string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return maps.Clone(r.disabled)
}

// check returns EUNKNOWN or EDISABLED unless the provider is enabled.
func (r *providerRegistry) check(name string) error {
	if err := reaper.ValidateProviderName(name); err != nil {
		return err
	}
	r.mu.RLock()
	_, enabled := r.enabled[name]
	hint, disabled := r.disabled[name]
	known := slices.Collect(maps.Keys(r.enabled))
	known = append(known, slices.Collect(maps.Keys(r.disabled))...)
	r.mu.RUnlock()
	if enabled {
		if q := r.queue(name); q != nil {
			if why := q.refusal(); why != "" {
				return reaper.Errorf(reaper.EDISABLED, "provider %s is disabled: it refused reaperd's credentials (%s); fix them and reload reaperd", name, why)
			}
		}
		return nil
	}
	if disabled {
		return reaper.Errorf(reaper.EDISABLED, "provider %s is not enabled on this daemon: %s", name, hint)
	}
	sort.Strings(known)
	if len(known) == 0 {
		return reaper.Errorf(reaper.EUNKNOWN, "unknown provider %q: this daemon has no providers", name)
	}
	return reaper.Errorf(reaper.EUNKNOWN, "unknown provider %q: reaperd knows %s", name, strings.Join(known, ", "))
}

func (r *providerRegistry) enableHint(name string) string {
	if q := r.queue(name); q != nil {
		if why := q.refusal(); why != "" {
			return "its credentials were refused (" + why + "): fix them and reload reaperd"
		}
	}
	r.mu.RLock()
	h, ok := r.disabled[name]
	r.mu.RUnlock()
	if ok && h != "" {
		return h
	}
	return "configure its credentials and restart reaperd"
}

// SetProviders replaces the providers, for a configuration reload. Close
// calls in flight finish with the provider they started with, which is
// then shut down (releasing its connections). Closes that waited because
// their provider was disabled are retried at once when it is enabled.
func (e *Engine) SetProviders(ps ProviderSet) {
	e.init()
	replaced, added := e.providers.set(ps)
	for _, p := range replaced {
		e.retire(p)
	}
	e.updateProviderMetrics()
	if e.state.Load() == stateRunning {
		e.startWorkers()
		for _, name := range added {
			go e.recoverProvider(name, "enabled by a reload")
		}
		// A reload re-reads credentials: check every provider again.
		e.background.Add(1)
		go func() {
			defer e.background.Done()
			e.checkCredentials(e.providers.enabledNames())
		}()
	}
}

// retire shuts a replaced provider down once its calls have ended.
func (e *Engine) retire(p *provider) {
	s, ok := p.Provider.(shutdowner)
	if !ok {
		return
	}
	e.background.Add(1)
	go func() {
		defer e.background.Done()
		p.calls.Wait()
		s.Shutdown()
	}()
}

func (e *Engine) updateProviderMetrics() {
	m := e.Metrics
	if m == nil {
		return
	}
	m.ProviderActive.Reset()
	for _, name := range e.providers.enabledNames() {
		if e.providers.isEnabled(name) {
			m.ProviderActive.WithLabelValues(name).Set(1)
		} else {
			m.ProviderActive.WithLabelValues(name).Set(0)
		}
	}
	for name := range e.providers.disabledHints() {
		m.ProviderActive.WithLabelValues(name).Set(0)
	}
	// Counters start at zero for every enabled provider, so that rates
	// and alerts see them before the first event.
	for _, name := range e.providers.enabledNames() {
		m.Registrations.WithLabelValues(name)
		m.Contradictions.WithLabelValues(name)
		m.Recoveries.WithLabelValues(name)
		for _, purpose := range []string{"discovery", "confirmation"} {
			m.ListErrors.WithLabelValues(name, purpose)
		}
	}
}

// EnabledProviders returns the names of the enabled providers, sorted.
func (e *Engine) EnabledProviders() []string {
	e.init()
	return e.providers.enabledNames()
}

// DisabledProviders returns the known providers that are not enabled, with
// how to enable each.
func (e *Engine) DisabledProviders() map[string]string {
	e.init()
	return e.providers.disabledHints()
}

func disabledError(name, hint string) string {
	return fmt.Sprintf("provider %s is not enabled on this daemon; %s", name, hint)
}
