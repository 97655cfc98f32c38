//go:build !failpoint

package failpoint

import (
	"os"
	"testing"
)

// In a normal build nothing can arm a failpoint, not even the variable.
func TestOffBuildIgnoresTheEnvironment(t *testing.T) {
	t.Setenv(Env, "x")
	if Enabled {
		t.Fatal("Enabled in a build without the failpoint tag")
	}
	Hit("x", "") // would kill the test process if it fired
	if os.Getenv(Env) != "x" {
		t.Fatal("environment changed")
	}
}
