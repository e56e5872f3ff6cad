package inspector

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net"
	"net/http"
)

const (
	loginPath  = "/login"
	cookieName = "iothub_inspector"
	csrfField  = "csrf"
)

// guard sets the headers every answer carries and refuses a Host that is
// not this loopback listener: a page on another site that rebinds its
// name to 127.0.0.1 sends its own name as Host.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "same-origin") // "no-referrer" would make browsers send "Origin: null" on its own forms
		h.Set("Cache-Control", "no-store")
		if !s.loopbackHost(r.Host) {
			http.Error(w, "this inspector answers only to its loopback address (http://"+s.Addr()+")", http.StatusMisdirectedRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) loopbackHost(hostPort string) bool {
	host, port, err := net.SplitHostPort(hostPort)
	if err != nil {
		return false
	}
	_, own, _ := net.SplitHostPort(s.Addr())
	if port != own {
		return false
	}
	ip := net.ParseIP(host)
	return host == "localhost" || ip != nil && ip.IsLoopback()
}

// login trades the one-time secret for a session cookie.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	given := r.URL.Query().Get("token")
	s.mu.Lock()
	ok := s.token != "" && subtle.ConstantTimeCompare([]byte(given), []byte(s.token)) == 1
	var session string
	if ok {
		var err error
		if session, err = secret(); err != nil {
			s.mu.Unlock()
			http.Error(w, "could not make a session", http.StatusInternalServerError)
			return
		}
		s.token = "" // one time only
		s.sessions[session] = true
	}
	s.mu.Unlock()
	if !ok {
		s.log.Info("inspector login refused: the link is wrong or was used already", "remote", r.RemoteAddr)
		s.denied(w, "This login link is wrong or was used already.")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: session, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/", http.StatusSeeOther) // the secret leaves the address bar
}

// session returns the request's valid session, or "".
func (s *Server) session(r *http.Request) string {
	c, err := r.Cookie(cookieName)
	if err != nil {
		return ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for known := range s.sessions {
		if subtle.ConstantTimeCompare([]byte(c.Value), []byte(known)) == 1 {
			return known
		}
	}
	return ""
}

type sessionHandler func(w http.ResponseWriter, r *http.Request, session string)

// authed lets through requests with a valid session cookie.
func (s *Server) authed(next sessionHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		session := s.session(r)
		if session == "" {
			s.denied(w, "Open the inspector with the link iothub-emulator printed when it started.")
			return
		}
		next(w, r, session)
	})
}

func (s *Server) denied(w http.ResponseWriter, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(http.StatusUnauthorized)
	_ = s.pages.ExecuteTemplate(w, "denied.html", msg)
}

// csrfToken is the token a session's forms carry.
func (s *Server) csrfToken(session string) string {
	m := hmac.New(sha256.New, s.csrfKey)
	m.Write([]byte(session))
	return hex.EncodeToString(m.Sum(nil))
}

// writeCheck refuses a write that another site may have sent: it needs
// this listener's Origin, a same-origin fetch (where the browser says),
// and the session's CSRF token.
func (s *Server) writeCheck(next sessionHandler) sessionHandler {
	return func(w http.ResponseWriter, r *http.Request, session string) {
		origin := r.Header.Get("Origin")
		site := r.Header.Get("Sec-Fetch-Site")
		switch {
		case origin != "http://"+r.Host:
			s.forbidden(w, r, "the request did not come from this inspector's page (Origin "+quoteOr(origin)+")")
		case site != "" && site != "same-origin":
			s.forbidden(w, r, "the request did not come from this inspector's page (Sec-Fetch-Site "+site+")")
		case !hmac.Equal([]byte(r.PostFormValue(csrfField)), []byte(s.csrfToken(session))):
			s.forbidden(w, r, "the form's CSRF token is missing or wrong: reload the page")
		default:
			next(w, r, session)
		}
	}
}

func quoteOr(s string) string {
	if s == "" {
		return "missing"
	}
	return `"` + s + `"`
}

func (s *Server) forbidden(w http.ResponseWriter, r *http.Request, why string) {
	s.log.Info("inspector refused a write", "path", r.URL.Path, "reason", why)
	http.Error(w, "refused: "+why, http.StatusForbidden)
}
