// Package api is reaperd's HTTP/JSON API, served on a Unix socket, and the
// client the CLI uses to call it.
//
// # Basics
//
// Every route is under /v1/ except /healthz and /metrics. Request and
// response bodies are JSON. Errors are
//
//	{"error": {"code": "invalid", "message": "ttl: invalid duration \"5x\": use a value such as \"30m\""}}
//
// with a stable code (see the E* constants in package reaper) and a status
// from a single table (StatusCode). The caller's uid and groups come from the
// socket's peer credentials (ConnContext); the uid is recorded as the owner
// of what it registers. The server depends on reaper.Service only.
//
// The files follow the concerns: server.go (routing, the error table),
// decode.go (strict request decoding), sandboxes.go, sessions.go, ops.go
// (sweep, discovery, audit, status, health), backup.go (the ledger's
// copy), tokens.go (the TCP listener's tokens), peercred.go.
//
// # Caveats
//
// Request bodies are limited to MaxBodyBytes and must not hold unknown
// fields, so that a misspelt "ttl" is an error rather than an entry that
// never expires.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/reaperd/reaperd/reaper"
)

// MaxBodyBytes bounds request bodies.
const MaxBodyBytes = 64 << 10

// Log keys used by the server.
const (
	logMethod = "method"
	logPath   = "path"
	logStatus = "status"
	logUID    = "uid"
	logToken  = "token" // the token's name, never the token
	logErr    = "err"
)

// Server serves the API for a reaper.Service (the engine).
type Server struct {
	Service reaper.Service
	Logger  *slog.Logger
	// Metrics serves /metrics; nil answers 404.
	Metrics http.Handler
	// Status returns what GET /v1/status reports; nil answers 404.
	Status func() Status
	// Ready reports whether /healthz should answer 200; an error is
	// answered 503 with its message. Nil means always ready.
	Ready func() error
	// Ledger serves GET /v1/ledger/backup; nil answers 404.
	Ledger LedgerBackup
	// Access is the ownership rule, here guarding the ledger backup:
	// only root, the daemon's user and admin group members may copy it.
	Access reaper.Access

	mux *http.ServeMux
}

// Handler returns the server's HTTP handler.
func (s *Server) Handler() http.Handler {
	if s.mux == nil {
		s.routes()
	}
	return s
}

