// Command iothub-emulator runs a local IoT Hub for development and tests.
package main

import (
	"os"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/emulatorcli"
)

func main() { os.Exit(emulatorcli.Main()) }
