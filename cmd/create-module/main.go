// Command create-module creates a device and a module identity in an IoT
// hub and prints their keys and the module's connection string.
package main

import (
	"os"

	"github.com/moduletwin/iothub-module-twin/internal/cli"
	"github.com/moduletwin/iothub-module-twin/internal/cli/createmodule"
)

func main() { os.Exit(cli.Main(createmodule.Command)) }
