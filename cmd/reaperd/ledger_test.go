package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/reaperd/reaperd/api"
	"github.com/reaperd/reaperd/ledger"
	"github.com/reaperd/reaperd/reaper"
	bolt "go.etcd.io/bbolt"
)

// ledgerKeys opens a ledger file (no daemon may hold it) and returns its
// entries' keys.
func ledgerKeys(t *testing.T, path string) map[string]bool {
	t.Helper()
	db, err := ledger.Open(path, ledger.Options{})
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer db.Close()
	keys := map[string]bool{}
	err = db.View(context.Background(), func(tx reaper.Tx) error {
		return tx.Entries(reaper.EntryFilter{}, func(e *reaper.Entry) error { keys[e.Key()] = true; return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func filesIn(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

// TestLedgerBackupUnderLoad backs up a real daemon's ledger while eight
// clients keep registering: the copy checks clean, opens as a ledger, and
// holds every registration answered before the backup started.
func TestLedgerBackupUnderLoad(t *testing.T) {
	d, _ := e2bDaemon(t, "--schedule", "@every 1h")
	c := api.NewClient(d.socket)
	ctx := context.Background()
	var mu sync.Mutex
	var answered []string
	register := func(id, session string) error {
		r := reaper.RegisterRequest{Provider: "e2b", ID: id, Session: session, TTL: reaper.Duration(time.Hour),
			Labels: map[string]string{"team": "load"}}
		if _, err := c.Register(ctx, r); err != nil {
			return err
		}
		mu.Lock()
		answered = append(answered, "e2b/"+id)
		mu.Unlock()
		return nil
	}
	for i := range 100 {
		if err := register(fmt.Sprintf("pre-%03d", i), ""); err != nil {
			t.Fatal(err)
		}
	}

	stop := make(chan struct{})
	var stopOnce sync.Once
	var wg sync.WaitGroup
	stopWriters := func() {
		stopOnce.Do(func() { close(stop) })
		wg.Wait()
	}
	var done atomic.Int64
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := register(fmt.Sprintf("w%d-%06d", w, i), fmt.Sprintf("load-%d", w)); err != nil {
					errs <- err
					return
				}
				done.Add(1)
			}
		}()
	}
	defer stopWriters()
	eventually(t, 20*time.Second, "200 registrations under load", func() bool { return done.Load() >= 200 })

	mu.Lock()
	before := append([]string(nil), answered...)
	mu.Unlock()
	atStart := done.Load()
	dest := filepath.Join(t.TempDir(), "backup.db")
	out, errOut, code := d.cli("ledger", "backup", dest)
	during := done.Load() - atStart
	if code != 0 || !strings.Contains(out, "backed up the ledger to "+dest) {
		t.Fatalf("ledger backup = exit %d: %s%s", code, out, errOut)
	}
	// The daemon keeps serving: registrations go on after the backup.
	after := done.Load()
	eventually(t, 20*time.Second, "registrations after the backup", func() bool { return done.Load() >= after+50 })
	stopWriters()
	select {
	case err := <-errs:
		t.Fatalf("a registration failed under load: %v", err)
	default:
	}
	t.Logf("%d registrations answered before the backup started, %d during it", len(before), during)

	out, errOut, code = runCLI("", "ledger", "check", dest)
	if code != 0 || !strings.Contains(out, "ledger "+dest+": ok") || !strings.Contains(out, "sessions:     8") {
		t.Fatalf("ledger check of the backup = exit %d:\n%s%s", code, out, errOut)
	}
	got := ledgerKeys(t, dest)
	for _, k := range before {
		if !got[k] {
			t.Fatalf("%s was registered before the backup started, but is not in it", k)
		}
	}
	mu.Lock()
	total := len(answered)
	mu.Unlock()
	if len(got) < len(before) || len(got) > total+8 {
		t.Fatalf("the backup holds %d entries; want between the %d answered before it and the %d sent in all", len(got), len(before), total+8)
	}
}

// TestLedgerBackupRefusals: an existing file needs --force, a missing
// daemon leaves nothing behind, and bad arguments are usage errors.
func TestLedgerBackupRefusals(t *testing.T) {
	d, _ := e2bDaemon(t, "--schedule", "@every 1h")
	d.mustCLI("register", "e2b/sbx-1", "--ttl", "1h")
	dir := t.TempDir()
	dest := filepath.Join(dir, "backup.db")
	if err := os.WriteFile(dest, []byte("yesterday's"), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		socket string // "": the daemon's
		args   []string
		code   int
		stderr string
	}{
		{"existing file", "", []string{"ledger", "backup", dest}, exitError, "file exists: give --force to replace it"},
		{"no daemon", filepath.Join(dir, "none.sock"), []string{"ledger", "backup", filepath.Join(dir, "other.db")}, exitNoDaemon, "reaperd is not running"},
		{"missing directory", "", []string{"ledger", "backup", filepath.Join(dir, "no", "such.db")}, exitError, "no such file or directory"},
		{"no file", "", []string{"ledger", "backup"}, exitUsage, "backup needs the file to write"},
		{"no command", "", []string{"ledger"}, exitUsage, "ledger needs a command: backup, check or compact"},
		{"unknown command", "", []string{"ledger", "restore", dest}, exitUsage, `unknown ledger command "restore"`},
		{"compact with too many files", "", []string{"ledger", "compact", "a", "b", "c"}, exitUsage, "compact needs the ledger file"},
		{"check without a file", "", []string{"ledger", "check"}, exitUsage, "check needs the ledger file to check"},
		{"check a file that is not there", "", []string{"ledger", "check", filepath.Join(dir, "none.db")}, exitError, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			socket := d.socket
			if tt.socket != "" {
				socket = tt.socket
			}
			out, errOut, code := runCLI(socket, tt.args...)
			if code != tt.code || !strings.Contains(errOut, tt.stderr) {
				t.Fatalf("reaperd %s = exit %d, stderr %q; want exit %d mentioning %q (stdout %q)",
					strings.Join(tt.args, " "), code, errOut, tt.code, tt.stderr, out)
			}
			if lines := strings.Split(strings.TrimRight(errOut, "\n"), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "reaperd: ") {
				t.Errorf("stderr %q is not one \"reaperd: \" line", errOut)
			}
		})
	}
	if got, _ := os.ReadFile(dest); string(got) != "yesterday's" {
		t.Fatalf("the refused backup changed the existing file")
	}
	if names := filesIn(t, dir); len(names) != 1 {
		t.Fatalf("after the refusals the directory holds %v, want only the existing file", names)
	}

	out, errOut, code := d.cli("ledger", "backup", dest, "--force")
	if code != 0 {
		t.Fatalf("ledger backup --force = exit %d: %s%s", code, out, errOut)
	}
	if keys := ledgerKeys(t, dest); !keys["e2b/sbx-1"] {
		t.Fatalf("the replaced backup holds %v, want e2b/sbx-1", keys)
	}
}

// TestLedgerCheckFindsABrokenIndex breaks a ledger's deadline index with a
// raw bbolt write: check names the bucket and key and exits 1.
func TestLedgerCheckFindsABrokenIndex(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	db, err := ledger.Open(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	expires := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	err = db.Update(context.Background(), func(tx reaper.Tx) error {
		return tx.PutEntry(&reaper.Entry{Provider: "e2b", ID: "sbx-1", State: reaper.StateActive,
			RegisteredAt: expires.Add(-time.Hour), ExpiresAt: expires})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := runCLI("", "ledger", "check", path); code != 0 || !strings.Contains(out, "entries:      1 (1 active, 0 closing, 0 closed, 0 released)") {
		t.Fatalf("check of the intact ledger = exit %d:\n%s%s", code, out, errOut)
	}

	bdb, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 9, 9+len("e2b/sbx-1"))
	binary.BigEndian.PutUint64(key, uint64(expires.UnixNano()))
	key[8] = 'e'
	key = append(key, "e2b/sbx-1"...)
	err = bdb.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("deadlines")).Delete(key) })
	bdb.Close()
	if err != nil {
		t.Fatal(err)
	}

	out, errOut, code := runCLI("", "ledger", "check", path)
	want := "deadlines[2026-06-01T12:00:00Z entry e2b/sbx-1]: missing: active entry e2b/sbx-1 is due then"
	if code != exitError || !strings.HasPrefix(out, want) || strings.Count(out, "\n") != 1 {
		t.Fatalf("check of the broken ledger = exit %d, stdout %q; want exit 1 and one line starting %q", code, out, want)
	}
	if errOut != "reaperd: ledger "+path+" has 1 problems\n" {
		t.Fatalf("stderr = %q", errOut)
	}
	out, _, code = runCLI("", "ledger", "check", path, "-o", "json")
	var rep ledger.CheckReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != exitError {
		t.Fatalf("check -o json = exit %d, %v:\n%s", code, err, out)
	}
	if len(rep.Findings) != 1 || rep.Findings[0].Bucket != "deadlines" || rep.Findings[0].Key != "2026-06-01T12:00:00Z entry e2b/sbx-1" {
		t.Fatalf("check -o json findings = %+v", rep.Findings)
	}
}

// TestLedgerOfflineToolsAndRunningDaemon: check and compact refuse the
// ledger of a running daemon at once, with a message that says what to do;
// once it stops, compact writes a copy that checks clean, and a daemon
// started on the ledger compacted in place serves the same entries.
func TestLedgerOfflineToolsAndRunningDaemon(t *testing.T) {
	d, _ := e2bDaemon(t, "--schedule", "@every 1h")
	d.mustCLI("register", "e2b/sbx-1", "--ttl", "1h", "--session", "s1")
	d.mustCLI("register", "e2b/sbx-2", "--ttl", "1h", "--keep")
	for _, tt := range []struct {
		cmd, says string
	}{
		{"check", "stop the daemon, or check a backup"},
		{"compact", "stop the daemon, or compact a backup"},
	} {
		start := time.Now()
		out, errOut, code := runCLI("", "ledger", tt.cmd, d.ledger)
		if code != exitError || !strings.Contains(errOut, tt.says) || !strings.Contains(errOut, "locked") {
			t.Fatalf("ledger %s of a running daemon's ledger = exit %d, stderr %q (stdout %q); want exit 1 saying %q",
				tt.cmd, code, errOut, out, tt.says)
		}
		if el := time.Since(start); el > 3*time.Second {
			t.Fatalf("ledger %s took %s to refuse; want it fast", tt.cmd, el)
		}
	}
	if names := filesIn(t, d.dir); strings.Contains(strings.Join(names, " "), "compact") {
		t.Fatalf("a refused compaction left %v", names)
	}

	if code := d.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("daemon exit %d on SIGTERM", code)
	}
	if out, errOut, code := runCLI("", "ledger", "check", d.ledger); code != 0 {
		t.Fatalf("check of the stopped daemon's ledger = exit %d:\n%s%s", code, out, errOut)
	}
	out, errOut, code := runCLI("", "ledger", "compact", d.ledger)
	if code != 0 || !strings.Contains(out, "compacted "+d.ledger) || !strings.Contains(out, "into "+d.ledger+".compact") {
		t.Fatalf("ledger compact = exit %d:\n%s%s", code, out, errOut)
	}
	if out, errOut, code := runCLI("", "ledger", "check", d.ledger+".compact"); code != 0 || !strings.Contains(out, "sessions:     1") {
		t.Fatalf("check of the compacted ledger = exit %d:\n%s%s", code, out, errOut)
	}
	if keys := ledgerKeys(t, d.ledger+".compact"); !keys["e2b/sbx-1"] || !keys["e2b/sbx-2"] || len(keys) != 2 {
		t.Fatalf("the compacted ledger holds %v, want e2b/sbx-1 and e2b/sbx-2", keys)
	}

	if _, errOut, code := runCLI("", "ledger", "compact", d.ledger, d.ledger); code != exitError || !strings.Contains(errOut, "give --force") {
		t.Fatalf("compact in place without --force = exit %d, %q; want it refused", code, errOut)
	}
	if out, errOut, code := runCLI("", "ledger", "compact", d.ledger, d.ledger, "--force"); code != 0 {
		t.Fatalf("compact in place = exit %d:\n%s%s", code, out, errOut)
	}
	d.start("--schedule", "@every 1h")
	ents := listJSON(t, d)
	if e, ok := ents["e2b/sbx-2"]; !ok || !e.Keep || ents["e2b/sbx-1"].Session != "s1" {
		t.Fatalf("after compaction in place the daemon lists %v", ents)
	}
}

