package ledgertest

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/reaperd/reaperd/reaper"
)

// NopProvider is a reaper.Provider named Type that closes nothing and
// lists nothing: enough for tests and benchmarks that only register.
type NopProvider struct{ Type string }

func (p NopProvider) Name() string                        { return p.Type }
func (p NopProvider) Close(context.Context, string) error { return nil }
func (p NopProvider) List(context.Context, reaper.ListFilter) ([]reaper.Sandbox, error) {
	return nil, nil
}

var runs atomic.Int64

// NextRun numbers the benchmark runs of the process, so that no two runs
// register the same ids.
func NextRun() int64 { return runs.Add(1) }

// AgentRegistration is what an agent session sends when it creates a
// sandbox: the n-th distinct id of the run, the client's session, a ttl,
// a lease and a label.
func AgentRegistration(provider string, run int64, client int, n int64) reaper.RegisterRequest {
	return reaper.RegisterRequest{
		Provider: provider,
		ID:       ScatteredID(uint64(run), uint64(n)),
		Session:  fmt.Sprintf("agent-r%d-%02d", run, client),
		TTL:      reaper.Duration(30 * time.Minute),
		Lease:    reaper.Duration(2 * time.Minute),
		Labels:   map[string]string{"task": "bench"},
	}
}

// ScatteredID returns the n-th sandbox id of a run: distinct for distinct
// (run, n), and shaped and scattered like the random UUIDs providers hand
// out, so that ids land all over the key space as real ones do (sequential
// ids would only ever append to the end of the entries bucket).
func ScatteredID(run, n uint64) string {
	hi, lo := mix(run<<40|n), mix(^(run<<40 | n))
	return fmt.Sprintf("%08x-%04x-4%03x-%04x-%012x", hi>>32, hi>>16&0xffff, hi&0xfff, lo>>48, lo&0xffffffffffff)
}

// mix is splitmix64's finalizer, a bijection on uint64.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