func (s *Server) routes() {
	m := http.NewServeMux()
	m.HandleFunc("/v1/sandboxes", s.methods(map[string]http.HandlerFunc{"GET": s.listSandboxes, "POST": s.register}))
	m.HandleFunc("/v1/sandboxes/{provider}/{id}", s.methods(map[string]http.HandlerFunc{"GET": s.getSandbox, "PATCH": s.tag}))
	m.HandleFunc("/v1/sandboxes/{provider}/{id}/release", s.methods(map[string]http.HandlerFunc{"POST": s.release}))
	m.HandleFunc("/v1/sessions", s.methods(map[string]http.HandlerFunc{"GET": s.listSessions}))
	m.HandleFunc("/v1/sessions/{id}", s.methods(map[string]http.HandlerFunc{"GET": s.getSession}))
	m.HandleFunc("/v1/sessions/{id}/heartbeat", s.methods(map[string]http.HandlerFunc{"POST": s.heartbeat}))
	m.HandleFunc("/v1/sessions/{id}/end", s.methods(map[string]http.HandlerFunc{"POST": s.endSession}))
	m.HandleFunc("/v1/sweep", s.methods(map[string]http.HandlerFunc{"POST": s.sweep}))
	m.HandleFunc("/v1/discover", s.methods(map[string]http.HandlerFunc{"POST": s.discover}))
	m.HandleFunc("/v1/audit", s.methods(map[string]http.HandlerFunc{"GET": s.audit}))
	m.HandleFunc("/v1/audit/events", s.methods(map[string]http.HandlerFunc{"GET": s.auditEvents}))
	m.HandleFunc("/v1/audit/report", s.methods(map[string]http.HandlerFunc{"GET": s.auditReport}))
	m.HandleFunc("/v1/status", s.methods(map[string]http.HandlerFunc{"GET": s.status}))
	m.HandleFunc("/v1/ledger/backup", s.methods(map[string]http.HandlerFunc{"GET": s.backup}))
	m.HandleFunc("/healthz", s.methods(map[string]http.HandlerFunc{"GET": s.healthz}))
	m.HandleFunc("/metrics", s.methods(map[string]http.HandlerFunc{"GET": func(w http.ResponseWriter, r *http.Request) {
		if s.Metrics == nil {
			writeError(w, reaper.Errorf(reaper.ENOTFOUND, "metrics are not enabled"))
			return
		}
		s.Metrics.ServeHTTP(w, r)
	}}))
	m.HandleFunc("/{$}", s.methods(map[string]http.HandlerFunc{"GET": s.page}))
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, reaper.Errorf(reaper.ENOTFOUND, "no such endpoint %s %s: see the API section of the README (routes are under /v1/)", r.Method, r.URL.Path))
	})
	s.mux = m
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.mux == nil {
		s.routes()
	}
	sw := &statusWriter{ResponseWriter: w, status: 200}
	s.mux.ServeHTTP(sw, r)
	if s.Logger != nil && s.Logger.Enabled(r.Context(), slog.LevelDebug) {
		attrs := []any{logMethod, r.Method, logPath, r.URL.Path, logStatus, sw.status}
		if c, ok := reaper.CallerFrom(r.Context()); ok && c.Token != "" {
			attrs = append(attrs, logToken, c.Token)
		} else if ok {
			attrs = append(attrs, logUID, c.UID)
		}
		s.Logger.Debug("api request", attrs...)
	}
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) { w.status = code; w.ResponseWriter.WriteHeader(code) }

func (s *Server) methods(h map[string]http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if f, ok := h[r.Method]; ok {
			f(w, r)
			return
		}
		if r.Method == http.MethodHead {
			if f, ok := h["GET"]; ok {
				f(w, r)
				return
			}
		}
		allowed := slices.Sorted(maps.Keys(h))
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		writeError(w, &reaper.Error{Code: codeMethod, Message: fmt.Sprintf("%s is not allowed on %s: use %s", r.Method, r.URL.Path, strings.Join(allowed, " or "))})
	}
}

const codeMethod = "method_not_allowed"

// StatusCode maps an error code to its HTTP status: the single table of
// domain errors to statuses.
func StatusCode(code string) int {
	switch code {
	case reaper.EINVALID, reaper.EUNKNOWN:
		return http.StatusBadRequest
	case reaper.EUNAUTHORIZED:
		return http.StatusUnauthorized
	case reaper.EFORBIDDEN:
		return http.StatusForbidden
	case reaper.ENOTFOUND:
		return http.StatusNotFound
	case codeMethod:
		return http.StatusMethodNotAllowed
	case reaper.ECONFLICT:
		return http.StatusConflict
	case reaper.ETOOLARGE:
		return http.StatusRequestEntityTooLarge
	case reaper.EDISABLED:
		return http.StatusUnprocessableEntity
	case reaper.EUNAVAILABLE:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// ErrorBody is the JSON shape of every error response.
type ErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, err error) {
	var b ErrorBody
	b.Error.Code, b.Error.Message = reaper.ErrorCode(err), reaper.ErrorMessage(err)
	writeJSON(w, StatusCode(b.Error.Code), b)
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		err = reaper.Errorf(reaper.EUNAVAILABLE, "request canceled: %v", err)
	}
	if reaper.ErrorCode(err) == reaper.EINTERNAL && s.Logger != nil {
		s.Logger.Error("api request failed", logMethod, r.Method, logPath, r.URL.Path, logErr, err)
	}
	writeError(w, err)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
