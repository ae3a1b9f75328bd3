package modal

import (
	"strconv"
	"strings"

	pb "github.com/modal-labs/modal-client/go/proto/modal_proto"

	"github.com/reaperd/reaperd/reaper"
)

// vcpusPerCore converts Modal's CPU figures to vCPUs. Modal counts CPU in
// physical cores, "1 core = 2 vCPUs" (https://modal.com/docs/guide/sandbox-resources;
// the Go SDK's SandboxCreateParams.CPU is "fractional, physical cores"),
// and reaper.Resources.VCPU is vCPUs.
const vcpusPerCore = 2

// sandboxResources returns a listed sandbox's size, nil when the listing
// gives none. It reads what SandboxList and SandboxListV2 report in each
// SandboxInfo (modal_proto/api.proto, as in modal-client/go v0.11.1); no
// other call is made:
//
//   - resource_info.milli_cpu: the CPU request in thousandths of a physical
//     core, converted to vCPUs (vcpusPerCore): 500 (half a core) is 1 vCPU;
//   - resource_info.memory_mb: the memory request in MiB, in GiB;
//   - resource_info.ephemeral_disk_mb: the disk in MiB, in GiB;
//   - the GPU: see sandboxGPU.
//
// The requests are reported, not the limits (milli_cpu_max,
// memory_mb_max): Modal bills the request or the usage, whichever is
// higher, and a limit may be unset. A request Modal flags is_default (the
// sandbox asked for none) is the default Modal applied and is reported as
// any other. A figure that is absent or zero stays zero (unknown): Modal
// documents no default disk size. SandboxInfo.resource_info was added to
// Modal's proto in January 2026 (for the sandbox details in Modal's
// dashboard); a server that does not fill it leaves CPU, memory and disk
// unknown.
func sandboxResources(info *pb.SandboxInfo) *reaper.Resources {
	ri := info.GetResourceInfo()
	var r reaper.Resources
	if v := ri.GetMilliCpu().GetValue(); v > 0 {
		r.VCPU = float64(v) / 1000 * vcpusPerCore
	}
	if v := ri.GetMemoryMb().GetValue(); v > 0 {
		r.MemoryGiB = float64(v) / 1024
	}
	if v := ri.GetEphemeralDiskMb(); v > 0 {
		r.DiskGiB = float64(v) / 1024
	}
	r.GPU, r.GPUCount = sandboxGPU(info)
	if r == (reaper.Resources{}) {
		return nil
	}
	return &r
}

// sandboxGPU returns a listed sandbox's GPU type and count, each zero when
// the listing does not give it. The type and count come from the sandbox's
// task (task_info.gpu_config: gpu_type, else the name of its deprecated
// type enum, "A100_80GB" written "A100-80GB" as Modal names it; and
// count). Where the task names no type (a sandbox whose task has not
// started has no task_info), the type is resource_info.gpu_type, else
// task_info.gpu_type; such a string in Modal's "TYPE:COUNT" form (what its
// SDKs take, "H100:8") gives the count too when gpu_config does not. A type
// without a count leaves the count unknown rather than assuming one GPU.
func sandboxGPU(info *pb.SandboxInfo) (string, int) {
	task := info.GetTaskInfo()
	cfg := task.GetGpuConfig()
	name := strings.TrimSpace(cfg.GetGpuType())
	if name == "" && cfg.GetType() != pb.GPUType_GPU_TYPE_UNSPECIFIED {
		if s, ok := strings.CutPrefix(cfg.GetType().String(), "GPU_TYPE_"); ok {
			name = strings.ReplaceAll(s, "_", "-")
		}
	}
	count := int(cfg.GetCount())
	for _, s := range []string{info.GetResourceInfo().GetGpuType(), task.GetGpuType()} {
		if name != "" {
			break
		}
		var n int
		name, n = splitGPU(s)
		if count == 0 {
			count = n
		}
	}
	return name, count
}

// splitGPU splits a GPU string "TYPE" or "TYPE:COUNT"; the count is zero
// when the string has none or it is not a positive integer.
func splitGPU(s string) (string, int) {
	name, n, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok {
		return name, 0
	}
	count, err := strconv.Atoi(n)
	if err != nil || count < 1 {
		return name, 0
	}
	return name, count
}
