package main

import (
	"reflect"
	"strings"
	"testing"

	"github.com/reaperd/reaperd/providers/daytona"
	"github.com/reaperd/reaperd/reaper"
)

func TestPriceConfigErrors(t *testing.T) {
	tests := []struct {
		name, toml, wantErr string
	}{
		{"unknown provider", "[prices.aws]\nrunning = { vcpu_hour = 1 }", "[prices.aws]: unknown provider: use one of daytona, e2b, modal, runloop"},
		{"negative price", "[prices.e2b]\nrunning = { vcpu_hour = -1 }", "[prices.e2b.running] vcpu_hour = -1: use a price in dollars per hour, 0 or more"},
		{"negative GPU price", "[prices.modal]\nrunning = { gpu_hour = { A100 = -2 } }", "[prices.modal.running] gpu_hour.A100 = -2"},
		{"misspelt resource", "[prices.e2b]\nrunning = { cpu_hour = 1 }", `unknown key "prices.e2b.running.cpu_hour"`},
		{"override without labels", "[[price_override]]\nvcpu_hour = 1", "[[price_override]] #1: give labels to match"},
		{"override of an unknown provider", "[[price_override]]\nprovider = \"aws\"\nlabels = { a = \"b\" }", `[[price_override]] #1: provider "aws"`},
		{"override state", "[[price_override]]\nlabels = { a = \"b\" }\nstate = \"paused\"", `state "paused": use running or stopped`},
		{"cleanup of an unknown provider", "[report.cleanup.aws]\nrunning = \"1h\"", "[report.cleanup.aws]: unknown provider"},
		{"negative horizon", "[report]\nsaved_horizon = \"-1h\"", "invalid duration \"-1h\": must not be negative"},
		{"good", "[prices.runloop]\nsource = \"contract\"\nrunning = { vcpu_hour = 0.1 }\n[[price_override]]\nlabels = { gpu = \"H100\" }\ngpu_hour = { H100 = 4 }", ""},
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

// TestPricingDefaults: the shipped list prices stand until a [prices.NAME]
// table replaces a provider's whole; Runloop has none.
func TestPricingDefaults(t *testing.T) {
	c, err := ParseConfig("r.toml", []byte("[prices.e2b]\nrunning = { vcpu_hour = 0.1 }"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.pricing()
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Providers["daytona"]; !reflect.DeepEqual(got.Running, daytona.ListPrices.Running) || !got.Default {
		t.Errorf("daytona prices = %+v, want the shipped list prices", got)
	}
	if got := p.Providers["e2b"]; got.Running.VCPU != 0.1 || got.Running.MemoryGiB != 0 || got.Default || got.Source == "" {
		t.Errorf("e2b prices = %+v, want the config's alone, with a source", got)
	}
	if _, ok := p.Providers["runloop"]; ok {
		t.Error("runloop has prices without a [prices.runloop]")
	}
	if p.Cleanup["daytona"].Rule == "" || p.HorizonOr() != reaper.DefaultHorizon {
		t.Errorf("cleanup %+v, horizon %v", p.Cleanup, p.HorizonOr())
	}
}

// TestProviderPaceDefaults: each provider's close rate and concurrency
// default to its documented limits; [engine] concurrency replaces the
// default for every provider, and [providers.NAME] for one.
func TestProviderPaceDefaults(t *testing.T) {
	env := func(k string) string {
		return map[string]string{"DAYTONA_API_KEY": "dtn_x", "E2B_API_KEY": "e2b_x", "MODAL_TOKEN_ID": "ak-x", "MODAL_TOKEN_SECRET": "as-x",
			"RUNLOOP_API_KEY": "ak_x"}[k]
	}
	for _, tc := range []struct {
		name, toml  string
		rate        map[string]float64
		concurrency map[string]int
	}{
		{"defaults", "", map[string]float64{"daytona": 120, "e2b": 100, "modal": 60, "runloop": 60},
			map[string]int{"daytona": 32, "e2b": 32, "modal": 24, "runloop": 24}},
		{"engine concurrency", "[engine]\nconcurrency = 4", map[string]float64{"daytona": 120, "e2b": 100, "modal": 60, "runloop": 60},
			map[string]int{"daytona": 4, "e2b": 4, "modal": 4, "runloop": 4}},
		{"one provider", "[engine]\nconcurrency = 4\n[providers.e2b]\nrate = 50\nconcurrency = 8\n[providers.modal]\nrate = -1",
			map[string]float64{"daytona": 120, "e2b": 50, "runloop": 60}, map[string]int{"daytona": 4, "e2b": 8, "modal": 4, "runloop": 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig("r.toml", []byte(tc.toml))
			if err != nil {
				t.Fatal(err)
			}
			set, err := BuildProviders(c, env)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				for _, p := range set.Enabled {
					if s, ok := p.(interface{ Shutdown() }); ok {
						s.Shutdown()
					}
				}
			}()
			if !reflect.DeepEqual(set.Rates, tc.rate) || !reflect.DeepEqual(set.Concurrency, tc.concurrency) {
				t.Errorf("rates %v, concurrency %v; want %v, %v", set.Rates, set.Concurrency, tc.rate, tc.concurrency)
			}
		})
	}
	if _, err := ParseConfig("r.toml", []byte("[providers.e2b]\nconcurrency = -1")); err == nil || !strings.Contains(err.Error(), "[providers.e2b] concurrency -1") {
		t.Errorf("negative concurrency: %v", err)
	}
}
