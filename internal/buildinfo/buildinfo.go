// Package buildinfo describes how a binary was built, for --version.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// BuildVersion may be set at link time
// (-ldflags "-X github.com/moduletwin/iothub-module-twin/internal/buildinfo.BuildVersion=v1.2.3");
// otherwise the module version recorded by the Go toolchain is used.
var BuildVersion string

// Version describes the build: version, VCS revision and time when the
// toolchain recorded them, and the Go version and platform.
func Version() string {
	return versionFrom(debug.ReadBuildInfo())
}

func versionFrom(info *debug.BuildInfo, ok bool) string {
	version := BuildVersion
	var details []string
	if ok {
		if version == "" {
			version = info.Main.Version
		}
		var rev, when string
		dirty := false
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				when = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if rev != "" {
			if len(rev) > 12 {
				rev = rev[:12]
			}
			if dirty {
				rev += "+dirty"
			}
			details = append(details, "commit "+rev)
		}
		if when != "" {
			details = append(details, when)
		}
	}
	if version == "" {
		version = "(devel)"
	}
	details = append(details, fmt.Sprintf("%s %s/%s", runtime.Version(), runtime.GOOS, runtime.GOARCH))
	return version + " (" + strings.Join(details, ", ") + ")"
}
