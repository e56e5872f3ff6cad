package emulator

import (
	"fmt"
	"os"
	"time"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/certs"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/entra"
)

// Entra returns the emulator's local Microsoft Entra ID tenant.
func (e *Emulator) Entra() *entra.Issuer { return e.entra }

// AuthorityHost is AZURE_AUTHORITY_HOST for a hub at hostName:port.
func AuthorityHost(hostName, port string) string {
	return "https://" + hostWithPort(hostName, port) + "/"
}

// PrincipalLines registers principal name with roles in dataDir's tenant and
// returns export lines for a shell: what azidentity's environment credential
// reads (AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET,
// AZURE_AUTHORITY_HOST) and what the tools read to reach the hub
// (IOTHUB_HOSTNAME, IOTHUB_CA_FILE). The client secret appears only here.
func PrincipalLines(dataDir, hostName, port, name string, roles []string) (string, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", fmt.Errorf("create data directory: %w", err)
	}
	m, err := certs.Ensure(dataDir, certs.Names(hostName), time.Now())
	if err != nil {
		return "", err
	}
	p, secret, tenantID, err := entra.Add(dataDir, name, roles)
	if err != nil {
		return "", err
	}
	return "export AZURE_TENANT_ID=" + exportValue(tenantID) +
		"export AZURE_CLIENT_ID=" + exportValue(p.ClientID) +
		"export AZURE_CLIENT_SECRET=" + shellQuote(secret) + "\n" +
		"export AZURE_AUTHORITY_HOST=" + exportValue(AuthorityHost(hostName, port)) +
		"export IOTHUB_HOSTNAME=" + exportValue(hostWithPort(hostName, port)) +
		"export IOTHUB_CA_FILE=" + exportValue(m.CAFile), nil
}

// exportValue quotes a value for an export line and ends the line.
func exportValue(s string) string { return shellQuoteIfNeeded(s) + "\n" }
