package cli

import "github.com/moduletwin/iothub-module-twin/internal/buildinfo"

// Version describes the build for --version.
func Version() string { return buildinfo.Version() }
