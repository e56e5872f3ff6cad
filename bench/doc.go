// Package bench holds the benchmarks behind BENCHMARKS.md: Go benchmarks
// of the emulator in this package (go test -bench, never part of a plain
// go test run), the harness that measures the built commands beside their
// Node.js peers (harness, run by scripts/bench.sh), the load generator
// both use (loadgen) and the Node.js peers themselves (node).
package bench
