package modal

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	pb "github.com/modal-labs/modal-client/go/proto/modal_proto"

	"github.com/reaperd/reaperd/providers/modal/modaltest"
	"github.com/reaperd/reaperd/reaper"
)

func value(v uint32, isDefault bool) *pb.ResourceInfo_ResourceValue {
	return pb.ResourceInfo_ResourceValue_builder{Value: v, IsDefault: isDefault}.Build()
}

func showResources(r *reaper.Resources) string {
	if r == nil {
		return "nil"
	}
	return fmt.Sprintf("%+v", *r)
}

// TestSandboxResources: a SandboxInfo's resource_info and its task's GPU
// give the size, CPU in vCPUs (two per Modal core), memory and disk in
// GiB; what it does not give is zero, and nothing at all is nil.
func TestSandboxResources(t *testing.T) {
	tests := []struct {
		name string
		info pb.SandboxInfo_builder
		want *reaper.Resources
	}{
		{name: "nothing", want: nil},
		{name: "empty resource_info", info: pb.SandboxInfo_builder{ResourceInfo: pb.ResourceInfo_builder{}.Build()}, want: nil},
		{name: "defaults", info: pb.SandboxInfo_builder{ResourceInfo: pb.ResourceInfo_builder{
			MilliCpu: value(125, true), MemoryMb: value(128, true)}.Build()},
			want: &reaper.Resources{VCPU: 0.25, MemoryGiB: 0.125}},
		{name: "requests", info: pb.SandboxInfo_builder{ResourceInfo: pb.ResourceInfo_builder{
			MilliCpu: value(2000, false), MemoryMb: value(4096, false), EphemeralDiskMb: 10240}.Build()},
			want: &reaper.Resources{VCPU: 4, MemoryGiB: 4, DiskGiB: 10}},
		{name: "half a core", info: pb.SandboxInfo_builder{ResourceInfo: pb.ResourceInfo_builder{
			MilliCpu: value(500, false), MemoryMb: value(512, false)}.Build()},
			want: &reaper.Resources{VCPU: 1, MemoryGiB: 0.5}},
		{name: "requests, not limits", info: pb.SandboxInfo_builder{ResourceInfo: pb.ResourceInfo_builder{
			MilliCpu: value(1000, false), MilliCpuMax: 4000, MemoryMb: value(1024, false), MemoryMbMax: 8192}.Build()},
			want: &reaper.Resources{VCPU: 2, MemoryGiB: 1}},
		{name: "limits only", info: pb.SandboxInfo_builder{ResourceInfo: pb.ResourceInfo_builder{
			MilliCpuMax: 4000, MemoryMbMax: 8192}.Build()}, want: nil},
		{name: "zero values", info: pb.SandboxInfo_builder{ResourceInfo: pb.ResourceInfo_builder{
			MilliCpu: value(0, true), MemoryMb: value(0, false)}.Build()}, want: nil},
		{name: "memory only", info: pb.SandboxInfo_builder{ResourceInfo: pb.ResourceInfo_builder{
			MemoryMb: value(3072, false)}.Build()}, want: &reaper.Resources{MemoryGiB: 3}},
		{name: "disk only", info: pb.SandboxInfo_builder{ResourceInfo: pb.ResourceInfo_builder{
			EphemeralDiskMb: 512}.Build()}, want: &reaper.Resources{DiskGiB: 0.5}},
		{name: "gpu from the task", info: pb.SandboxInfo_builder{
			ResourceInfo: pb.ResourceInfo_builder{MilliCpu: value(8000, false), MemoryMb: value(65536, false), GpuType: "H100"}.Build(),
			TaskInfo:     pb.TaskInfo_builder{GpuType: "H100", GpuConfig: pb.GPUConfig_builder{GpuType: "H100", Count: 8}.Build()}.Build()},
			want: &reaper.Resources{VCPU: 16, MemoryGiB: 64, GPU: "H100", GPUCount: 8}},
		{name: "gpu from the deprecated enum", info: pb.SandboxInfo_builder{
			TaskInfo: pb.TaskInfo_builder{GpuConfig: pb.GPUConfig_builder{Type: pb.GPUType_GPU_TYPE_A100_80GB, Count: 2}.Build()}.Build()},
			want: &reaper.Resources{GPU: "A100-80GB", GPUCount: 2}},
		{name: "gpu count from the task, type from resource_info", info: pb.SandboxInfo_builder{
			ResourceInfo: pb.ResourceInfo_builder{GpuType: "A10G"}.Build(),
			TaskInfo:     pb.TaskInfo_builder{GpuConfig: pb.GPUConfig_builder{Count: 4}.Build()}.Build()},
			want: &reaper.Resources{GPU: "A10G", GPUCount: 4}},
		{name: "gpu type and count in resource_info", info: pb.SandboxInfo_builder{
			ResourceInfo: pb.ResourceInfo_builder{GpuType: "H100:4"}.Build()},
			want: &reaper.Resources{GPU: "H100", GPUCount: 4}},
		{name: "gpu type without count", info: pb.SandboxInfo_builder{
			ResourceInfo: pb.ResourceInfo_builder{GpuType: "T4"}.Build()},
			want: &reaper.Resources{GPU: "T4"}},
		{name: "gpu type of a pending task", info: pb.SandboxInfo_builder{
			TaskInfo: pb.TaskInfo_builder{GpuType: "L4"}.Build()},
			want: &reaper.Resources{GPU: "L4"}},
		{name: "gpu count not a number", info: pb.SandboxInfo_builder{
			ResourceInfo: pb.ResourceInfo_builder{GpuType: "A100:x"}.Build()},
			want: &reaper.Resources{GPU: "A100"}},
		{name: "gpu count only", info: pb.SandboxInfo_builder{
			TaskInfo: pb.TaskInfo_builder{GpuConfig: pb.GPUConfig_builder{Count: 2}.Build()}.Build()},
			want: &reaper.Resources{GPUCount: 2}},
		{name: "empty gpu config", info: pb.SandboxInfo_builder{
			TaskInfo: pb.TaskInfo_builder{GpuConfig: pb.GPUConfig_builder{}.Build()}.Build()},
			want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.info.Id = "sb-x"
			if got := sandboxResources(tt.info.Build()); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("sandboxResources = %s, want %s", showResources(got), showResources(tt.want))
			}
		})
	}
}

