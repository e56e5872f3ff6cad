// Command receive-twin-patch connects to IoT Hub as a module and prints its
// desired properties and every change to them as it arrives.
package main

import (
	"os"

	"github.com/moduletwin/iothub-module-twin/internal/cli"
	"github.com/moduletwin/iothub-module-twin/internal/cli/receivepatch"
)

func main() { os.Exit(cli.Main(receivepatch.Command)) }
