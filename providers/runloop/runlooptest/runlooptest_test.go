package runlooptest_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/reaperd/reaperd/providers/providertest"
	"github.com/reaperd/reaperd/providers/runloop/runlooptest"
)

// call sends one request to the fake with the given bearer token and
// decodes the JSON answer.
func call(t *testing.T, method, url, key string) (int, map[string]any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q, want application/json", method, url, ct)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s %s: body %q is not a JSON object: %v", method, url, b, err)
	}
	return resp.StatusCode, m
}

func TestWire(t *testing.T) {
	srv := runlooptest.NewServer("k")
	defer srv.Close()
	created := time.UnixMilli(1723229557715)
	a := srv.Create(map[string]string{"team": "a"}, created)
	b := srv.CreateWithStatus(runlooptest.StatusSuspended, nil, created.Add(time.Second))

	tests := []struct {
		name     string
		method   string
		path     string
		key      string
		wantCode int
		check    func(t *testing.T, body map[string]any)
	}{
		{name: "no token", method: "GET", path: "/v1/devboxes", wantCode: 401},
		{name: "wrong token", method: "GET", path: "/v1/devboxes", key: "x", wantCode: 401, check: func(t *testing.T, body map[string]any) {
			if body["message"] == "" || body["message"] == nil {
				t.Errorf("401 body %v has no message", body)
			}
		}},
		{name: "list page", method: "GET", path: "/v1/devboxes?limit=1", key: "k", wantCode: 200, check: func(t *testing.T, body map[string]any) {
			boxes := body["devboxes"].([]any)
			if len(boxes) != 1 || body["has_more"] != true || body["total_count"] != float64(2) || body["remaining_count"] != float64(1) {
				t.Errorf("page = %v, want 1 devbox, has_more, total_count 2, remaining_count 1", body)
			}
			d := boxes[0].(map[string]any)
			if d["id"] != b || d["status"] != "suspended" || d["create_time_ms"] != float64(1723229558715) {
				t.Errorf("newest devbox = %v, want %s suspended created 1723229558715", d, b)
			}
		}},
		{name: "list next page", method: "GET", path: "/v1/devboxes?limit=1&include_total_count=false&starting_after=" + b, key: "k", wantCode: 200, check: func(t *testing.T, body map[string]any) {
			boxes := body["devboxes"].([]any)
			if _, ok := body["total_count"]; ok || body["has_more"] != false || len(boxes) != 1 || boxes[0].(map[string]any)["id"] != a {
				t.Errorf("page = %v, want only %s, has_more false, no total_count", body, a)
			}
		}},
		{name: "status filter", method: "GET", path: "/v1/devboxes?status=running", key: "k", wantCode: 200, check: func(t *testing.T, body map[string]any) {
			boxes := body["devboxes"].([]any)
			if len(boxes) != 1 || boxes[0].(map[string]any)["id"] != a {
				t.Errorf("running = %v, want only %s", boxes, a)
			}
		}},
		{name: "bad status", method: "GET", path: "/v1/devboxes?status=dead", key: "k", wantCode: 400},
		{name: "bad limit", method: "GET", path: "/v1/devboxes?limit=5001", key: "k", wantCode: 400},
		{name: "get", method: "GET", path: "/v1/devboxes/" + a, key: "k", wantCode: 200, check: func(t *testing.T, body map[string]any) {
			if body["metadata"].(map[string]any)["team"] != "a" || body["end_time_ms"] != nil {
				t.Errorf("devbox = %v, want metadata team=a and no end time", body)
			}
		}},
		{name: "get unknown", method: "GET", path: "/v1/devboxes/dbx_nope", key: "k", wantCode: 404},
		{name: "shutdown with GET", method: "GET", path: "/v1/devboxes/" + a + "/shutdown", key: "k", wantCode: 405},
		{name: "shutdown", method: "POST", path: "/v1/devboxes/" + a + "/shutdown", key: "k", wantCode: 200, check: func(t *testing.T, body map[string]any) {
			if body["status"] != "shutdown" || body["shutdown_reason"] != "api_shutdown" || body["end_time_ms"] == nil {
				t.Errorf("shutdown answer = %v, want status shutdown, api_shutdown, an end time", body)
			}
		}},
		{name: "shutdown again", method: "POST", path: "/v1/devboxes/" + a + "/shutdown", key: "k", wantCode: 400},
		{name: "shutdown unknown", method: "POST", path: "/v1/devboxes/dbx_nope/shutdown", key: "k", wantCode: 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := call(t, tt.method, srv.URL+tt.path, tt.key)
			if code != tt.wantCode {
				t.Fatalf("%s %s = %d %v, want %d", tt.method, tt.path, code, body, tt.wantCode)
			}
			if tt.check != nil {
				tt.check(t, body)
			}
		})
	}
	if srv.Alive(a) || !srv.Alive(b) {
		t.Errorf("alive: %s %v, %s %v; want false, true", a, srv.Alive(a), b, srv.Alive(b))
	}
	if got := srv.Requests(); len(got) != len(tests) || got[0] != "GET /v1/devboxes" {
		t.Errorf("Requests() = %q", got)
	}
}

