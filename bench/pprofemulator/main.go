// Command pprofemulator is iothub-emulator with Go's profiling endpoints
// (net/http/pprof) on a loopback address of its own, for profiling the hub
// under the harness's load:
//
//	go build -o /tmp/prof/iothub-emulator ./bench/pprofemulator
//	cp bin/create-module bin/update-module-twin bin/receive-twin-patch /tmp/prof/
//	go run ./bench/harness -bin /tmp/prof -phases capacity -pprof-addr 127.0.0.1:6060 …
//
// The address comes from $IOTHUB_EMULATOR_PPROF_ADDR (default
// 127.0.0.1:6060); everything else is iothub-emulator's.
package main

import (
	"log"
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof on http.DefaultServeMux
	"os"
	"runtime"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/emulatorcli"
)

func main() {
	addr := os.Getenv("IOTHUB_EMULATOR_PPROF_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6060"
	}
	runtime.SetMutexProfileFraction(100)
	runtime.SetBlockProfileRate(100_000) // one sample per 100 µs blocked
	go func() {
		if err := http.ListenAndServe(addr, nil); err != nil {
			log.Printf("pprof: %v", err)
		}
	}()
	os.Exit(emulatorcli.Main())
}
