#!/usr/bin/env bash
# The tutorial "Get started with IoT Hub module identity and module twin" in
# one command, on a throwaway local hub: create-module, then receive-twin-patch
# listening while update-module-twin sets telemetryInterval=122 and waits for
# the module's acknowledgement. Everything it starts is stopped, and its files
# live in a temporary directory that is removed at the end.
set -euo pipefail

bin=$(cd "${1:-bin}" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/iothub-demo.XXXXXX")
emulator_pid=""
receiver_pid=""
step="starting"

cleanup() {
	status=$?
	for pid in $receiver_pid $emulator_pid; do
		kill -INT "$pid" 2>/dev/null || true
	done
	for pid in $receiver_pid $emulator_pid; do
		wait "$pid" 2>/dev/null || true
	done
	if [ $status -ne 0 ]; then
		echo >&2
		echo "demo failed while $step (exit status $status)." >&2
		for log in emulator.log receiver.err; do
			if [ -s "$work/$log" ]; then
				echo "--- last lines of $log:" >&2
				tail -n 15 "$work/$log" >&2
			fi
		done
	fi
	rm -rf "$work"
	exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

heading() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
[ -n "${NO_COLOR:-}" ] || [ ! -t 1 ] && heading() { printf '\n== %s\n' "$*"; }
show() { printf '$ %s\n' "$*"; }

# await FILE PATTERN PID: wait up to 20 s until FILE matches PATTERN, while
# PID is alive.
await() {
	for _ in $(seq 200); do
		grep -q -- "$2" "$1" 2>/dev/null && return 0
		kill -0 "$3" 2>/dev/null || { echo "process $3 exited early" >&2; return 1; }
		sleep 0.1
	done
	echo "timed out waiting for \"$2\" in $(basename "$1")" >&2
	return 1
}

heading "Starting iothub-emulator, a local IoT Hub (throwaway data in $work)"
step="starting iothub-emulator"
"$bin/iothub-emulator" --data-dir "$work/hub" --https-addr 127.0.0.1:0 --mqtt-addr 127.0.0.1:0 --inspector-addr 127.0.0.1:0 \
	>"$work/emulator.env" 2>"$work/emulator.log" &
emulator_pid=$!
await "$work/emulator.env" IOTHUB_MQTT_ADDR "$emulator_pid"
set -a
# shellcheck disable=SC1091
. "$work/emulator.env"
set +a
echo "service API: https://${IOTHUB_CONNECTION_STRING#HostName=}" | sed 's/;.*//'
echo "MQTT:        $IOTHUB_MQTT_ADDR (TLS)"
echo "CA:          $IOTHUB_CA_FILE"

heading "1. create-module  (the tutorial's CreateModule.py)"
step="running create-module"
show create-module --device-id myFirstDevice --module-id myFirstModule
"$bin/create-module" --device-id myFirstDevice --module-id myFirstModule
"$bin/create-module" --device-id myFirstDevice --module-id myFirstModule --output json >"$work/module.json"
IOTHUB_MODULE_CONNECTION_STRING=$(sed -n 's/^ *"moduleConnectionString": "\(.*\)",\{0,1\}$/\1/p' "$work/module.json")
[ -n "$IOTHUB_MODULE_CONNECTION_STRING" ] || { echo "create-module printed no module connection string" >&2; exit 1; }
export IOTHUB_MODULE_CONNECTION_STRING
echo "(a second run reuses both identities: $(grep -c '"result": "existing"' "$work/module.json") of 2 reported as existing)"

heading "2. receive-twin-patch --ack  (the tutorial's ReceiveModuleTwinDesiredPropertiesPatch.py)"
step="starting receive-twin-patch"
show receive-twin-patch --ack '&'
"$bin/receive-twin-patch" --ack >"$work/receiver.out" 2>"$work/receiver.err" &
receiver_pid=$!
await "$work/receiver.err" "waiting for desired property patches" "$receiver_pid"
sed 's/^/  [receiver] /' "$work/receiver.out"

heading "3. update-module-twin  (the tutorial's UpdateModuleTwinDesiredProperties.py)"
step="running update-module-twin"
show update-module-twin --set telemetryInterval=122 --wait-ack 10s
"$bin/update-module-twin" --set telemetryInterval=122 --wait-ack 10s

heading "What the module received"
step="waiting for the receiver to print the patch"
await "$work/receiver.out" "telemetryInterval" "$receiver_pid"
sed 's/^/  [receiver] /' "$work/receiver.out"

heading "Done: stopping receive-twin-patch and iothub-emulator"
step="stopping"
kill -INT "$receiver_pid"
wait "$receiver_pid"
receiver_pid=""
kill -INT "$emulator_pid"
wait "$emulator_pid"
emulator_pid=""
echo "The tutorial ran end to end: the patch telemetryInterval=122 was received and acknowledged."
