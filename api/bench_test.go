package api_test

// BenchmarkRegister64 measures durable registrations per second through the
// real HTTP handler and ledger with 64 concurrent clients (target: at least
// 15,000/s; see docs/benchmarks.md). The ledger-level baselines (Engine
// without HTTP, raw bbolt) are BenchmarkRegister64 in package ledger.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/reaperd/reaperd/api"
	"github.com/reaperd/reaperd/engine"
	"github.com/reaperd/reaperd/ledger"
	"github.com/reaperd/reaperd/ledger/ledgertest"
	"github.com/reaperd/reaperd/reaper"
	bolt "go.etcd.io/bbolt"
)

// benchClients is the number of concurrent clients: 64 agent sessions
// registering at once.
const benchClients = 64

// benchServer returns the API server the daemon would run (metrics on, a
// logger that discards, the engine running so that every registration
// wakes it as in the daemon) on a fresh ledger opened with o.
func benchServer(b *testing.B, o ledger.Options) (*api.Server, *ledger.DB) {
	b.Helper()
	db, err := ledger.Open(filepath.Join(b.TempDir(), "ledger.db"), o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	eng := &engine.Engine{
		Store:     db,
		Providers: engine.ProviderSet{Enabled: map[string]reaper.Provider{"bench": ledgertest.NopProvider{Type: "bench"}}},
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		Metrics:   engine.NewMetrics(prometheus.NewRegistry()),
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	b.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			b.Errorf("engine: %v", err)
		}
	})
	return &api.Server{Service: eng, Logger: eng.Logger}, db
}

// benchParallel runs op b.N times in all over exactly benchClients
// goroutines and reports registrations per second, then checks that the
// ledger holds b.N entries.
func benchParallel(b *testing.B, db *ledger.DB, op func(client int, n int64) error) {
	b.Helper()
	ledgertest.Parallel(b, benchClients, "reg/s", op)
	err := db.Bolt().View(func(tx *bolt.Tx) error {
		if got := tx.Bucket([]byte("entries")).Stats().KeyN; got != b.N {
			return fmt.Errorf("ledger holds %d entries after %d registrations", got, b.N)
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

// benchUnix serves the handler as the daemon does (http.Server with peer
// credentials, on a Unix socket) and registers through 64 api.Clients, one
// per agent, each on its own keep-alive connection.
func benchUnix(o ledger.Options) func(b *testing.B) {
	return func(b *testing.B) {
		srv, db := benchServer(b, o)
		sock := filepath.Join(b.TempDir(), "s.sock")
		ln, err := net.Listen("unix", sock)
		if err != nil {
			b.Fatal(err)
		}
		var conns atomic.Int64
		hs := &http.Server{Handler: srv.Handler(), ConnContext: api.ConnContext,
			ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
			ConnState: func(_ net.Conn, s http.ConnState) {
				if s == http.StateNew {
					conns.Add(1)
				}
			}}
		go hs.Serve(ln)
		b.Cleanup(func() { hs.Close() })

		clients := make([]*api.Client, benchClients)
		for i := range clients {
			clients[i] = api.NewClient(sock)
		}
		run := ledgertest.NextRun()
		ctx := context.Background()
		benchParallel(b, db, func(c int, n int64) error {
			ent, err := clients[c].Register(ctx, ledgertest.AgentRegistration("bench", run, c, n))
			if err == nil && ent.Owner == nil {
				err = errors.New("no owner: peer credentials were not recorded")
			}
			return err
		})
		if n := conns.Load(); n > benchClients {
			b.Fatalf("%d connections for %d clients: keep-alive is not working", n, benchClients)
		}
	}
}

// benchHandler calls the handler directly with an httptest recorder, the
// caller's uid in the request context as ConnContext would put it.
func benchHandler(o ledger.Options) func(b *testing.B) {
	return func(b *testing.B) {
		srv, db := benchServer(b, o)
		h := srv.Handler()
		run := ledgertest.NextRun()
		ctx := reaper.WithCaller(context.Background(), reaper.Caller{UID: 1000, PID: 1})
		benchParallel(b, db, func(c int, n int64) error {
			body, err := json.Marshal(ledgertest.AgentRegistration("bench", run, c, n))
			if err != nil {
				return err
			}
			req := httptest.NewRequestWithContext(ctx, "POST", "/v1/sandboxes", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusCreated {
				return fmt.Errorf("status %d: %s", rec.Code, rec.Body)
			}
			return nil
		})
	}
}

// BenchmarkRegister64 measures registrations with 64 concurrent clients.
//
//   - path=http-unix: api.Server.Handler() in an http.Server on a real
//     Unix socket, 64 api.Clients (keep-alive).
//   - path=handler: the handler called directly (httptest recorder).
//
// fsync=on is the daemon's ledger; fsync=off opens it with
// Options.NoSync, to show that the fsync=on figures pay for fsync.
// Sub-benchmark names are key=value so that benchstat can put them in
// columns: benchstat -col /fsync, or -col /path.
func BenchmarkRegister64(b *testing.B) {
	b.Run("path=http-unix/fsync=on", benchUnix(ledger.Options{}))
	b.Run("path=handler/fsync=on", benchHandler(ledger.Options{}))
	b.Run("path=http-unix/fsync=off", benchUnix(ledger.Options{NoSync: true}))
	b.Run("path=handler/fsync=off", benchHandler(ledger.Options{NoSync: true}))
}
