package api

import (
	"context"
	"errors"
	"net"
	"unsafe"

	"github.com/reaperd/reaperd/reaper"
	"golang.org/x/sys/unix"
)

// ConnContext records the peer credentials of a Unix socket connection in
// the connection's context: uid, gid and pid (SO_PEERCRED) and the
// supplementary groups (SO_PEERGROUPS, Linux 4.13+), as they were when the
// client connected. Use it as http.Server.ConnContext.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ctx
	}
	var cred *unix.Ucred
	var groups []uint32
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if credErr == nil {
			groups, _ = peerGroups(int(fd)) // without them, only owners, root and the daemon's user pass
		}
	}); err != nil || credErr != nil || cred == nil {
		return ctx
	}
	return reaper.WithCaller(ctx, reaper.Caller{UID: cred.Uid, GID: cred.Gid, Groups: groups, PID: cred.Pid})
}

// peerGroups returns the supplementary groups of the socket's peer.
func peerGroups(fd int) ([]uint32, error) {
	n := 64
	for range 4 {
		buf := make([]uint32, n)
		size := uint32(n * 4)
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)), 0)
		switch {
		case errno == 0:
			return buf[:size/4], nil
		case errno == unix.ERANGE && int(size/4) > n:
			n = int(size / 4)
		default:
			return nil, errno
		}
	}
	return nil, errors.New("peer groups: buffer keeps growing")
}
