package runloop_test

import (
	"fmt"
	"net/http/httptest"
	"reflect"
	"testing"

	"github.com/reaperd/reaperd/providers/runloop"
	"github.com/reaperd/reaperd/providers/runloop/runlooptest"
	"github.com/reaperd/reaperd/reaper"
)

// TestListResources: a devbox's Resources is the documented size of its
// resource_size_request, or its custom_* figures for CUSTOM_SIZE; what the
// devbox does not say is zero, and a devbox that says nothing has none.
func TestListResources(t *testing.T) {
	tests := []struct {
		name string
		size runlooptest.Size
		want *reaper.Resources
	}{
		{"x small", runlooptest.Size{ResourceSize: runloop.SizeXSmall}, &reaper.Resources{VCPU: 0.5, MemoryGiB: 1, DiskGiB: 4}},
		{"small", runlooptest.Size{ResourceSize: runloop.SizeSmall}, &reaper.Resources{VCPU: 1, MemoryGiB: 2, DiskGiB: 4}},
		{"medium", runlooptest.Size{ResourceSize: runloop.SizeMedium}, &reaper.Resources{VCPU: 2, MemoryGiB: 4, DiskGiB: 8}},
		{"large", runlooptest.Size{ResourceSize: runloop.SizeLarge}, &reaper.Resources{VCPU: 2, MemoryGiB: 8, DiskGiB: 16}},
		{"x large", runlooptest.Size{ResourceSize: runloop.SizeXLarge}, &reaper.Resources{VCPU: 4, MemoryGiB: 16, DiskGiB: 16}},
		{"xx large", runlooptest.Size{ResourceSize: runloop.SizeXXLarge}, &reaper.Resources{VCPU: 8, MemoryGiB: 32, DiskGiB: 16}},
		{"preset ignores custom figures", runlooptest.Size{ResourceSize: runloop.SizeMedium, CustomCPUCores: 16, CustomGBMemory: 64, CustomDiskSize: 64},
			&reaper.Resources{VCPU: 2, MemoryGiB: 4, DiskGiB: 8}},
		{"custom", runlooptest.Size{ResourceSize: runloop.SizeCustom, CustomCPUCores: 4, CustomGBMemory: 16, CustomDiskSize: 32},
			&reaper.Resources{VCPU: 4, MemoryGiB: 16, DiskGiB: 32}},
		{"custom half a vCPU", runlooptest.Size{ResourceSize: runloop.SizeCustom, CustomCPUCores: 0.5, CustomGBMemory: 1, CustomDiskSize: 2},
			&reaper.Resources{VCPU: 0.5, MemoryGiB: 1, DiskGiB: 2}},
		{"custom without disk", runlooptest.Size{ResourceSize: runloop.SizeCustom, CustomCPUCores: 2, CustomGBMemory: 8},
			&reaper.Resources{VCPU: 2, MemoryGiB: 8}},
		{"custom memory only", runlooptest.Size{ResourceSize: runloop.SizeCustom, CustomGBMemory: 8}, &reaper.Resources{MemoryGiB: 8}},
		{"custom without figures", runlooptest.Size{ResourceSize: runloop.SizeCustom}, nil},
		{"custom figures without custom size", runlooptest.Size{CustomCPUCores: 2, CustomGBMemory: 8, CustomDiskSize: 8}, nil},
		{"no size", runlooptest.Size{}, nil},
		{"unknown size", runlooptest.Size{ResourceSize: "XXX_LARGE"}, nil},
	}
	srv := newFake(t)
	p := newProvider(t, srv.URL, nil)
	ids := make([]string, len(tests))
	for i, tt := range tests {
		ids[i] = srv.CreateDevbox(runlooptest.DevboxSpec{Size: tt.size, CreatedAt: created})
	}
	got, err := p.List(testCtx(t), reaper.ListFilter{})
	if err != nil {
		t.Fatalf("List = %v", err)
	}
	byID := map[string]reaper.Sandbox{}
	for _, s := range got {
		byID[s.ID] = s
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, ok := byID[ids[i]]
			if !ok {
				t.Fatalf("devbox %s not listed", ids[i])
			}
			if !reflect.DeepEqual(s.Resources, tt.want) {
				t.Errorf("Resources = %s, want %s", show(s.Resources), show(tt.want))
			}
		})
	}
}

// TestListResourcesLenient: launch_parameters as the API may send them
// (nulls, absent, unexpected types) give what they say and never fail the
// listing.
func TestListResourcesLenient(t *testing.T) {
	tests := []struct {
		name   string
		params string // launch_parameters, "" for none
		want   *reaper.Resources
	}{
		{"absent", "", nil},
		{"null", `null`, nil},
		{"empty", `{}`, nil},
		{"null size", `{"resource_size_request":null,"custom_cpu_cores":null,"custom_gb_memory":null,"custom_disk_size":null}`, nil},
		{"size not a string", `{"resource_size_request":2}`, nil},
		{"not an object", `"LARGE"`, nil},
		{"preset with nulls", `{"resource_size_request":"LARGE","custom_cpu_cores":null,"custom_gb_memory":null,"custom_disk_size":null,"architecture":"arm64"}`,
			&reaper.Resources{VCPU: 2, MemoryGiB: 8, DiskGiB: 16}},
		{"lower case", `{"resource_size_request":"x_small"}`, &reaper.Resources{VCPU: 0.5, MemoryGiB: 1, DiskGiB: 4}},
		{"custom with null disk", `{"resource_size_request":"CUSTOM_SIZE","custom_cpu_cores":0.5,"custom_gb_memory":2,"custom_disk_size":null}`,
			&reaper.Resources{VCPU: 0.5, MemoryGiB: 2}},
		{"custom with a string figure", `{"resource_size_request":"CUSTOM_SIZE","custom_cpu_cores":"8","custom_gb_memory":32,"custom_disk_size":64}`,
			&reaper.Resources{MemoryGiB: 32, DiskGiB: 64}},
		{"custom with negative figures", `{"resource_size_request":"CUSTOM_SIZE","custom_cpu_cores":-2,"custom_gb_memory":0,"custom_disk_size":-4}`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			devbox := `{"id":"dbx_1","status":"running","create_time_ms":1000,"metadata":{}`
			if tt.params != "" {
				devbox += `,"launch_parameters":` + tt.params
			}
			ts := httptest.NewServer(&stub{list: answer(200, nil, `{"devboxes":[`+devbox+`}],"has_more":false}`)})
			defer ts.Close()
			got, err := newProvider(t, ts.URL, nil).List(testCtx(t), reaper.ListFilter{})
			if err != nil || len(got) != 1 {
				t.Fatalf("List = %+v, %v; want the devbox", got, err)
			}
			if !reflect.DeepEqual(got[0].Resources, tt.want) {
				t.Errorf("Resources = %s, want %s", show(got[0].Resources), show(tt.want))
			}
		})
	}
}

func show(r *reaper.Resources) string {
	if r == nil {
		return "nil"
	}
	return fmt.Sprintf("%+v", *r)
}
