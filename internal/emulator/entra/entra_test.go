package entra

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestMatchAction(t *testing.T) {
	for _, c := range []struct {
		pattern, action string
		want            bool
	}{
		{"Microsoft.Devices/IotHubs/*", ActionDevicesWrite, true},
		{"Microsoft.Devices/IotHubs/*/read", ActionTwinsRead, true},
		{"Microsoft.Devices/IotHubs/*/read", ActionStatisticsRead, true},
		{"Microsoft.Devices/IotHubs/*/read", ActionTwinsWrite, false},
		{"Microsoft.Devices/IotHubs/*/read", ActionMethodsInvoke, false},
		{"Microsoft.Devices/IotHubs/devices/*", ActionDevicesDelete, true},
		{"Microsoft.Devices/IotHubs/devices/*", ActionTwinsRead, false},
		{"microsoft.devices/iothubs/twins/*", ActionTwinsWrite, true}, // Azure ignores case
		{ActionTwinsRead, ActionTwinsRead, true},
		{ActionTwinsRead, ActionTwinsWrite, false},
	} {
		if got := matchAction(c.pattern, c.action); got != c.want {
			t.Errorf("matchAction(%q, %q) = %v, want %v", c.pattern, c.action, got, c.want)
		}
	}
}

func TestCanonicalRoles(t *testing.T) {
	got, err := CanonicalRoles([]string{"iot hub twin contributor", "4fc6c259-987e-4a07-842e-c321cc9d413f", "IoT Hub Twin Contributor"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, "|") != "IoT Hub Data Contributor|IoT Hub Twin Contributor" {
		t.Fatalf("got %q", got)
	}
	if _, err := CanonicalRoles([]string{"Owner"}); err == nil || !strings.Contains(err.Error(), `unknown role "Owner"`) {
		t.Fatalf("Owner: %v", err)
	}
}

// Concurrent adds from separate writers (as separate processes would be)
// lose none and keep one tenant.
func TestConcurrentAddsKeepEveryPrincipal(t *testing.T) {
	dir := t.TempDir()
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, _, err := Add(dir, fmt.Sprintf("p%d", i), []string{"IoT Hub Data Reader"})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	tenant, ps, err := List(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 20 || tenant == "" {
		t.Fatalf("tenant %q, %d principals, want 20", tenant, len(ps))
	}
	b, err := os.ReadFile(filepath.Join(dir, directoryFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, directoryFile)); fi.Mode().Perm() != 0o600 {
		t.Fatalf("principals file mode %v, want 0600", fi.Mode().Perm())
	}
	_, secret, _, err := Add(dir, "last", nil)
	if err != nil {
		t.Fatal(err)
	}
	if b2, _ := os.ReadFile(filepath.Join(dir, directoryFile)); strings.Contains(string(b2), secret) || len(b2) <= len(b) {
		t.Fatal("the principals file holds the client secret, or the principal was not written")
	}
	if _, _, _, err := Add(dir, "last", nil); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("duplicate add: %v", err)
	}
}

func TestBrokenPrincipalsFileIsAnError(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, directoryFile), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := Add(dir, "x", nil); err == nil || !strings.Contains(err.Error(), "not a principals file") {
		t.Fatalf("Add on a broken file: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, directoryFile)); string(b) != "{not json" {
		t.Fatal("a failed Add rewrote the broken file")
	}
}
