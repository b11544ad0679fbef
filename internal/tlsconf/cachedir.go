package tlsconf

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// cacheDirMode is the only mode the certificate cache may have: it holds the
// ACME account key and the private keys of issued certificates.
const cacheDirMode fs.FileMode = 0o700

// PrepareCacheDir makes dir ready to serve as the ACME certificate cache
// and returns its cleaned absolute path.
//
// A leading "~/" (or a bare "~") is replaced by the home directory from
// os.UserHomeDir. A missing directory is created, parents included, with
// mode 0700. An existing path is refused with ErrCacheNotDir when it is not a
// directory and with ErrCacheNotOwned when another user owns it; otherwise
// its mode is forced to 0700. Symbolic links are followed: the checks and the
// mode change apply to the directory they point at.
func PrepareCacheDir(dir string) (string, error) {
	if dir == "" {
		return "", ErrCacheDirEmpty
	}
	expanded, err := expandHome(dir)
	if err != nil {
		return "", err
	}
	abs, err := filepath.Abs(expanded)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrCacheDir, err)
	}

	fi, err := os.Stat(abs)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(abs, cacheDirMode); err != nil {
			return "", fmt.Errorf("%w: %w", ErrCacheDir, err)
		}
		// Stat again rather than trusting MkdirAll: the umask may have
		// narrowed the mode, and the checks below must hold either way.
		fi, err = os.Stat(abs)
	}
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrCacheDir, err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("%w: %s", ErrCacheNotDir, abs)
	}
	if uid, known := ownerUID(fi); known && uid != os.Geteuid() {
		return "", fmt.Errorf("%w: %s (uid %d)", ErrCacheNotOwned, abs, uid)
	}
	// Compare the special bits too, so setgid or sticky bits are cleared.
	special := fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky
	if fi.Mode()&(fs.ModePerm|special) != cacheDirMode {
		if err := os.Chmod(abs, cacheDirMode); err != nil {
			return "", fmt.Errorf("%w: %w", ErrCacheDir, err)
		}
	}
	return abs, nil
}

// expandHome replaces a leading "~" path element by the user's home
// directory. Other uses of "~" (such as "~user/") are left alone.
func expandHome(dir string) (string, error) {
	rest, ok := strings.CutPrefix(dir, "~")
	if !ok || (rest != "" && !strings.HasPrefix(rest, "/") && !strings.HasPrefix(rest, string(filepath.Separator))) {
		return dir, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrHomeDir, err)
	}
	return filepath.Join(home, rest), nil
}
