package txmanager

import (
	"testing"

	"github.com/golcn/golcn/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }
