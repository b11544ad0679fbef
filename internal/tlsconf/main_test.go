package tlsconf

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/pyrycode/pyrycode-relay/internal/acmetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction(acmetest.LeakedFunction))
}
