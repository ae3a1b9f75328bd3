package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// startFake runs the command's run function with a pipe as stdin and
// returns the URL it printed and a function that closes stdin and waits for
// run to return.
func startFake(t *testing.T, args ...string) (string, func() error) {
	t.Helper()
	stdinR, stdinW := io.Pipe()
	stdoutR, stdoutW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := run(context.Background(), args, stdinR, stdoutW, io.Discard)
		stdoutW.Close()
		done <- err
	}()
	line, err := bufio.NewReader(stdoutR).ReadString('\n')
	if err != nil {
		t.Fatalf("read URL line: %v", err)
	}
	url := strings.TrimSpace(line)
	if !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Fatalf("URL line = %q, want http://127.0.0.1:PORT", line)
	}
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			stdinW.Close()
			select {
			case runErr = <-done:
			case <-time.After(10 * time.Second):
				t.Error("fakeprovider did not stop when stdin was closed")
			}
		})
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return url, stop
}

func call(t *testing.T, method, url, key string, body string, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("decode %s %s: %v", method, url, err)
		}
	}
	return resp.StatusCode
}

func TestControlRoutesAndProxy(t *testing.T) {
	url, stop := startFake(t, "-key", "k1")

	var created struct{ ID string }
	if code := call(t, "POST", url+"/_fake/sandboxes", "", `{"labels":{"team":"x"}}`, &created); code != http.StatusCreated || created.ID == "" {
		t.Fatalf("create: %d %+v", code, created)
	}
	var other struct{ ID string }
	call(t, "POST", url+"/_fake/sandboxes", "", "", &other)

	// The E2B API behind the same URL: the key is checked, the sandbox listed.
	if code := call(t, "GET", url+"/v2/sandboxes", "wrong", "", nil); code != http.StatusUnauthorized {
		t.Fatalf("list with a wrong key: %d, want 401", code)
	}
	var listed []struct {
		SandboxID string            `json:"sandboxID"`
		Metadata  map[string]string `json:"metadata"`
	}
	if code := call(t, "GET", url+"/v2/sandboxes", "k1", "", &listed); code != http.StatusOK || len(listed) != 2 {
		t.Fatalf("list: %d %+v", code, listed)
	}
	for _, l := range listed {
		if l.SandboxID == created.ID && l.Metadata["team"] != "x" {
			t.Fatalf("labels not kept: %+v", l)
		}
	}

	// A DELETE of an unknown id is not counted; an accepted one is.
	if code := call(t, "DELETE", url+"/sandboxes/nosuchsandbox", "k1", "", nil); code != http.StatusNotFound {
		t.Fatalf("delete unknown: %d, want 404", code)
	}
	if code := call(t, "DELETE", url+"/sandboxes/"+created.ID, "k1", "", nil); code != http.StatusNoContent {
		t.Fatalf("delete: %d, want 204", code)
	}
	var del struct{ Deleted []string }
	call(t, "GET", url+"/_fake/deleted", "", "", &del)
	if !slices.Equal(del.Deleted, []string{created.ID}) {
		t.Fatalf("deleted = %v, want [%s]", del.Deleted, created.ID)
	}
	var alive struct {
		Sandboxes []struct{ ID, State string }
	}
	call(t, "GET", url+"/_fake/sandboxes", "", "", &alive)
	if len(alive.Sandboxes) != 1 || alive.Sandboxes[0].ID != other.ID || alive.Sandboxes[0].State != "running" {
		t.Fatalf("alive = %+v, want only %s running", alive.Sandboxes, other.ID)
	}
	if code := call(t, "POST", url+"/_fake/sandboxes", "", `{"label":{}}`, nil); code != http.StatusBadRequest {
		t.Fatalf("create with an unknown field: %d, want 400", code)
	}

	if err := stop(); err != nil {
		t.Fatalf("run returned %v after stdin closed", err)
	}
	if _, err := http.Get(url + "/_fake/deleted"); err == nil {
		t.Fatal("fake still serving after stdin closed")
	}
}

func TestPrecreatedSandboxes(t *testing.T) {
	url, _ := startFake(t, "-sandboxes", "3")
	var alive struct {
		Sandboxes []struct{ ID string }
	}
	call(t, "GET", url+"/_fake/sandboxes", "", "", &alive)
	if len(alive.Sandboxes) != 3 {
		t.Fatalf("alive = %+v, want 3 sandboxes", alive.Sandboxes)
	}
}
