package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/reaperd/reaperd/reaper"
	bolt "go.etcd.io/bbolt"
)

// baselineResult is what raw bbolt did on the same disk.
type baselineResult struct {
	ops       int
	perSecond float64
	valueSize int
}

// baselineValue is an entry-sized value: the JSON of the entry one
// registration makes, as the raw bbolt baselines of ledger/bench_test.go
// write.
func baselineValue() []byte {
	owner := uint32(1000)
	now := time.Now().UTC()
	v, _ := json.Marshal(&reaper.Entry{Provider: "e2b", ID: "00000000-0000-4000-0000-000000000000", Session: "scale-00",
		Labels: map[string]string{"task": "scale"}, RegisteredAt: now, ExpiresAt: now.Add(24 * time.Hour),
		State: reaper.StateActive, Owner: &owner})
	return v
}

// baseline writes ops values with random keys into a fresh bbolt file at
// path, opened as ledger.Open opens the ledger (map freelist, written at
// each commit; fsync on), from clients goroutines, each write a db.Batch of
// one Put, with MaxBatchSize clients (MaxBatchDelay: bbolt's 10 ms).
func baseline(ctx context.Context, path string, ops, clients int) (baselineResult, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{FreelistType: bolt.FreelistMapType, NoSync: false, NoFreelistSync: false})
	if err != nil {
		return baselineResult{}, fmt.Errorf("baseline: open %s: %w", path, err)
	}
	defer db.Close()
	db.MaxBatchSize = clients
	bucket := []byte("entries")
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket(bucket)
		return err
	}); err != nil {
		return baselineResult{}, fmt.Errorf("baseline: %w", err)
	}
	val := baselineValue()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	t0 := time.Now()
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(t0.UnixNano()), uint64(c)))
			for ctx.Err() == nil && next.Add(1) <= int64(ops) {
				hi, lo := rng.Uint64(), rng.Uint64()
				key := fmt.Appendf(nil, "e2b/%08x-%04x-4%03x-%04x-%012x", hi>>32, hi>>16&0xffff, hi&0xfff, lo>>48, lo&0xffffffffffff)
				if err := db.Batch(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put(key, val) }); err != nil {
					errs <- fmt.Errorf("baseline: put: %w", err)
					next.Store(int64(ops))
					return
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(t0)
	close(errs)
	if err := <-errs; err != nil {
		return baselineResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return baselineResult{}, err
	}
	var keys int
	if err := db.View(func(tx *bolt.Tx) error {
		keys = tx.Bucket(bucket).Stats().KeyN
		return nil
	}); err != nil {
		return baselineResult{}, fmt.Errorf("baseline: count: %w", err)
	}
	if keys != ops {
		return baselineResult{}, fmt.Errorf("baseline: %d keys after %d puts (random keys collided?)", keys, ops)
	}
	return baselineResult{ops: ops, perSecond: float64(ops) / took.Seconds(), valueSize: len(val)}, nil
}
