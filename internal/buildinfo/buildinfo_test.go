package buildinfo

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersionFrom(t *testing.T) {
	info := &debug.BuildInfo{
		Main: debug.Module{Version: "v1.2.3"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123456789abcdef0123"},
			{Key: "vcs.time", Value: "2026-01-02T03:04:05Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	got := versionFrom(info, true)
	for _, want := range []string{"v1.2.3 (", "commit 0123456789ab+dirty", "2026-01-02T03:04:05Z"} {
		if !strings.Contains(got, want) {
			t.Errorf("versionFrom() = %q, want it to contain %q", got, want)
		}
	}
	if got := versionFrom(nil, false); !strings.HasPrefix(got, "(devel) (go") {
		t.Errorf("versionFrom(nil, false) = %q, want \"(devel) (go...\"", got)
	}
}
