package api_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/reaperd/reaperd/api"
	"github.com/reaperd/reaperd/engine"
	"github.com/reaperd/reaperd/ledger"
	"github.com/reaperd/reaperd/ledger/ledgertest"
	"github.com/reaperd/reaperd/reaper"
)

const (
	backupSelf  = 1005 // the daemon's uid
	backupAdmin = 4242 // the admin group
)

func backupServer(t *testing.T) *api.Server {
	t.Helper()
	db := ledgertest.Open(t)
	eng := &engine.Engine{
		Store:     db,
		Providers: engine.ProviderSet{Enabled: map[string]reaper.Provider{"e2b": ledgertest.NopProvider{Type: "e2b"}}},
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		Access:    reaper.Access{Self: backupSelf, AdminGroups: []uint32{backupAdmin}},
	}
	srv := &api.Server{Service: eng, Ledger: db, Access: eng.Access}
	if status, body := do(t, srv, "POST", "/v1/sandboxes", `{"provider":"e2b","id":"sbx-1","ttl":"1h"}`); status != http.StatusCreated {
		t.Fatalf("register = %d %s", status, body)
	}
	return srv
}

// checkCopy writes a backup body to a file and checks it as a ledger.
func checkCopy(t *testing.T, body []byte) *ledger.CheckReport {
	t.Helper()
	path := filepath.Join(t.TempDir(), "copy.db")
	if err := os.WriteFile(path, body, 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err := ledger.Check(path)
	if err != nil {
		t.Fatalf("the backup is not a ledger: %v", err)
	}
	return rep
}

// TestBackupAccess: the ledger holds every user's registrations, so only
// root, the daemon's user and admin group members may copy it.
func TestBackupAccess(t *testing.T) {
	srv := backupServer(t)
	tests := []struct {
		name   string
		caller *reaper.Caller // nil: no caller (the daemon itself)
		status int
	}{
		{"no caller", nil, http.StatusOK},
		{"root", &reaper.Caller{UID: 0, GID: 0}, http.StatusOK},
		{"the daemon's user", &reaper.Caller{UID: backupSelf, GID: backupSelf}, http.StatusOK},
		{"an admin group member", &reaper.Caller{UID: 1003, GID: 1003, Groups: []uint32{backupAdmin}}, http.StatusOK},
		{"an admin by primary group", &reaper.Caller{UID: 1003, GID: backupAdmin}, http.StatusOK},
		{"another user", &reaper.Caller{UID: 1002, GID: 1002, Groups: []uint32{0}}, http.StatusForbidden},
		{"an API token", &reaper.Caller{Token: "ci"}, http.StatusForbidden},
		{"an API token with uid 0", &reaper.Caller{UID: 0, Token: "ci"}, http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", "/v1/ledger/backup", nil)
			if tt.caller != nil {
				req = req.WithContext(reaper.WithCaller(req.Context(), *tt.caller))
			}
			rec := httptest.NewRecorder()
			srv.ServeHTTP(rec, req)
			if rec.Code != tt.status {
				t.Fatalf("status = %d, want %d: %s", rec.Code, tt.status, rec.Body.String())
			}
			if tt.status != http.StatusOK {
				code, msg := errCode(t, rec.Body.String())
				if code != reaper.EFORBIDDEN || !strings.Contains(msg, "only root, the daemon's user or a member of the admin group may back it up") {
					t.Fatalf("error = %s %q, want forbidden saying who may", code, msg)
				}
				return
			}
			if got, want := rec.Header().Get("Content-Length"), strconv.Itoa(rec.Body.Len()); got != want {
				t.Fatalf("Content-Length = %s, body %s bytes", got, want)
			}
			if rep := checkCopy(t, rec.Body.Bytes()); !rep.OK() || rep.Entries[reaper.StateActive] != 1 {
				t.Fatalf("the backup's check = %+v, want clean with the one registration", rep)
			}
		})
	}
}

