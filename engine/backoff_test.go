package engine_test

import (
	"testing"
	"time"

	"github.com/reaperd/reaperd/engine"
	"github.com/reaperd/reaperd/reaper"
)

func TestBackoff(t *testing.T) {
	min, max := 5*time.Second, 15*time.Minute
	rl := &reaper.ProviderError{Provider: "e2b", Op: "close", Kind: reaper.ErrRateLimited, RetryAfter: 42 * time.Second}
	rlShort := &reaper.ProviderError{Provider: "e2b", Op: "close", Kind: reaper.ErrRateLimited, RetryAfter: time.Second}
	unauth := &reaper.ProviderError{Provider: "e2b", Op: "close", Kind: reaper.ErrUnauthorized}
	rlYear := &reaper.ProviderError{Provider: "runloop", Op: "close", Kind: reaper.ErrRateLimited, RetryAfter: 1e9 * time.Second}
	transient := &reaper.ProviderError{Provider: "e2b", Op: "close", Kind: reaper.ErrTransient}
	tests := []struct {
		name   string
		n      int
		err    error
		jitter float64
		want   time.Duration
	}{
		{"first attempt, no jitter: half of min", 1, transient, 0, 2500 * time.Millisecond},
		{"first attempt, max jitter: just under min", 1, transient, 0.999999, 5 * time.Second},
		{"doubles per attempt", 3, transient, 0, 10 * time.Second},
		{"capped at max", 30, transient, 0, max / 2},
		{"capped at max, full jitter", 30, transient, 1, max},
		{"retry-after honoured when longer", 1, rl, 0, 42 * time.Second},
		{"retry-after jitter adds at most 10%", 1, rl, 0.5, 42*time.Second + 2100*time.Millisecond},
		{"short retry-after does not shorten the backoff", 4, rlShort, 0, 20 * time.Second},
		{"unauthorized waits at least a minute", 1, unauth, 0, time.Minute},
		{"attempt 0 treated as 1", 0, transient, 0, 2500 * time.Millisecond},
		{"a year's retry-after is capped at max", 1, rlYear, 0, max},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := engine.Backoff(tt.n, min, max, tt.err, tt.jitter)
			if d := got - tt.want; d < -time.Millisecond || d > time.Millisecond {
				t.Errorf("Backoff(%d) = %v, want %v", tt.n, got, tt.want)
			}
		})
	}
	// A max under a minute caps even the unauthorized floor.
	if got := engine.Backoff(1, time.Second, 30*time.Second, unauth, 0); got != 30*time.Second {
		t.Errorf("Backoff(unauthorized, max 30s) = %v, want 30s", got)
	}
}
