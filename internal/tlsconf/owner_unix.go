//go:build unix

package tlsconf

import (
	"io/fs"
	"syscall"
)

// ownerUID reports the numeric owner of fi, when the platform exposes one.
func ownerUID(fi fs.FileInfo) (uid int, known bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(st.Uid), true
}
