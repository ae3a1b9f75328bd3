package engine

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/reaperd/reaperd/reaper"
)

// ProcessStart returns the start time of process pid, in clock ticks since
// boot, read from /proc/PID/stat. Together with the pid it identifies one
// process, even after the pid is reused.
func ProcessStart(pid int) (uint64, error) {
	if pid <= 0 {
		return 0, reaper.Errorf(reaper.EINVALID, "pid %d is invalid", pid)
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if errors.Is(err, os.ErrNotExist) {
		return 0, reaper.Errorf(reaper.EINVALID, "process %d is not running on the daemon's host (or not visible in its pid namespace)", pid)
	} else if err != nil {
		return 0, fmt.Errorf("read process %d: %w", pid, err)
	}
	state, start, err := parseStat(b)
	if err != nil {
		return 0, fmt.Errorf("read process %d: %w", pid, err)
	}
	if state == 'Z' || state == 'X' {
		return 0, reaper.Errorf(reaper.EINVALID, "process %d has exited", pid)
	}
	return start, nil
}

// ProcessAlive reports whether the process pid that started at start (as
// returned by ProcessStart) is still running. A zombie counts as exited.
func ProcessAlive(pid int, start uint64) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		// Gone, or not readable: only a missing file means gone.
		return !errors.Is(err, os.ErrNotExist)
	}
	state, st, err := parseStat(b)
	if err != nil {
		return true
	}
	return st == start && state != 'Z' && state != 'X'
}

// parseStat extracts the state (field 3) and starttime (field 22) of a
// /proc/PID/stat line. The command name (field 2) may hold spaces and
// parentheses, so fields are counted from the last ')'.
func parseStat(b []byte) (state byte, start uint64, err error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0, 0, errors.New("malformed stat")
	}
	fields := bytes.Fields(b[i+2:])
	// fields[0] is field 3 (state); starttime is field 22, fields[19].
	if len(fields) < 20 || len(fields[0]) != 1 {
		return 0, 0, errors.New("malformed stat")
	}
	start, err = strconv.ParseUint(string(fields[19]), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("malformed stat starttime: %w", err)
	}
	return fields[0][0], start, nil
}
