//go:build linux

package evloop

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Read, Write and Writev are the loop's system calls on non-blocking
// sockets. They never block, so they are made as raw system calls: the Go
// scheduler is not told (entersyscall/exitsyscall would cost more than a
// short read on loopback). EINTR is retried; EAGAIN is returned as is.

// Read reads from fd into p.
func Read(fd int, p []byte) (int, error) {
	for {
		r, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, syscall.Errno(e)
		}
		return int(r), nil
	}
}

// Write writes p to fd (a socket; no SIGPIPE).
func Write(fd int, p []byte) (int, error) {
	for {
		r, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)), unix.MSG_NOSIGNAL, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, syscall.Errno(e)
		}
		return int(r), nil
	}
}

// Writev writes iov to fd with one system call.
func Writev(fd int, iov []unix.Iovec) (int, error) {
	if len(iov) == 0 {
		return 0, nil
	}
	for {
		r, _, e := unix.RawSyscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, syscall.Errno(e)
		}
		return int(r), nil
	}
}
