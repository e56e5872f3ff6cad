// Command update-module-twin updates a module twin's desired properties and
// tags and prints the twin before and after.
package main

import (
	"os"

	"github.com/moduletwin/iothub-module-twin/internal/cli"
	"github.com/moduletwin/iothub-module-twin/internal/cli/updatetwin"
)

func main() { os.Exit(cli.Main(updatetwin.Command)) }
