// Package bench holds Herd's end-to-end benchmarks: a real `herd serve`
// built from this tree in a child process, driven over its public
// interfaces (REST, MQTT) by simulated fleets in the benchmark process.
// docs/benchmarks.md records the figures and the commands.
package bench