// TestListResources: List reports each sandbox's size as the fake lists it,
// on both backends; a sandbox listed without resource_info has only what
// its task says of a GPU.
func TestListResources(t *testing.T) {
	p, srv := setup(t)
	tests := []struct {
		name string
		spec modaltest.SandboxSpec
		want *reaper.Resources
	}{
		{"defaults", modaltest.SandboxSpec{}, &reaper.Resources{VCPU: 0.25, MemoryGiB: 0.125}},
		{"defaults v2", modaltest.SandboxSpec{V2: true}, &reaper.Resources{VCPU: 0.25, MemoryGiB: 0.125}},
		{"requests", modaltest.SandboxSpec{Resources: modaltest.Resources{MilliCPU: 4000, MilliCPUMax: 8000, MemoryMiB: 16384, MemoryMiBMax: 32768, DiskMiB: 51200}},
			&reaper.Resources{VCPU: 8, MemoryGiB: 16, DiskGiB: 50}},
		{"cpu only", modaltest.SandboxSpec{V2: true, Resources: modaltest.Resources{MilliCPU: 1500}},
			&reaper.Resources{VCPU: 3, MemoryGiB: 0.125}},
		{"gpu", modaltest.SandboxSpec{Resources: modaltest.Resources{MilliCPU: 8000, MemoryMiB: 65536, GPUType: "A100-80GB", GPUCount: 2}},
			&reaper.Resources{VCPU: 16, MemoryGiB: 64, GPU: "A100-80GB", GPUCount: 2}},
		{"no resource_info", modaltest.SandboxSpec{NoResourceInfo: true, Resources: modaltest.Resources{MilliCPU: 4000, MemoryMiB: 4096}}, nil},
		{"no resource_info, gpu", modaltest.SandboxSpec{V2: true, NoResourceInfo: true, Resources: modaltest.Resources{MilliCPU: 4000, GPUType: "H100", GPUCount: 1}},
			&reaper.Resources{GPU: "H100", GPUCount: 1}},
	}
	ids := make([]string, len(tests))
	for i, tt := range tests {
		tt.spec.CreatedAt = created.Add(time.Duration(i) * time.Second)
		ids[i] = srv.CreateSandbox(tt.spec)
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
				t.Fatalf("sandbox %s not listed", ids[i])
			}
			if !reflect.DeepEqual(s.Resources, tt.want) {
				t.Errorf("Resources = %s, want %s", showResources(s.Resources), showResources(tt.want))
			}
		})
	}
}
