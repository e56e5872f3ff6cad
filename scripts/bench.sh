#!/bin/sh
# Runs the benchmarks and writes BENCHMARKS.md and bench/results.json:
#   1. installs the Node.js peers' pinned SDKs (npm ci in bench/node),
#   2. runs the Go benchmarks of the emulator (go test -bench in bench/),
#   3. runs the harness (bench/harness) against one fresh iothub-emulator
#      on 127.0.0.1:443 and :8883, the ports Microsoft's Node.js SDKs use.
# As root the harness binds those ports directly; otherwise it runs in a
# private user and network namespace, where that needs no privilege.
#
# Usage: scripts/bench.sh [BIN_DIR]   (BIN_DIR holds `make build`'s commands; default bin)
set -eu

bin=${1:-bin}
cd "$(dirname "$0")/.."

for cmd in create-module update-module-twin receive-twin-patch iothub-emulator; do
	if [ ! -x "$bin/$cmd" ]; then
		echo "bench: $bin/$cmd is missing: run make build first" >&2
		exit 1
	fi
done
if ! command -v node >/dev/null 2>&1; then
	echo "bench: node is not installed: the Node.js peers need Node.js 18 or later" >&2
	exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/iothub-bench-run-XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "bench: installing the Node.js SDKs pinned in bench/node/package-lock.json" >&2
(cd bench/node && npm ci --no-audit --no-fund --loglevel=error)

echo "bench: Go benchmarks of the emulator (go test -bench ./bench)" >&2
go test -run '^$' -bench . -benchtime 3s -count 1 -timeout 5m ./bench | tee "$work/gobench.txt" >&2

go build -o "$work/harness" ./bench/harness
set -- "$work/harness" -bin "$bin" -gobench "$work/gobench.txt" \
	-json bench/results.json -doc BENCHMARKS.md -analysis bench/analysis.md -timeout 11m
if [ "$(id -u)" = 0 ]; then
	"$@"
else
	unshare --user --map-root-user --net sh -c 'ip link set lo up && exec "$@"' sh "$@"
fi
