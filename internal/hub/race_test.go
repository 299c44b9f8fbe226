//go:build race

package hub_test

// raceEnabled says the tests run with the race detector, whose builds have
// larger frames and stacks than a release build.
const raceEnabled = true
