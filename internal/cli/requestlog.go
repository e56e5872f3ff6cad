package cli

import (
	"fmt"
	"io"
	"strings"
	"sync"

	azlog "github.com/Azure/azure-sdk-for-go/sdk/azcore/log"

	"github.com/moduletwin/iothub-module-twin/internal/sas"
)

// azcore's listener is process-wide; logMu serialises writers and the
// installation of listeners.
var logMu sync.Mutex

// startRequestLog makes azcore report each HTTP exchange as one line on w,
// "verbose: PUT https://host/devices/d?api-version=… -> 200 OK (try 1)",
// with any signature redacted. The returned function stops it.
func startRequestLog(w io.Writer) func() {
	logMu.Lock()
	defer logMu.Unlock()
	azlog.SetEvents(azlog.EventResponse, azlog.EventRetryPolicy)
	azlog.SetListener(func(ev azlog.Event, msg string) {
		line := summarize(ev, msg)
		if line == "" {
			return
		}
		logMu.Lock()
		defer logMu.Unlock()
		fmt.Fprintln(w, "verbose: "+sas.Redact(line))
	})
	return func() {
		logMu.Lock()
		defer logMu.Unlock()
		azlog.SetListener(nil)
	}
}

// summarize condenses one azcore log message to a line, or "" to drop it.
func summarize(ev azlog.Event, msg string) string {
	switch ev {
	case azlog.EventResponse:
		return summarizeExchange(msg)
	case azlog.EventRetryPolicy:
		// Only the decision to wait and retry is worth a line:
		// "End Try #1, Delay=800ms".
		if _, delay, ok := strings.Cut(msg, "Delay="); ok && strings.HasPrefix(msg, "End Try") {
			return "retrying in " + strings.TrimSpace(delay)
		}
	}
	return ""
}

// summarizeExchange extracts the request line, the status or error, and the
// try number from azcore's multi-line response record.
func summarizeExchange(msg string) string {
	lines := strings.Split(msg, "\n")
	try := ""
	if i := strings.Index(lines[0], "(Try="); i >= 0 {
		rest := lines[0][i+len("(Try="):]
		if j := strings.IndexAny(rest, "/,)"); j >= 0 {
			try = rest[:j]
		}
	}
	var request, outcome string
	for i, l := range lines[1:] {
		t := strings.TrimSpace(l)
		switch {
		case request == "" && i == 0:
			request = t
		case strings.HasPrefix(t, "RESPONSE Status:"):
			outcome = strings.TrimSpace(strings.TrimPrefix(t, "RESPONSE Status:"))
		case t == "ERROR:" && i+2 < len(lines):
			outcome = "error: " + strings.TrimSpace(lines[i+2])
		}
	}
	if request == "" {
		return ""
	}
	s := request + " -> " + outcome
	if try != "" {
		s += " (try " + try + ")"
	}
	return s
}
