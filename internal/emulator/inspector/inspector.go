// Package inspector is the emulator's web inspector: identities and their
// connection state, twins side by side with their versions, editing of
// desired properties and tags through the hub's own twin code, the live
// event stream and each identity's telemetry.
//
// It serves plain HTTP on a loopback address only. Browsers treat
// http://127.0.0.1 and http://localhost as secure contexts, so the page
// opens without a certificate warning and without trusting the emulator's
// CA. Access needs a secret: the one-time link printed at start turns into
// an HttpOnly, SameSite=Strict session cookie. Every write also needs the
// page's own Origin and a CSRF token, and every request a loopback Host
// header (against DNS rebinding).
package inspector

import (
	"crypto/rand"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/events"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/hub"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/telemetry"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// DefaultAddr is where the inspector listens unless told otherwise.
const DefaultAddr = "127.0.0.1:8480"

// Config configures a Server.
type Config struct {
	Addr     string // a loopback host:port; "" = DefaultAddr
	Hub      *hub.Hub
	Bus      *events.Bus
	Messages *telemetry.Buffer
	Logger   *slog.Logger // nil discards
}

// Server is a running inspector.
type Server struct {
	hub      *hub.Hub
	bus      *events.Bus
	messages *telemetry.Buffer
	log      *slog.Logger
	pages    *template.Template
	ln       net.Listener
	srv      *http.Server
	done     chan struct{} // closed by Close: ends event streams
	served   chan struct{}
	csrfKey  []byte

	mu       sync.Mutex
	token    string          // the one-time login secret; "" once used
	sessions map[string]bool // session cookie values
}

// Start binds the listener and serves. The address must be a loopback one:
// the inspector speaks plain HTTP.
func Start(cfg Config) (*Server, error) {
	addr := cfg.Addr
	if addr == "" {
		addr = DefaultAddr
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("--inspector-addr %q is not host:port", addr)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("--inspector-addr %q: the inspector serves plain HTTP and listens on a loopback address only (127.0.0.1, ::1 or localhost)", addr)
	}
	s := &Server{
		hub: cfg.Hub, bus: cfg.Bus, messages: cfg.Messages, log: cfg.Logger,
		done: make(chan struct{}), served: make(chan struct{}), sessions: map[string]bool{},
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.token, err = secret(); err != nil {
		return nil, err
	}
	key, err := secret()
	if err != nil {
		return nil, err
	}
	s.csrfKey = []byte(key)
	if s.pages, err = template.New("").Funcs(funcs).ParseFS(templateFS, "templates/*.html"); err != nil {
		return nil, fmt.Errorf("inspector templates: %w", err)
	}
	if s.ln, err = net.Listen("tcp", addr); err != nil {
		return nil, fmt.Errorf("--inspector-addr: %w", err)
	}
	s.srv = &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	go func() {
		defer close(s.served)
		if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("inspector stopped", "err", err)
		}
	}()
	return s, nil
}

func secret() (string, error) {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("inspector: make a secret: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// Addr is the address the inspector listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// LoginURL is the one-time link that opens the inspector in a browser. It
// holds the secret: print it only where the user alone sees it.
func (s *Server) LoginURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return "http://" + s.Addr() + loginPath + "?" + url.Values{"token": {s.token}}.Encode()
}

// Close ends the event streams and stops serving.
func (s *Server) Close() error {
	close(s.done)
	err := s.srv.Close()
	<-s.served
	return err
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET "+loginPath, s.login)
	mux.Handle("GET /{$}", s.authed(s.identities))
	mux.Handle("GET /twin", s.authed(s.twin))
	mux.Handle("POST /twin", s.authed(s.writeCheck(s.updateTwin)))
	mux.Handle("GET /telemetry", s.authed(s.telemetry))
	mux.Handle("GET /events", s.authed(s.eventsPage))
	mux.Handle("GET /stream", s.authed(s.stream))
	return s.guard(mux)
}
