//go:build !linux

package loadgen

// RaiseFileLimit is a no-op where the tool does not know how.
func RaiseFileLimit(want uint64) (uint64, error) { return want, nil }
