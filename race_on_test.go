//go:build race

package main

// raceEnabled: the race detector slows the server ~10x; tests that load it
// scale down so requests stay inside its 30 s write timeout.
const raceEnabled = true
