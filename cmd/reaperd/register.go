package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/reaperd/reaperd/reaper"
	"github.com/spf13/cobra"
)

func (m *Main) registerCommand() *cobra.Command {
	var (
		session, ttl, lease, output string
		labels                      []string
		keep, attached              bool
		pid                         int
		cpu, memory, disk           float64
		gpu                         string
	)
	c := &cobra.Command{
		Use:   "register PROVIDER/ID",
		Short: "Register a sandbox so the daemon closes it when it expires or its session dies",
		Example: `  reaperd register daytona/7f3c2a --session run-42 --ttl 30m --lease 2m --label team=x
  reaperd register e2b/i9x2k --ttl 1h
  reaperd register modal/sb-abc --session run-42 --attached
  reaperd register daytona/7f3c2a --ttl 4h --cpu 4 --memory 8 --disk 20 --gpu A100:1`,
		Args: exactArgs(1, "a sandbox PROVIDER/ID"),
		RunE: func(c *cobra.Command, args []string) error {
			if err := outputFormat(output, "text", "json"); err != nil {
				return err
			}
			provider, id, err := reaper.ParseKey(args[0])
			if err != nil {
				return usageError{err}
			}
			req := reaper.RegisterRequest{Provider: provider, ID: id, Session: session, Keep: keep, Attached: attached, PID: pid}
			if ttl != "" {
				d, err := reaper.ParseDuration(ttl)
				if err != nil {
					return usagef("--ttl: %v", err)
				}
				if d == 0 {
					return usagef("--ttl 0 would close the sandbox at once: give a positive duration, or leave --ttl out")
				}
				req.TTL = reaper.Duration(d)
			}
			if lease != "" {
				d, err := reaper.ParseDuration(lease)
				if err != nil {
					return usagef("--lease: %v", err)
				}
				req.Lease = reaper.Duration(d)
			}
			if req.Labels, err = parseLabels(labels); err != nil {
				return err
			}
			if req.Resources, err = parseResources(cpu, memory, disk, gpu); err != nil {
				return err
			}
			ent, err := m.client().Register(c.Context(), req)
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSONOut(m.Stdout, ent)
			}
			msg := "registered " + ent.Key
			if ent.Session != "" {
				msg += ", session " + ent.Session
			}
			if !ent.ExpiresAt.IsZero() {
				msg += ", expires " + fmtTime(ent.ExpiresAt) + " (" + fmtIn(ent.ExpiresAt, time.Now()) + ")"
			}
			if ent.Keep {
				msg += ", keep"
			}
			if ent.Attached {
				msg += ", attached"
			}
			if time.Since(ent.RegisteredAt) > 5*time.Second {
				msg = "already " + msg + " at " + fmtTime(ent.RegisteredAt)
			}
			fmt.Fprintln(m.Stdout, msg)
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&session, "session", "", "session the sandbox belongs to (created on first use)")
	f.StringVar(&ttl, "ttl", "", "close the sandbox this long after registration (e.g. 30m, 2h, 1d)")
	f.StringVar(&lease, "lease", "", "session lease: close the session's sandboxes if no heartbeat comes for this long")
	f.StringArrayVar(&labels, "label", nil, "label key=value (repeatable)")
	f.BoolVar(&keep, "keep", false, "never close this sandbox")
	f.Float64Var(&cpu, "cpu", 0, "the sandbox's vCPUs, for cost reports")
	f.Float64Var(&memory, "memory", 0, "the sandbox's memory in GiB, for cost reports")
	f.Float64Var(&disk, "disk", 0, "the sandbox's disk in GiB, for cost reports")
	f.StringVar(&gpu, "gpu", "", "the sandbox's GPUs, TYPE or TYPE:COUNT (A100:2), for cost reports")
	f.BoolVar(&attached, "attached", false, "the session did not create this sandbox: never close it, release it when the session ends")
	f.IntVar(&pid, "pid", 0, "the session's process id on this host: its exit ends the session")
	f.StringVarP(&output, "output", "o", "text", "output format: text or json")
	completeFlag(c, "output", "text", "json")
	return c
}

// parseResources builds the resources of a registration from its flags;
// nil when none is given.
func parseResources(cpu, memory, disk float64, gpu string) (*reaper.Resources, error) {
	if cpu == 0 && memory == 0 && disk == 0 && gpu == "" {
		return nil, nil
	}
	r := &reaper.Resources{VCPU: cpu, MemoryGiB: memory, DiskGiB: disk}
	if gpu != "" {
		typ, count, ok := strings.Cut(gpu, ":")
		r.GPU, r.GPUCount = typ, 1
		if ok {
			n, err := strconv.Atoi(count)
			if err != nil || n < 1 {
				return nil, usagef("--gpu %q: use TYPE or TYPE:COUNT, such as A100:2", gpu)
			}
			r.GPUCount = n
		}
	}
	if err := r.Validate(); err != nil {
		return nil, usageError{err}
	}
	return r, nil
}
