package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestExampleConfigParses uncomments every setting of the shipped example
// config and parses it: every key it documents exists, with a value of the
// right type. (Pairs that exclude each other keep their *_file variant, and
// admin_group names a group that exists here.)
func TestExampleConfigParses(t *testing.T) {
	data, err := os.ReadFile("../../deploy/reaperd.toml.example")
	if err != nil {
		t.Fatal(err)
	}
	setting := regexp.MustCompile(`^# ([a-z_]+) = (.*)$`)
	table := regexp.MustCompile(`^# (\[\[?[a-z0-9_.]+\]\]?)$`)
	var out []string
	seen := map[string]bool{}
	for _, line := range strings.Split(string(data), "\n") {
		m := setting.FindStringSubmatch(line)
		switch {
		case table.MatchString(line):
			out = append(out, table.FindStringSubmatch(line)[1])
		case m == nil:
			out = append(out, line)
		case m[1] == "api_key" || m[1] == "token_secret":
			out = append(out, line) // api_key_file / token_secret_file stand in
		case m[1] == "admin_group":
			out = append(out, `admin_group = "0"`)
			seen[m[1]] = true
		default:
			out = append(out, m[1]+" = "+m[2])
			seen[m[1]] = true
		}
	}
	c, err := ParseConfig("reaperd.toml.example", []byte(strings.Join(out, "\n")))
	if err != nil {
		t.Fatalf("the example config, uncommented, does not parse: %v", err)
	}
	if len(c.Adopt) != 2 {
		t.Errorf("the example config has %d [[adopt]] tables, want its two examples", len(c.Adopt))
	}
	for _, key := range []string{"admin_group", "queue_limit", "list_timeout", "max_backoff", "force_after", "adopt_grace", "session_label", "min_idle", "listen", "token_file", "tls_cert_file", "tls_key_file",
		"saved_horizon", "running", "stopped", "gpu_hour", "from_start", "then_stopped"} {
		if !seen[key] {
			t.Errorf("the example config does not document %s", key)
		}
	}
	if c.Prices["runloop"].Running.VCPU != 0.108 || len(c.PriceOverrides) != 1 || c.Report.Cleanup["e2b"].Running != Duration(time.Hour) {
		t.Errorf("parsed prices %+v, overrides %+v, report %+v", c.Prices, c.PriceOverrides, c.Report)
	}
	if c.Engine.QueueLimit != 10000 || time.Duration(c.Engine.ListTimeout) != time.Minute || c.AdminGroup != "0" {
		t.Errorf("parsed engine settings = %+v, admin_group %q", c.Engine, c.AdminGroup)
	}
}

func TestParseConfigNewKeys(t *testing.T) {
	tests := []struct {
		name, toml, wantErr string
	}{
		{"admin group by gid", `admin_group = "4242"`, ""},
		{"admin group by name", `admin_group = "root"`, ""},
		{"unknown admin group", `admin_group = "no-such-group-here"`, `admin_group: group "no-such-group-here"`},
		{"negative queue limit", "[engine]\nqueue_limit = -1", "engine.queue_limit -1"},
		{"min backoff over max", "[engine]\nmin_backoff = \"10m\"\nmax_backoff = \"1m\"", "engine.min_backoff 10m0s is longer than engine.max_backoff 1m0s"},
		{"list timeout", "[engine]\nlist_timeout = \"2m\"", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig("r.toml", []byte(tt.toml))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ParseConfig = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ParseConfig = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}