// TestLedgerBackupAcrossUsers runs `reaperd ledger backup` as real
// processes of other users against a daemon running as root: another user
// is refused and no file is left; a member of the admin group gets a copy.
func TestLedgerBackupAcrossUsers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: running client processes under other uids needs root (CI runs as root)")
	}
	bin := sharedTestBinary(t)
	sockDir := sharedTempDir(t, 0, 0)
	cfg := writeConfig(t, fmt.Sprintf("admin_group = \"%d\"\ndiscover = false\n", adminGID))
	d, _ := e2bDaemon(t, "--socket", filepath.Join(sockDir, "r.sock"), "--config", cfg, "--schedule", "@every 1h")
	d.mustCLI("register", "e2b/sbx-1", "--ttl", "1h")

	other := osUser{uid: uidOther, groups: []uint32{0}}
	admin := osUser{uid: uidAdmin, groups: []uint32{0, adminGID}}
	otherDir := sharedTempDir(t, uidOther, uidOther)
	out, errOut, code := runAs(t, bin, d.socket, other, "ledger", "backup", filepath.Join(otherDir, "b.db"))
	if code != exitError || !strings.Contains(errOut, "only root, the daemon's user or a member of the admin group may back it up, not uid 1002") {
		t.Fatalf("backup as uid %d = exit %d, stderr %q (stdout %q); want refused", uidOther, code, errOut, out)
	}
	if names := filesIn(t, otherDir); len(names) != 0 {
		t.Fatalf("the refused backup left %v", names)
	}
	if status, eb := rawAs(t, bin, d.socket, other, "GET", "/v1/ledger/backup"); status != 403 || eb.Error.Code != reaper.EFORBIDDEN {
		t.Fatalf("GET /v1/ledger/backup as uid %d = %d %+v, want 403 forbidden", uidOther, status, eb.Error)
	}

	adminDir := sharedTempDir(t, uidAdmin, uidAdmin)
	dest := filepath.Join(adminDir, "b.db")
	if out, errOut, code := runAs(t, bin, d.socket, admin, "ledger", "backup", dest); code != 0 {
		t.Fatalf("backup as an admin group member = exit %d:\n%s%s", code, out, errOut)
	}
	fi, err := os.Stat(dest)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != uidAdmin || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the backup is owned by uid %d, mode %v; want uid %d, 0600", st.Uid, fi.Mode(), uidAdmin)
	}
	if keys := ledgerKeys(t, dest); !keys["e2b/sbx-1"] {
		t.Fatalf("the admin's backup holds %v", keys)
	}
}