func TestBackupHead(t *testing.T) {
	srv := backupServer(t)
	ts := httptest.NewServer(srv)
	defer ts.Close()
	resp, err := http.Head(ts.URL + "/v1/ledger/backup")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || resp.ContentLength <= 0 || len(body) != 0 {
		t.Fatalf("HEAD = %d, Content-Length %d, %d bytes of body; want 200, the size and no body", resp.StatusCode, resp.ContentLength, len(body))
	}
}

func TestBackupWithoutALedger(t *testing.T) {
	srv := &api.Server{Service: nil}
	status, body := do(t, srv, "GET", "/v1/ledger/backup", "")
	if code, _ := errCode(t, body); status != http.StatusNotFound || code != reaper.ENOTFOUND {
		t.Fatalf("backup from a server without an engine = %d %s, want 404 not_found", status, body)
	}
}

// serveUnix serves h on a Unix socket with the API's peer credentials.
func serveUnix(t testing.TB, h http.Handler) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "r.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: h, ConnContext: api.ConnContext}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return sock
}

func TestClientBackup(t *testing.T) {
	sock := serveUnix(t, backupServer(t))
	var buf bytes.Buffer
	n, err := api.NewClient(sock).Backup(context.Background(), &buf)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(buf.Len()) {
		t.Fatalf("Backup returned %d, wrote %d bytes", n, buf.Len())
	}
	if rep := checkCopy(t, buf.Bytes()); !rep.OK() || rep.TotalEntries() != 1 {
		t.Fatalf("the backup's check = %+v, want clean with one entry", rep)
	}
}

// TestClientBackupCutShort: a body shorter than announced, or a daemon
// that stops sending, is an error, never a short copy taken for whole.
func TestClientBackupCutShort(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		timeout time.Duration
		err     string
	}{
		{"connection dropped", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "100000")
			w.WriteHeader(http.StatusOK)
			w.Write(make([]byte, 1000))
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}, time.Minute, "unexpected EOF after 1000 of 100000 bytes"},
		{"stalled", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "100000")
			w.WriteHeader(http.StatusOK)
			w.Write(make([]byte, 1000))
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}, 200 * time.Millisecond, "the daemon stopped sending for 200ms"},
		{"an API error", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, `{"error":{"code":"forbidden","message":"no"}}`)
		}, time.Minute, "no"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := api.NewClient(serveUnix(t, tt.handler))
			c.Timeout = tt.timeout
			var buf bytes.Buffer
			_, err := c.Backup(context.Background(), &buf)
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("Backup = %v, want an error mentioning %q", err, tt.err)
			}
		})
	}
}

// TestBackupStalledClient: a client that stops reading holds the backup's
// read transaction for the stall timeout at most, so that it cannot hold
// back the ledger (here: its close, which waits for every transaction).
func TestBackupStalledClient(t *testing.T) {
	defer api.SetBackupStall(200 * time.Millisecond)()
	db := ledgertest.Open(t)
	err := db.Update(context.Background(), func(tx reaper.Tx) error {
		for i := range 5000 {
			e := &reaper.Entry{Provider: "e2b", ID: "sbx-" + strconv.Itoa(i), State: reaper.StateActive,
				RegisteredAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour), Labels: map[string]string{"pad": strings.Repeat("x", 500)}}
			if err := tx.PutEntry(e); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := &api.Server{Service: &engine.Engine{Store: db, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, Ledger: db}
	sock := serveUnix(t, srv)
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /v1/ledger/backup HTTP/1.1\r\nHost: reaperd\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 512)
	if _, err := io.ReadFull(conn, head); err != nil || !bytes.HasPrefix(head, []byte("HTTP/1.1 200 OK")) {
		t.Fatalf("response starts %q (%v)", head, err)
	}
	// Read no more: the copy (megabytes) stalls on the socket's buffers.
	closed := make(chan error, 1)
	go func() { closed <- db.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the ledger could not close while a client stalled a backup: the read transaction was kept")
	}
}

func TestClientBackupNoDaemon(t *testing.T) {
	c := api.NewClient(filepath.Join(t.TempDir(), "none.sock"))
	var nr *api.NotRunningError
	if _, err := c.Backup(context.Background(), io.Discard); !errors.As(err, &nr) {
		t.Fatalf("Backup without a daemon = %v, want *NotRunningError", err)
	}
}
