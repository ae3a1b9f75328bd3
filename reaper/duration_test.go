package reaper

import (
	"strings"
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		err  string
	}{
		{"30m", 30 * time.Minute, ""},
		{"7d", 7 * 24 * time.Hour, ""},
		{"1.5d", 36 * time.Hour, ""},
		{"1d12h", 36 * time.Hour, ""},
		{"2d30m", 48*time.Hour + 30*time.Minute, ""},
		{" 2h ", 2 * time.Hour, ""},
		{"0", 0, ""},
		{"", 0, "empty duration"},
		{"5x", 0, `invalid duration "5x"`},
		{"d", 0, "invalid duration"},
		{"1d-2h", 0, "invalid duration"},
		{"1dd", 0, "invalid duration"},
		{"-5m", 0, "must not be negative"},
		{"-1d", 0, "invalid duration"},
		{"40000d", 0, "invalid duration"},
		{"NaNd", 0, "invalid duration"},
	}
	for _, tt := range tests {
		got, err := ParseDuration(tt.in)
		switch {
		case tt.err == "" && (err != nil || got != tt.want):
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("ParseDuration(%q) = %v, %v; want an error containing %q", tt.in, got, err, tt.err)
		}
	}
}