func TestIDsSortInCreationOrder(t *testing.T) {
	srv := runlooptest.NewServer("k")
	defer srv.Close()
	var ids []string
	for range 100 {
		ids = append(ids, srv.Create(nil, time.Now()))
	}
	if !slices.IsSorted(ids) {
		t.Fatalf("ids not in creation order: %q", ids)
	}
	if len(ids[0]) != len("dbx_")+21 {
		t.Fatalf("id %q is not shaped like a Runloop id", ids[0])
	}
}

// TestSpuriousNotFound: under FailSpuriousNotFound a live devbox is answered
// exactly as an unknown one on GET and shutdown, once the key is accepted;
// it stays running and listed.
func TestSpuriousNotFound(t *testing.T) {
	srv := runlooptest.NewServer("k")
	defer srv.Close()
	id := srv.Create(nil, time.Now())
	const unknown = "dbx_nope"
	_, wantGet := call(t, "GET", srv.URL+"/v1/devboxes/"+unknown, "k")
	_, wantShutdown := call(t, "POST", srv.URL+"/v1/devboxes/"+unknown+"/shutdown", "k")
	for _, want := range []map[string]any{wantGet, wantShutdown} {
		want["message"] = strings.Replace(want["message"].(string), unknown, id, 1)
	}

	srv.Fail(providertest.Failure{Kind: providertest.FailSpuriousNotFound})
	if code, body := call(t, "GET", srv.URL+"/v1/devboxes/"+id, "k"); code != 404 || !reflect.DeepEqual(body, wantGet) {
		t.Errorf("GET = %d %v, want 404 %v", code, body, wantGet)
	}
	if code, body := call(t, "POST", srv.URL+"/v1/devboxes/"+id+"/shutdown", "k"); code != 404 || !reflect.DeepEqual(body, wantShutdown) {
		t.Errorf("shutdown = %d %v, want 404 %v", code, body, wantShutdown)
	}
	if code, _ := call(t, "POST", srv.URL+"/v1/devboxes/"+id+"/shutdown", "wrong"); code != 401 {
		t.Errorf("shutdown with a wrong key = %d, want 401", code)
	}
	code, body := call(t, "GET", srv.URL+"/v1/devboxes?status=running", "k")
	if boxes, _ := body["devboxes"].([]any); code != 200 || len(boxes) != 1 || boxes[0].(map[string]any)["id"] != id {
		t.Errorf("list = %d %v, want the devbox", code, body)
	}
	if !srv.Alive(id) {
		t.Fatal("devbox shut down by a spurious not-found")
	}
	srv.Fail(providertest.Failure{})
	if code, _ := call(t, "POST", srv.URL+"/v1/devboxes/"+id+"/shutdown", "k"); code != 200 || srv.Alive(id) {
		t.Errorf("shutdown after clearing = %d (alive %v), want 200 and shut down", code, srv.Alive(id))
	}
}

