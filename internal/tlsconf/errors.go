package tlsconf

import "errors"

// ErrCacheDirEmpty is returned by PrepareCacheDir when no directory is given.
var ErrCacheDirEmpty = errors.New("tlsconf: certificate cache directory not set")

// ErrHomeDir is returned by PrepareCacheDir when a path starting with "~/"
// cannot be expanded because the home directory is unknown.
var ErrHomeDir = errors.New("tlsconf: cannot determine home directory")

// ErrCacheNotDir is returned by PrepareCacheDir when the path exists but is
// not a directory.
var ErrCacheNotDir = errors.New("tlsconf: certificate cache path is not a directory")

// ErrCacheNotOwned is returned by PrepareCacheDir when the directory belongs
// to a user other than the effective user of this process. Its permissions
// are left untouched in that case.
var ErrCacheNotOwned = errors.New("tlsconf: certificate cache directory is owned by another user")

// ErrCacheDir wraps a file-system error met while creating, inspecting or
// restricting the certificate cache directory.
var ErrCacheDir = errors.New("tlsconf: cannot prepare certificate cache directory")

// ErrCertPair wraps any failure to read or parse an operator-provided
// certificate and private key, including a key that does not match the
// certificate. The wrapped error never contains key material.
var ErrCertPair = errors.New("tlsconf: cannot load certificate and key")

// ErrCACert is returned by LoadCertPool when the file cannot be read or
// holds no PEM certificate.
var ErrCACert = errors.New("tlsconf: cannot load CA certificates")
