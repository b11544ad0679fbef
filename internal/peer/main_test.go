package peer

import (
	"fmt"
	"os"
	"testing"

	"github.com/pyrycode/pyrycode-relay/internal/evloop"
	"go.uber.org/goleak"
)

// testLoops serves the tests' TCP connections on event loops when
// RELAY_TEST_IO=loop (nil: a reader goroutine each, Run's own path). CI
// runs the package both ways.
var testLoops *evloop.Group

func TestMain(m *testing.M) {
	if os.Getenv("RELAY_TEST_IO") == "loop" {
		g, err := evloop.NewGroup(2)
		if err != nil {
			fmt.Fprintln(os.Stderr, "RELAY_TEST_IO=loop:", err)
			os.Exit(2)
		}
		testLoops = g
	}
	code := m.Run()
	if testLoops != nil {
		testLoops.Close()
	}
	if code == 0 {
		// Idle pooled writers park in writerWorker's select until they time out.
		if err := goleak.Find(goleak.IgnoreTopFunction("github.com/pyrycode/pyrycode-relay/internal/peer.writerWorker")); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}
