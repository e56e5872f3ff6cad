package emulator

import (
	"os"
	"path/filepath"
	"testing"
)

// A restart on the same ports must not rewrite endpoint.json: on a full
// disk the rewrite fails and the emulator could not start again.
func TestUnchangedEndpointIsNotRewritten(t *testing.T) {
	dir := t.TempDir()
	ep := endpoint{HostName: "localhost", Port: "8443", MQTTAddr: "localhost:8883"}
	if err := writeEndpoint(dir, ep); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, endpointFile)
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeEndpoint(dir, ep); err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) {
		t.Error("an unchanged endpoint was written again (the file was replaced)")
	}
	ep.Port = "9443"
	if err := writeEndpoint(dir, ep); err != nil {
		t.Fatal(err)
	}
	got, _, err := readEndpoint(dir)
	if err != nil || got != ep {
		t.Errorf("after a port change read %+v, %v; want %+v", got, err, ep)
	}
}
