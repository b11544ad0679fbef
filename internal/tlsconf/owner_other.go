//go:build !unix

package tlsconf

import "io/fs"

// ownerUID reports that ownership is unknown on platforms without numeric
// user ids; PrepareCacheDir then only enforces the directory and its mode.
func ownerUID(fs.FileInfo) (uid int, known bool) {
	return 0, false
}
