package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v2"
)

// alertRules is the shape of a Prometheus rule file.
type alertRules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// TestAlertRules checks deploy/prometheus/alerts.yml: it parses strictly,
// every rule is complete, the alerts the operator guide promises exist,
// and every reaperd metric an expression names is one a running daemon
// exports (scraped after a registration, a close and a sweep).
func TestAlertRules(t *testing.T) {
	data, err := os.ReadFile("../../deploy/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rules alertRules
	if err := yaml.UnmarshalStrict(data, &rules); err != nil {
		t.Fatalf("alerts.yml: %v", err)
	}
	if len(rules.Groups) == 0 {
		t.Fatal("alerts.yml has no groups")
	}
	d, fake := e2bDaemon(t, "--schedule", "@every 1h")
	id := fake.Create(nil, time.Now())
	d.mustCLI("register", "e2b/"+id, "--ttl", "1s")
	eventually(t, 10*time.Second, "the close", func() bool { return listJSON(t, d)["e2b/"+id].State == "closed" })
	d.mustCLI("sweep")
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", d.socket)
	}}}
	resp, err := hc.Get("http://reaperd/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	exported := map[string]bool{}
	for _, line := range strings.Split(string(body), "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == "#" && f[1] == "TYPE" {
			exported[f[2]] = true
		}
	}
	// A POST to /metrics is refused.
	if resp, err := hc.Post("http://reaperd/metrics", "text/plain", nil); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /metrics = %v, %v; want 405", resp.Status, err)
	}

	metric := regexp.MustCompile(`\breaperd_[a-z_]+\b`)
	var alerts []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			if r.Alert == "" || r.Expr == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("rule %+v: want alert, expr, a severity label and a summary", r)
			}
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("rule %s: for %q: %v", r.Alert, r.For, err)
				}
			}
			for _, name := range metric.FindAllString(r.Expr, -1) {
				if !exported[name] {
					t.Errorf("rule %s names %s, which the daemon does not export", r.Alert, name)
				}
			}
			if strings.Count(r.Expr, "(") != strings.Count(r.Expr, ")") {
				t.Errorf("rule %s: unbalanced parentheses in %q", r.Alert, r.Expr)
			}
		}
	}
	for _, want := range []string{"ReaperdDown", "ReaperdNoSuccessfulSweep", "ReaperdCloseNotCompleting", "ReaperdProviderFailing", "ReaperdUntrackedRising"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("alerts.yml lacks %s", want)
		}
	}
	for _, want := range []string{"reaperd_entries", "reaperd_build_info", "reaperd_last_sweep_success_timestamp_seconds",
		"reaperd_last_discovery_success_timestamp_seconds", "reaperd_listing_errors_total", "reaperd_stuck_entries"} {
		if !exported[want] {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if !strings.Contains(string(body), `reaperd_entries{provider="e2b",state="closed"} 1`) ||
		!strings.Contains(string(body), `reaperd_registrations_total{provider="e2b"} 1`) {
		t.Errorf("/metrics does not count the entry:\n%s", grepLines(string(body), "reaperd_entries", "reaperd_registrations"))
	}
}

func grepLines(s string, prefixes ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				out = append(out, l)
			}
		}
	}
	return strings.Join(out, "\n")
}
