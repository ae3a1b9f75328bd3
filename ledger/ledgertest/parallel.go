package ledgertest

import (
	"sync"
	"sync/atomic"
	"testing"
)

// Parallel runs op b.N times in all, spread over exactly clients
// goroutines (whatever GOMAXPROCS is), as that many closed-loop clients
// would, and reports the rate as the metric unit ("reg/s"). op gets the
// client number and a call number unique in the run; the first error stops
// every client and fails the benchmark.
func Parallel(b *testing.B, clients int, unit string, op func(client int, n int64) error) {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Bool
	b.ResetTimer()
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !failed.Load() {
				n := next.Add(1)
				if n > int64(b.N) {
					return
				}
				if err := op(c, n); err != nil {
					if failed.CompareAndSwap(false, true) {
						b.Errorf("client %d, call %d: %v", c, n, err)
					}
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), unit)
}
