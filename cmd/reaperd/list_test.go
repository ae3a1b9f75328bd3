package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/reaperd/reaperd/api"
	"github.com/reaperd/reaperd/reaper"
)

// TestListFollowsPages: `reaperd list` prints every entry of a ledger
// larger than one page, in every format, as the pages come.
func TestListFollowsPages(t *testing.T) {
	d, _ := e2bDaemon(t, "--schedule", "@every 1h")
	const n = api.DefaultListPage + 5
	c := api.NewClient(d.socket)
	for i := range n {
		_, err := c.Register(context.Background(), reaper.RegisterRequest{Provider: "e2b", ID: fmt.Sprintf("sb%05d", i), TTL: reaper.Duration(3600e9)})
		if err != nil {
			t.Fatal(err)
		}
	}
	var ents []api.EntryView
	if err := json.Unmarshal([]byte(d.mustCLI("list", "-o", "json")), &ents); err != nil {
		t.Fatalf("list -o json is not one JSON array: %v", err)
	}
	if len(ents) != n || ents[0].Key != "e2b/sb00000" || ents[n-1].Key != fmt.Sprintf("e2b/sb%05d", n-1) {
		t.Errorf("list -o json: %d entries, first %s; want %d in key order", len(ents), ents[0].Key, n)
	}
	rows, err := csv.NewReader(strings.NewReader(d.mustCLI("list", "-o", "csv"))).ReadAll()
	if err != nil || len(rows) != n+1 || rows[0][0] != "SANDBOX" || rows[1][0] != "e2b/sb00000" {
		t.Errorf("list -o csv: %d rows (err %v), want a header and %d entries", len(rows), err, n)
	}
	table := d.mustCLI("list")
	if lines := strings.Count(table, "\n"); lines != n+1 || strings.Count(table, "SANDBOX") != 1 {
		t.Errorf("list: %d lines, %d headers; want a header and %d entries", lines, strings.Count(table, "SANDBOX"), n)
	}
	if err := json.Unmarshal([]byte(d.mustCLI("list", "-o", "json", "--limit", "1002")), &ents); err != nil || len(ents) != 1002 {
		t.Errorf("list --limit 1002: %d entries, %v", len(ents), err)
	}
	if out := d.mustCLI("list", "-o", "json", "--state", "closing"); strings.TrimSpace(out) != "[]" {
		t.Errorf("list of nothing = %q, want []", out)
	}
}
