// Package ledgertest opens throwaway ledgers for tests.
package ledgertest

import (
	"path/filepath"
	"testing"

	"github.com/reaperd/reaperd/ledger"
	bolt "go.etcd.io/bbolt"
)

// Open opens a new ledger in a fresh temporary directory. On cleanup it
// closes the ledger, reopens the file and fails the test if bbolt's
// consistency check finds anything wrong.
func Open(tb testing.TB) *ledger.DB {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "ledger.db")
	db, err := ledger.Open(path, ledger.Options{})
	if err != nil {
		tb.Fatalf("open ledger: %v", err)
	}
	tb.Cleanup(func() {
		if err := db.Close(); err != nil {
			tb.Errorf("close ledger: %v", err)
		}
		Check(tb, path)
	})
	return db
}

// Check opens the ledger file at path read-only and runs bbolt's
// consistency check over it.
func Check(tb testing.TB, path string) {
	tb.Helper()
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		tb.Errorf("reopen ledger for check: %v", err)
		return
	}
	defer bdb.Close()
	err = bdb.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			tb.Errorf("ledger consistency check: %v", err)
		}
		return nil
	})
	if err != nil {
		tb.Errorf("check ledger: %v", err)
	}
}
