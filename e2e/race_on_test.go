//go:build race

package e2e_test

// raceEnabled: the race detector slows the server ~10x; tests that load it
// scale down so requests stay inside its 30 s write timeout.
const raceEnabled = true
