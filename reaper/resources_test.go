package reaper

import (
	"math"
	"strings"
	"testing"
)

func TestResourcesValidate(t *testing.T) {
	tests := []struct {
		r   *Resources
		err string
	}{
		{nil, ""},
		{&Resources{VCPU: 2, MemoryGiB: 4, DiskGiB: 10}, ""},
		{&Resources{GPU: "H100", GPUCount: 8}, ""},
		{&Resources{VCPU: -1}, "vcpu -1"},
		{&Resources{MemoryGiB: math.NaN()}, "memory_gib"},
		{&Resources{DiskGiB: 1e9}, "disk_gib"},
		{&Resources{GPUCount: 2}, "needs a gpu type"},
		{&Resources{GPU: "a b", GPUCount: 1}, `gpu "a b"`},
		{&Resources{GPU: "A100", GPUCount: 65}, "gpu_count 65"},
	}
	for _, tt := range tests {
		err := tt.r.Validate()
		if (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("Validate(%+v) = %v, want an error containing %q", tt.r, err, tt.err)
		}
	}
}
