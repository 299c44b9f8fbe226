//go:build !race

package hub_test

// raceEnabled: see race_test.go.
const raceEnabled = false
