//go:build relaypprof

package main

// A profiling build (go build -tags relaypprof) serves net/http/pprof on
// the address in RELAY_PPROF (e.g. 127.0.0.1:6060), for the measurements in
// docs/performance.md. Normal builds do not contain it.

import (
	"net/http"
	_ "net/http/pprof"
	"os"
	"runtime"
	"strconv"
)

func init() {
	// RELAY_MEMPROFILERATE=1 records every allocation in the heap
	// profile (slow; for counting what an idle connection holds).
	if r, err := strconv.Atoi(os.Getenv("RELAY_MEMPROFILERATE")); err == nil && r > 0 {
		runtime.MemProfileRate = r
	}
	if addr := os.Getenv("RELAY_PPROF"); addr != "" {
		go func() { _ = http.ListenAndServe(addr, nil) }()
	}
}
