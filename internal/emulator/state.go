package emulator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/atomicfile"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/hub"
)

// Files of a data directory besides the certificates.
const (
	dbFile       = "hub.db"
	policiesFile = "policies.json"
	endpointFile = "endpoint.json"
)

// DefaultDataDir is the per-user directory the emulator keeps its hub in.
func DefaultDataDir() (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("find a per-user cache directory (set --data-dir): %w", err)
	}
	return filepath.Join(base, "iothub-emulator"), nil
}

type policiesDoc struct {
	Policies []hub.Policy `json:"policies"`
}

// loadOrCreatePolicies reads the hub's shared access policies, creating
// the default ones with fresh keys on first use. They live in a file of
// their own so that `env` can read them while an emulator holds the store.
func loadOrCreatePolicies(dir string) ([]hub.Policy, error) {
	path := filepath.Join(dir, policiesFile)
	b, err := os.ReadFile(path)
	if err == nil {
		var doc policiesDoc
		if err := json.Unmarshal(b, &doc); err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		if len(doc.Policies) == 0 {
			return nil, fmt.Errorf("read %s: no policies", path)
		}
		return doc.Policies, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read policies: %w", err)
	}
	ps, err := hub.DefaultPolicies()
	if err != nil {
		return nil, err
	}
	b, err = json.MarshalIndent(policiesDoc{Policies: ps}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode policies: %w", err)
	}
	if err := atomicfile.Write(path, b, 0o600); err != nil {
		return nil, err
	}
	return ps, nil
}

// endpoint is where the last emulator on a data directory served.
type endpoint struct {
	HostName string `json:"hostName"`
	Port     string `json:"port"`
	MQTTAddr string `json:"mqttAddr,omitempty"`
}

func readEndpoint(dir string) (endpoint, bool, error) {
	path := filepath.Join(dir, endpointFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return endpoint{}, false, nil
	}
	if err != nil {
		return endpoint{}, false, fmt.Errorf("read %s: %w", path, err)
	}
	var ep endpoint
	if err := json.Unmarshal(b, &ep); err != nil || ep.HostName == "" || ep.Port == "" {
		return endpoint{}, false, fmt.Errorf("read %s: not an endpoint record", path)
	}
	return ep, true, nil
}

// writeEndpoint records where the hub listens. An unchanged record is left
// as it is, so that a restart on the same ports needs no free disk space.
func writeEndpoint(dir string, ep endpoint) error {
	b, err := json.Marshal(ep)
	if err != nil {
		return fmt.Errorf("encode endpoint: %w", err)
	}
	path := filepath.Join(dir, endpointFile)
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, b) {
		return nil
	}
	return atomicfile.Write(path, b, 0o644)
}

// ShellLines formats the settings a shell needs to reach the hub:
// IOTHUB_CONNECTION_STRING, IOTHUB_CA_FILE and, when mqttAddr is known,
// IOTHUB_MQTT_ADDR (the MQTT listener, read by receive-twin-patch), as
// export statements quoted for POSIX shells, so that eval makes them visible
// to the tools it runs.
func ShellLines(connectionString, caFile, mqttAddr string) string {
	lines := "export IOTHUB_CONNECTION_STRING=" + shellQuote(connectionString) + "\n" +
		"export IOTHUB_CA_FILE=" + shellQuoteIfNeeded(caFile) + "\n"
	if mqttAddr != "" {
		lines += "export IOTHUB_MQTT_ADDR=" + shellQuoteIfNeeded(mqttAddr) + "\n"
	}
	return lines
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func shellQuoteIfNeeded(s string) string {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+:@%,=", r)) {
			return shellQuote(s)
		}
	}
	if s == "" {
		return "''"
	}
	return s
}
