package tlsconf

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/acme/autocert"

	"github.com/pyrycode/pyrycode-relay/internal/acmetest"
)

// cacheFiles lists the names in dir.
func cacheFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// Every entry the manager writes (account key, certificate, the +directory
// and +failures records) is synced before it is renamed into place, and the
// directory after the rename: a power loss right after a write leaves the
// old file or the new one, never an empty one.
func TestFileCachePutIsDurable(t *testing.T) {
	dir := newCacheDir(t)
	c := newFileCache(dir)
	var synced []string // what was synced, in order: "file <content>" or "dir <entry content>"
	c.syncFile = func(f *os.File) error {
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		if fi.IsDir() {
			data, _ := os.ReadFile(filepath.Join(dir, accountKeyName))
			synced = append(synced, "dir "+string(data))
		} else {
			data, err := os.ReadFile(f.Name())
			if err != nil {
				return err
			}
			if filepath.Base(f.Name()) == accountKeyName {
				t.Errorf("the entry itself was written in place")
			}
			synced = append(synced, "file "+string(data))
		}
		return f.Sync()
	}
	for _, content := range []string{"first", "second"} {
		if err := c.put(accountKeyName, []byte(content)); err != nil {
			t.Fatal(err)
		}
	}
	// The new content is synced while the old one is still in place, then
	// the directory once the rename has put the new content in place.
	want := []string{"file first", "dir first", "file second", "dir second"}
	if !slices.Equal(synced, want) {
		t.Errorf("synced %q, want %q", synced, want)
	}
}

// Entries round-trip, are 0600, keep autocert's names, and leave no
// temporary file behind; a missing entry is autocert.ErrCacheMiss.
func TestFileCacheRoundTrip(t *testing.T) {
	dir := newCacheDir(t)
	c := newFileCache(dir)
	entries := map[string][]byte{
		accountKeyName:            []byte("-----BEGIN EC PRIVATE KEY-----\n...\n"),
		testDomain:                []byte("key and chain"),
		testDomain + "+directory": []byte("https://acme-v02.api.letsencrypt.org/directory\n"),
		testDomain + "+failures":  []byte(`{"consecutive":1}`),
	}
	for name, data := range entries {
		if err := c.put(name, data); err != nil {
			t.Fatalf("put %s: %v", name, err)
		}
	}
	// autocert reads what was written: the formats and names are its own.
	dc := autocert.DirCache(dir)
	for name, data := range entries {
		got, err := c.get(name)
		if err != nil || string(got) != string(data) {
			t.Errorf("get %s = %q, %v; want %q", name, got, err, data)
		}
		if got, err := dc.Get(t.Context(), name); err != nil || string(got) != string(data) {
			t.Errorf("autocert reads %s as %q, %v", name, got, err)
		}
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", name, fi.Mode().Perm())
		}
	}
	names := cacheFiles(t, dir)
	if len(names) != len(entries) {
		t.Errorf("cache holds %q, want only the %d entries", names, len(entries))
	}
	if _, err := c.get("missing"); !errors.Is(err, autocert.ErrCacheMiss) {
		t.Errorf("get of a missing entry = %v, want autocert.ErrCacheMiss", err)
	}
	if err := c.remove(testDomain + "+failures"); err != nil {
		t.Fatal(err)
	}
	if err := c.remove(testDomain + "+failures"); err != nil {
		t.Errorf("removing a missing entry: %v", err)
	}
	if _, err := c.get(testDomain + "+failures"); !errors.Is(err, autocert.ErrCacheMiss) {
		t.Errorf("removed entry still read: %v", err)
	}
}

// A write that fails midway leaves the old entry as it was and no temporary
// file.
func TestFileCachePutFailureKeepsOldEntry(t *testing.T) {
	const old = "the old account key"
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, c *fileCache) // makes the next put fail
		entry string
	}{
		{"sync fails after the write", func(t *testing.T, c *fileCache) {
			c.syncFile = func(f *os.File) error {
				if fi, err := f.Stat(); err == nil && !fi.IsDir() {
					return errors.New("input/output error")
				}
				return f.Sync()
			}
		}, accountKeyName},
		{"rename fails", func(t *testing.T, c *fileCache) {
			// The entry's name is taken by a non-empty directory, which no
			// rename replaces.
			if err := os.Mkdir(filepath.Join(c.dir, "blocked"), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(c.dir, "blocked", "x"), []byte(old), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "blocked"},
		{"read-only directory", func(t *testing.T, c *fileCache) {
			if os.Geteuid() == 0 {
				t.Skip("root writes to read-only directories")
			}
			if err := os.Chmod(c.dir, 0o500); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = os.Chmod(c.dir, cacheDirMode) })
		}, accountKeyName},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := newCacheDir(t)
			c := newFileCache(dir)
			if err := c.put(accountKeyName, []byte(old)); err != nil {
				t.Fatal(err)
			}
			tc.setup(t, c)
			before := cacheFiles(t, dir)
			if err := c.put(tc.entry, []byte("a new account key")); err == nil {
				t.Fatal("put succeeded")
			}
			if got, err := os.ReadFile(filepath.Join(dir, accountKeyName)); err != nil || string(got) != old {
				t.Errorf("old entry is now %q, %v; want %q", got, err, old)
			}
			if tc.entry == "blocked" {
				if got, err := os.ReadFile(filepath.Join(dir, "blocked", "x")); err != nil || string(got) != old {
					t.Errorf("the directory in the way changed: %q, %v", got, err)
				}
			}
			if after := cacheFiles(t, dir); !slices.Equal(after, before) {
				t.Errorf("cache holds %q after the failure, had %q", after, before)
			}
			for _, n := range cacheFiles(t, dir) {
				if strings.Contains(n, ".tmp") {
					t.Errorf("temporary file %s left behind", n)
				}
			}
		})
	}
}

// The manager writes every cache entry through the durable writer: the
// account key, the certificate and its +directory record after an
// issuance, the +failures record after a failure.
func TestACMEWritesCacheDurably(t *testing.T) {
	pb := acmetest.Start(t, acmetest.Options{Domain: testDomain})
	logs := new(lockedBuffer)
	a := startPebbleACME(t, pb, logs, time.Minute)
	var synced []string // base names of the temporary files synced, without their random suffix
	a.cache.syncFile = func(f *os.File) error {
		if fi, err := f.Stat(); err == nil && !fi.IsDir() {
			name, _, _ := strings.Cut(filepath.Base(f.Name()), ".tmp-")
			synced = append(synced, name)
		}
		return f.Sync()
	}
	pb.SetResolving(false)
	a.attempt(t.Context()) // fails: the +failures record
	pb.SetResolving(true)
	a.attempt(t.Context())
	if a.cert.Load() == nil {
		t.Fatalf("no certificate:\n%s", logs)
	}
	want := []string{accountKeyName, testDomain + "+failures", testDomain, testDomain + "+directory"}
	if !slices.Equal(synced, want) {
		t.Errorf("synced %q, want %q", synced, want)
	}
	for _, n := range cacheFiles(t, a.cache.dir) {
		if strings.Contains(n, ".tmp") {
			t.Errorf("temporary file %s left behind", n)
		}
	}
}
