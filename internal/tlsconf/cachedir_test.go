package tlsconf

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func requireMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.IsDir() {
		t.Fatalf("%s is not a directory", path)
	}
	if got := fi.Mode() & (fs.ModePerm | fs.ModeSetgid | fs.ModeSetuid | fs.ModeSticky); got != want {
		t.Fatalf("mode of %s = %v, want %v", path, got, want)
	}
}

func TestPrepareCacheDir(t *testing.T) {
	t.Run("creates missing directory and parents with 0700", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "a", "b", "certs")
		got, err := PrepareCacheDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if got != dir {
			t.Fatalf("got %q, want %q", got, dir)
		}
		requireMode(t, dir, 0o700)
	})

	t.Run("forces existing 0755 directory to 0700", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "certs")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o755); err != nil { // undo the umask
			t.Fatal(err)
		}
		if _, err := PrepareCacheDir(dir); err != nil {
			t.Fatal(err)
		}
		requireMode(t, dir, 0o700)
	})

	t.Run("clears setgid and sticky bits", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "certs")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o700|fs.ModeSetgid|fs.ModeSticky); err != nil {
			t.Fatal(err)
		}
		if _, err := PrepareCacheDir(dir); err != nil {
			t.Fatal(err)
		}
		requireMode(t, dir, 0o700)
	})

	t.Run("returns a clean absolute path", func(t *testing.T) {
		base := t.TempDir()
		t.Chdir(base)
		got, err := PrepareCacheDir("./x/../certs/")
		if err != nil {
			t.Fatal(err)
		}
		if want := filepath.Join(base, "certs"); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
		requireMode(t, got, 0o700)
	})

	t.Run("refuses a regular file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "certs")
		if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := PrepareCacheDir(path)
		if !errors.Is(err, ErrCacheNotDir) {
			t.Fatalf("err = %v, want ErrCacheNotDir", err)
		}
	})

	t.Run("refuses a directory owned by another user", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to give a directory to another uid")
		}
		dir := filepath.Join(t.TempDir(), "certs")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		_, err := PrepareCacheDir(dir)
		if !errors.Is(err, ErrCacheNotOwned) {
			t.Fatalf("err = %v, want ErrCacheNotOwned", err)
		}
		requireMode(t, dir, 0o755) // someone else's directory is left alone
	})

	t.Run("expands ~/ to the home directory", func(t *testing.T) {
		home := t.TempDir()
		t.Setenv("HOME", home)
		got, err := PrepareCacheDir("~/.pyrycode-relay/certs")
		if err != nil {
			t.Fatal(err)
		}
		want := filepath.Join(home, ".pyrycode-relay", "certs")
		if got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
		requireMode(t, want, 0o700)
		requireMode(t, filepath.Dir(want), 0o700)
	})

	t.Run("leaves ~user alone", func(t *testing.T) {
		base := t.TempDir()
		t.Chdir(base)
		got, err := PrepareCacheDir("~nobody/certs")
		if err != nil {
			t.Fatal(err)
		}
		if want := filepath.Join(base, "~nobody", "certs"); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	})

	t.Run("refuses an empty path", func(t *testing.T) {
		if _, err := PrepareCacheDir(""); !errors.Is(err, ErrCacheDirEmpty) {
			t.Fatalf("err = %v, want ErrCacheDirEmpty", err)
		}
	})
}
