package sqlproxy

import (
	"testing"

	"github.com/golcn/golcn/internal/testenv"
)

// TestMain stops the shared MariaDB of the integration tests at exit.
func TestMain(m *testing.M) { testenv.Main(m) }
