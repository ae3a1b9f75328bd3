package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// What this file reads from /proc and from the ledger file, without
// touching the daemon.

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat: 100
// on every Linux architecture Go supports.
const clockTicks = 100

// ioCounters are a process's storage counters from /proc/PID/io.
type ioCounters struct {
	ReadBytes      int64 // bytes the process caused to be read from storage (page faults on its mmap included)
	WriteBytes     int64 // bytes the process caused to be sent to storage
	CancelledBytes int64 // of those, bytes whose writeback was cancelled (truncated files)
	Syscw          int64 // write-like system calls
}

// readIO reads /proc/PID/io.
func readIO(pid int) (ioCounters, error) {
	var c ioCounters
	f, err := os.Open(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return c, fmt.Errorf("read the daemon's I/O counters: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	seen := 0
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(val), 10, 64)
		if err != nil {
			continue
		}
		switch name {
		case "read_bytes":
			c.ReadBytes = n
		case "write_bytes":
			c.WriteBytes, seen = n, seen+1
		case "cancelled_write_bytes":
			c.CancelledBytes = n
		case "syscw":
			c.Syscw = n
		}
	}
	if err := sc.Err(); err != nil {
		return c, fmt.Errorf("read /proc/%d/io: %w", pid, err)
	}
	if seen == 0 {
		return c, fmt.Errorf("/proc/%d/io has no write_bytes (a kernel without CONFIG_TASK_IO_ACCOUNTING?)", pid)
	}
	return c, nil
}

// memory is a process's memory from /proc/PID/status, in bytes.
type memory struct {
	RSS, HWM, Anon, File, Shmem int64
}

// readMemory reads VmRSS, VmHWM, RssAnon, RssFile and RssShmem.
func readMemory(pid int) (memory, error) {
	var m memory
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return m, fmt.Errorf("read the daemon's memory: %w", err)
	}
	fields := map[string]*int64{"VmRSS": &m.RSS, "VmHWM": &m.HWM, "RssAnon": &m.Anon, "RssFile": &m.File, "RssShmem": &m.Shmem}
	found := 0
	for _, line := range strings.Split(string(data), "\n") {
		name, val, ok := strings.Cut(line, ":")
		p := fields[name]
		if !ok || p == nil {
			continue
		}
		num, unit, _ := strings.Cut(strings.TrimSpace(val), " ")
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil || unit != "kB" {
			return m, fmt.Errorf("/proc/%d/status: cannot read %q", pid, line)
		}
		*p = n << 10
		found++
	}
	if m.RSS == 0 || m.HWM == 0 {
		return m, fmt.Errorf("/proc/%d/status has no VmRSS or VmHWM", pid)
	}
	return m, nil
}

// resetPeak resets the process's VmHWM to its current VmRSS
// (/proc/PID/clear_refs, "5"; Linux 4.0 and later).
func resetPeak(pid int) error {
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		return fmt.Errorf("reset the daemon's peak RSS: %w", err)
	}
	return nil
}

// cpuTicks returns the process's user plus system CPU time, in clock ticks.
func cpuTicks(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read the daemon's CPU time: %w", err)
	}
	// The command name, in parentheses, may hold spaces: count fields from
	// the last ')'. utime and stime are fields 14 and 15 of the line, 12 and
	// 13 after the parenthesis.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return u + s, nil
}

// resident returns the fraction of path's pages in the page cache
// (mincore(2) on a read-only mapping, which reads no page).
func resident(path string) (float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if fi.Size() == 0 {
		return 0, nil
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return 0, fmt.Errorf("map %s: %w", path, err)
	}
	defer unix.Munmap(data)
	page := os.Getpagesize()
	vec := make([]byte, (len(data)+page-1)/page)
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&data[0])), uintptr(len(data)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		return 0, fmt.Errorf("mincore %s: %w", path, errno)
	}
	in := 0
	for _, v := range vec {
		in += int(v & 1)
	}
	return float64(in) / float64(len(vec)), nil
}

// warm reads the whole file, so that it is in the page cache.
func warm(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := io.Copy(io.Discard, f); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}

// evict drops the file's pages from the page cache: posix_fadvise
// DONTNEED after a sync, and, when dropCaches is set, the kernel's whole
// clean page cache (/proc/sys/vm/drop_caches, root only). It returns how
// it evicted, for the report.
func evict(path string, dropCaches bool) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return "", fmt.Errorf("sync %s: %w", path, err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return "", fmt.Errorf("posix_fadvise(DONTNEED) %s: %w", path, err)
	}
	how := "posix_fadvise(DONTNEED) on the ledger"
	if dropCaches {
		unix.Sync()
		if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0); err != nil {
			how += fmt.Sprintf(" (drop_caches failed: %v)", err)
		} else {
			how += " + drop_caches=1 (whole page cache, binary included)"
		}
	}
	return how, nil
}

// bboltMagic is the magic number of a bbolt meta page.
const bboltMagic = 0xED0CDAED

// boltTxID returns the id of the last transaction committed to a bbolt
// file: the larger txid of its two valid meta pages. bbolt increments it
// at every read-write commit, so the difference between two readings
// counts commits (each of which is two fdatasyncs with NoSync off). It
// reads the file with pread, taking no lock, so it works while the daemon
// holds the file.
func boltTxID(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	// Page header: id u64, flags u16, count u16, overflow u32. Meta:
	// magic u32, version u32, pageSize u32, flags u32, root {pgid u64,
	// sequence u64}, freelist u64, pgid u64, txid u64, checksum u64 (FNV-1a
	// of what precedes it). Native byte order.
	const header, sumAt = 16, 56
	meta := func(off int64) (txid uint64, pageSize uint32, ok bool) {
		b := make([]byte, header+sumAt+8)
		if _, err := f.ReadAt(b, off); err != nil {
			return 0, 0, false
		}
		m := b[header:]
		ne := binary.NativeEndian
		if ne.Uint32(m[0:]) != bboltMagic {
			return 0, 0, false
		}
		h := fnv.New64a()
		h.Write(m[:sumAt])
		if h.Sum64() != ne.Uint64(m[sumAt:]) {
			return 0, 0, false
		}
		return ne.Uint64(m[48:]), ne.Uint32(m[8:]), true
	}
	tx0, pageSize, ok0 := meta(0)
	if !ok0 {
		// The first meta page is being rewritten or damaged; the second
		// sits at the usual page size.
		pageSize = uint32(os.Getpagesize())
	}
	tx1, _, ok1 := meta(int64(pageSize))
	switch {
	case ok0 && ok1:
		return max(tx0, tx1), nil
	case ok0:
		return tx0, nil
	case ok1:
		return tx1, nil
	}
	return 0, fmt.Errorf("%s: no valid bbolt meta page", path)
}

// filesystem names the filesystem that holds dir.
func filesystem(dir string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return "unknown (" + err.Error() + ")"
	}
	switch st.Type {
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs"
	}
	return fmt.Sprintf("type %#x", st.Type)
}