// TestQueuedAndDetails: queued devboxes, and those reported under the
// deprecated name scheduled, are listed by their status filters; a devbox
// reports its name, blueprint and snapshot, or null.
func TestQueuedAndDetails(t *testing.T) {
	srv := runlooptest.NewServer("k")
	defer srv.Close()
	created := time.UnixMilli(1723229557715)
	queued := srv.CreateDevbox(runlooptest.DevboxSpec{Status: runlooptest.StatusQueued, Name: "agent-1",
		BlueprintID: "bpt_123", Metadata: map[string]string{"team": "a"}, CreatedAt: created})
	scheduled := srv.CreateDevbox(runlooptest.DevboxSpec{Status: runlooptest.StatusScheduled, SnapshotID: "snp_9", CreatedAt: created})
	plain := srv.Create(nil, created)

	for status, want := range map[string]string{"queued": queued, "scheduled": scheduled, "running": plain} {
		code, body := call(t, "GET", srv.URL+"/v1/devboxes?status="+status, "k")
		boxes, _ := body["devboxes"].([]any)
		if code != 200 || len(boxes) != 1 || boxes[0].(map[string]any)["id"] != want {
			t.Errorf("status=%s = %d %v, want only %s", status, code, body, want)
		}
	}
	for id, want := range map[string][3]any{
		queued:    {"agent-1", "bpt_123", nil},
		scheduled: {nil, nil, "snp_9"},
		plain:     {nil, nil, nil},
	} {
		_, d := call(t, "GET", srv.URL+"/v1/devboxes/"+id, "k")
		for i, k := range []string{"name", "blueprint_id", "snapshot_id"} {
			v, ok := d[k]
			if !ok || v != want[i] {
				t.Errorf("devbox %s %s = %v (present %v), want %v", id, k, v, ok, want[i])
			}
		}
	}
	if !srv.Alive(queued) || !srv.Alive(scheduled) {
		t.Errorf("queued devboxes not alive")
	}
}

// TestLaunchParametersSize: a devbox's launch_parameters carry the size
// fields CreateDevbox gave it, as Runloop's LaunchParameters names and
// types them (a string and JSON numbers), and leave the others out.
func TestLaunchParametersSize(t *testing.T) {
	srv := runlooptest.NewServer("k")
	defer srv.Close()
	tests := []struct {
		name string
		size runlooptest.Size
		want map[string]any
	}{
		{"none", runlooptest.Size{}, map[string]any{}},
		{"preset", runlooptest.Size{ResourceSize: "X_LARGE"}, map[string]any{"resource_size_request": "X_LARGE"}},
		{"custom", runlooptest.Size{ResourceSize: "CUSTOM_SIZE", CustomCPUCores: 0.5, CustomGBMemory: 2, CustomDiskSize: 8},
			map[string]any{"resource_size_request": "CUSTOM_SIZE", "custom_cpu_cores": 0.5, "custom_gb_memory": float64(2), "custom_disk_size": float64(8)}},
		{"custom without disk", runlooptest.Size{ResourceSize: "CUSTOM_SIZE", CustomCPUCores: 4, CustomGBMemory: 16},
			map[string]any{"resource_size_request": "CUSTOM_SIZE", "custom_cpu_cores": float64(4), "custom_gb_memory": float64(16)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := srv.CreateDevbox(runlooptest.DevboxSpec{Size: tt.size})
			_, d := call(t, "GET", srv.URL+"/v1/devboxes/"+id, "k")
			if got := d["launch_parameters"]; !reflect.DeepEqual(got, tt.want) {
				t.Errorf("GET launch_parameters = %#v, want %#v", got, tt.want)
			}
			_, page := call(t, "GET", srv.URL+"/v1/devboxes?limit=1", "k")
			boxes, _ := page["devboxes"].([]any)
			if len(boxes) != 1 || !reflect.DeepEqual(boxes[0].(map[string]any)["launch_parameters"], tt.want) {
				t.Errorf("listed devbox = %v, want launch_parameters %#v", boxes, tt.want)
			}
			if got, _ := srv.Devbox(id); got.Size != tt.size {
				t.Errorf("Devbox(%s).Size = %+v, want %+v", id, got.Size, tt.size)
			}
		})
	}
}
