package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/reaperd/reaperd/api"
	"github.com/reaperd/reaperd/engine"
	"github.com/reaperd/reaperd/ledger"
	"github.com/reaperd/reaperd/providers/daytona"
	"github.com/reaperd/reaperd/providers/modal"
	"github.com/reaperd/reaperd/reaper"
	"github.com/reaperd/reaperd/report/reporttest"
)

// seededServer serves a ledger holding the hand-checked fleet's events.
func seededServer(t *testing.T) (*api.Server, *ledger.DB) {
	t.Helper()
	srv, db := newServer(t)
	if err := db.Update(context.Background(), reporttest.Append); err != nil {
		t.Fatal(err)
	}
	srv.Service.(*engine.Engine).SetPricing(reporttest.Pricing(map[string]reaper.Cleanup{"daytona": daytona.Cleanup, "modal": modal.Cleanup}))
	return srv, db
}

func window() string {
	return "since=" + url.QueryEscape(reporttest.Since.Format(time.RFC3339)) + "&until=" + url.QueryEscape(reporttest.Until.Format(time.RFC3339))
}

func TestAuditReportRoute(t *testing.T) {
	srv, _ := seededServer(t)
	code, body := do(t, srv.Handler(), "GET", "/v1/audit/report?"+window()+"&group_by=provider", "")
	if code != 200 {
		t.Fatalf("GET /v1/audit/report = %d %s", code, body)
	}
	var rep reaper.Report
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Total.Cost != 27.15 || rep.Total.Saved != 4.83 || rep.Total.UntrackedCost != 2.94 || !rep.Since.Equal(reporttest.Since) {
		t.Errorf("report total %+v since %v; want cost 27.15, saved 4.83, untracked 2.94", rep.Total, rep.Since)
	}
	for _, tc := range []struct{ query, mentions string }{
		{"group_by=colour", "use provider, session, owner, reason, day or label:KEY"},
		{"since=yesterday", "since=\"yesterday\""},
		{"until=soon", "until=\"soon\""},
		{"since=1d&until=2d", "is not after since"},
		{"provider=Bad%20Name", "provider"},
		{"limit=3", "unknown query parameter \"limit\""},
	} {
		code, body := do(t, srv.Handler(), "GET", "/v1/audit/report?"+tc.query, "")
		if c, msg := errCode(t, body); code != 400 || c != reaper.EINVALID || !strings.Contains(msg, tc.mentions) {
			t.Errorf("?%s = %d %s %q, want 400 invalid mentioning %q", tc.query, code, c, msg, tc.mentions)
		}
	}
}

func TestReportQueryDefaults(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 30, 15, 500, time.UTC)
	q, err := api.ReportQuery(url.Values{}, now)
	if err != nil {
		t.Fatal(err)
	}
	if want := now.Truncate(time.Second); !q.Until.Equal(want) || !q.Since.Equal(want.Add(-7*24*time.Hour)) || q.GroupBy != reaper.GroupByProvider {
		t.Errorf("defaults = %+v, want the 7 days to now by provider", q)
	}
	q, err = api.ReportQuery(url.Values{"since": {"2026-11-23"}, "until": {"24h"}}, now)
	if err != nil || !q.Since.Equal(time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)) || !q.Until.Equal(now.Truncate(time.Second).Add(-24*time.Hour)) {
		t.Errorf("date and duration = %+v, %v", q, err)
	}
}

var figureRE = regexp.MustCompile(`data-figure="([^"]+)">([^<]*)<`)

func pageFigures(t *testing.T, html string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, f := range figureRE.FindAllStringSubmatch(html, -1) {
		m[f[1]] = f[2]
	}
	return m
}

func TestPage(t *testing.T) {
	srv, _ := seededServer(t)
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/?"+window(), nil))
	if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") {
		t.Fatalf("GET / = %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("CSP %q does not forbid fetching", csp)
	}
	html := rec.Body.String()
	for _, bad := range []string{"<script", "http://", "https://", "<link", "@import", "url("} {
		if strings.Contains(html, bad) {
			t.Errorf("the page holds %q: it must fetch nothing", bad)
		}
	}
	got := pageFigures(t, html)
	for k, v := range map[string]string{
		"total.cost": "$27.15", "total.saved": "$4.83", "total.running_hours": "358.00", "total.stopped_hours": "14.01",
		"total.reaped": "4", "total.untracked_cost": "$2.94", "total.protected_cost": "$20.59", "total.stuck": "1",
		"total.sandboxes": "9", "total.unpriced_hours": "6.00", "total.reap_p50": "5s",
		"group.daytona.cost": "$22.22", "group.modal.cost": "$4.36", "group.e2b.cost": "$0.57", "group.runloop.cost": "$0.00",
		"group.e2b.saved": "$2.31", "group.daytona.untracked_cost": "$0.06", "live.daytona.running": "2", "live.e2b.untracked": "1",
	} {
		if got[k] != v {
			t.Errorf("page %s = %q, want %q", k, got[k], v)
		}
	}
	for _, want := range []string{"<svg", "Estimated cost per day", "runloop</strong> shows hours, not dollars", "s-e", "team=ml", "daytona/d4"} {
		if !strings.Contains(html, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if code, body := do(t, srv.Handler(), "GET", "/?since=nonsense", ""); code != 400 {
		t.Errorf("GET /?since=nonsense = %d %s, want 400", code, body)
	}
	if code, _ := do(t, srv.Handler(), "POST", "/", ""); code != http.StatusMethodNotAllowed {
		t.Errorf("POST / = %d, want 405", code)
	}
	if code, _ := do(t, srv.Handler(), "GET", "/nope", ""); code != 404 {
		t.Errorf("GET /nope = %d, want 404", code)
	}
}

// TestPageOpenOnTCP: the page, like /metrics and /healthz, needs no token
// on the TCP listener; the API still does.
func TestPageOpenOnTCP(t *testing.T) {
	srv, _ := seededServer(t)
	var store api.TokenStore
	h := srv.TCPHandler(store.Get)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != 200 {
		t.Errorf("GET / on TCP without a token = %d, want 200", rec.Code)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/audit/report", nil))
	if rec.Code != 401 {
		t.Errorf("GET /v1/audit/report on TCP without a token = %d, want 401", rec.Code)
	}
}
