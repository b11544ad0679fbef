package peer

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// Idle pooled writers park in writerWorker's select until they time out.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/pyrycode/pyrycode-relay/internal/peer.writerWorker"))
}
