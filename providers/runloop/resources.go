package runloop

import (
	"encoding/json"
	"strings"

	"github.com/reaperd/reaperd/reaper"
)

// Runloop's resource_size_request values, as LaunchParameters names them.
const (
	SizeXSmall  = "X_SMALL"
	SizeSmall   = "SMALL"
	SizeMedium  = "MEDIUM"
	SizeLarge   = "LARGE"
	SizeXLarge  = "X_LARGE"
	SizeXXLarge = "XX_LARGE"
	SizeCustom  = "CUSTOM_SIZE"
)

// presetSizes are the sizes of Runloop's preset resource_size_request
// values: vCPUs, memory in GiB and ephemeral disk in GiB. Source: the
// description of LaunchParameters.resource_size_request in Runloop's OpenAPI
// spec, as its generated Python client carries it
// (runloopai/api-client-python, src/runloop_api_client/types/shared/launch_parameters.py,
// releases 1.14.0 to 1.29.0, 2026-03-31 to 2026-08-20): "X_SMALL: 0.5 vCPU,
// 1 GiB RAM, 4 GiB disk. SMALL: 1 vCPU, 2 GiB RAM, 4 GiB disk. MEDIUM: 2
// vCPU, 4 GiB RAM, 8 GiB disk. LARGE: 2 vCPU, 8 GiB RAM, 16 GiB disk.
// X_LARGE: 4 vCPU, 16 GiB RAM, 16 GiB disk. XX_LARGE: 8 vCPU, 32 GiB RAM,
// 16 GiB disk." (releases from 1.22.0 say "cpu" for "vCPU", with the same
// figures). Every figure of every preset is documented there; none is
// guessed.
var presetSizes = map[string]reaper.Resources{
	SizeXSmall:  {VCPU: 0.5, MemoryGiB: 1, DiskGiB: 4},
	SizeSmall:   {VCPU: 1, MemoryGiB: 2, DiskGiB: 4},
	SizeMedium:  {VCPU: 2, MemoryGiB: 4, DiskGiB: 8},
	SizeLarge:   {VCPU: 2, MemoryGiB: 8, DiskGiB: 16},
	SizeXLarge:  {VCPU: 4, MemoryGiB: 16, DiskGiB: 16},
	SizeXXLarge: {VCPU: 8, MemoryGiB: 32, DiskGiB: 16},
}

// devboxResources returns a devbox's size from its launch_parameters
// (Runloop's LaunchParameters), nil when they do not give it:
//
//   - a preset resource_size_request: the preset's documented size
//     (presetSizes);
//   - CUSTOM_SIZE: custom_cpu_cores (vCPUs: 0.5, 1 or a multiple of 2,
//     although the spec types it as an integer), custom_gb_memory and
//     custom_disk_size (GiB), each zero (unknown) when absent, null or not a
//     positive number. Runloop does not document the disk of a custom size
//     created without custom_disk_size, so it is left unknown;
//   - no resource_size_request (absent or null), or a value this version
//     does not know: nil. Runloop documents SMALL as the default of a
//     create request without a size, but a devbox created from a blueprint
//     takes the blueprint's launch parameters, so a listing without a size
//     is not taken to mean SMALL.
//
// Each field is read on its own: one of an unexpected type leaves that
// figure unknown and never fails the listing. LaunchParameters has no GPU
// field, nor has any other part of DevboxView: Runloop reports no GPU.
func devboxResources(raw json.RawMessage) *reaper.Resources {
	var lp map[string]json.RawMessage
	if len(raw) == 0 || json.Unmarshal(raw, &lp) != nil {
		return nil
	}
	var size string
	if json.Unmarshal(lp["resource_size_request"], &size) != nil {
		return nil
	}
	size = strings.ToUpper(strings.TrimSpace(size))
	if r, ok := presetSizes[size]; ok {
		return &r
	}
	if size != SizeCustom {
		return nil
	}
	r := reaper.Resources{
		VCPU:      positive(lp["custom_cpu_cores"]),
		MemoryGiB: positive(lp["custom_gb_memory"]),
		DiskGiB:   positive(lp["custom_disk_size"]),
	}
	if r == (reaper.Resources{}) {
		return nil
	}
	return &r
}

// positive decodes a JSON number, zero when raw is absent, null, not a
// number or not positive.
func positive(raw json.RawMessage) float64 {
	var v float64
	if json.Unmarshal(raw, &v) != nil || !(v > 0) {
		return 0
	}
	return v
}
