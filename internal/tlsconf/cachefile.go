package tlsconf

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/crypto/acme/autocert"
)

// fileCache is the ACME cache directory. Its layout and formats are
// autocert.DirCache's (one file per entry, named after it, mode 0600), so
// caches written by autocert or earlier versions keep working; unlike
// DirCache it writes durably: a power loss right after a write leaves the
// old file or the new one, never an empty or partial file.
type fileCache struct {
	dir string
	// syncFile makes a file's (or a directory's) content durable:
	// (*os.File).Sync, but in tests.
	syncFile func(*os.File) error
}

func newFileCache(dir string) *fileCache {
	return &fileCache{dir: dir, syncFile: (*os.File).Sync}
}

// path is where entry name lives; like DirCache, a name cannot leave the
// directory.
func (c *fileCache) path(name string) string {
	return filepath.Join(c.dir, filepath.Clean("/"+name))
}

// get returns the entry's content, or autocert.ErrCacheMiss when there is
// none.
func (c *fileCache) get(name string) ([]byte, error) {
	data, err := os.ReadFile(c.path(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, autocert.ErrCacheMiss
	}
	return data, err
}

// put replaces the entry with data: a 0600 temporary file in the same
// directory is written, synced and closed, then renamed over the entry,
// and the directory is synced so the rename itself survives a power loss.
// On failure the old entry is left as it was and the temporary file is
// removed.
func (c *fileCache) put(name string, data []byte) (err error) {
	if err := os.MkdirAll(c.dir, cacheDirMode); err != nil {
		return err
	}
	dst := c.path(name)
	f, err := os.CreateTemp(filepath.Dir(dst), filepath.Base(dst)+".tmp-*") // mode 0600
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	_, err = f.Write(data)
	if err == nil {
		err = c.syncFile(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return err
	}
	return c.syncDir(filepath.Dir(dst))
}

// rename moves entry from to entry to, durably, replacing to.
func (c *fileCache) rename(from, to string) error {
	if err := os.Rename(c.path(from), c.path(to)); err != nil {
		return err
	}
	return c.syncDir(c.dir)
}

// remove deletes the entry; a missing one is no error.
func (c *fileCache) remove(name string) error {
	err := os.Remove(c.path(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return c.syncDir(c.dir)
}

// syncDir makes the directory's entries (a rename, a removal) durable.
func (c *fileCache) syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = c.syncFile(d)
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
