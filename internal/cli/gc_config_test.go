package cli

import (
	"os"
	"runtime/debug"
	"testing"
)

// TestGCConfig_AppliesUnlessGOGCSet: --gc-percent (serve's and the
// delivery workers': TestHelp_FlagsOnlyWhereUsed) is the GC target unless
// the GOGC environment variable is set.
func TestGCConfig_AppliesUnlessGOGCSet(t *testing.T) {
	prev := debug.SetGCPercent(100)
	defer debug.SetGCPercent(prev)
	t.Setenv("GOGC", "") // whatever it was is set again after the test
	if err := os.Unsetenv("GOGC"); err != nil {
		t.Fatal(err)
	}
	gcConfig{percent: 250}.apply()
	if got := debug.SetGCPercent(100); got != 250 {
		t.Errorf("without GOGC the target is %d, want --gc-percent's 250", got)
	}
	t.Setenv("GOGC", "150")
	gcConfig{percent: 250}.apply()
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("with GOGC set the target became %d: --gc-percent must leave it to GOGC", got)
	}
}
