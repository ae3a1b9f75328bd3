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
// from a single table (StatusCode). The caller's uid comes from the socket's
// peer credentials and is recorded as the owner of what it registers.
//
// # Caveats
//
// Request bodies are limited to MaxBodyBytes and must not hold unknown
// fields, so that a misspelt "ttl" is an error rather than an entry that
// never expires.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/reaperd/reaperd/reaper"
	"golang.org/x/sys/unix"
)

// MaxBodyBytes bounds request bodies.
const MaxBodyBytes = 64 << 10

// Log keys used by the server.
const (
	logMethod = "method"
	logPath   = "path"
	logStatus = "status"
	logUID    = "uid"
	logErr    = "err"
)

// Status describes the daemon for GET /v1/status.
type Status struct {
	Version   string            `json:"version"`
	Ledger    string            `json:"ledger"`
	Socket    string            `json:"socket"`
	Schedule  string            `json:"schedule"`
	Enabled   []string          `json:"enabled_providers"`
	Disabled  map[string]string `json:"disabled_providers,omitempty"`
	StartedAt time.Time         `json:"started_at"`
}

// Server serves the API for an engine.
type Server struct {
	Engine *reaper.Engine
	Logger *slog.Logger
	// Metrics serves /metrics; nil answers 404.
	Metrics http.Handler
	// Status returns what GET /v1/status reports; nil answers 404.
	Status func() Status
	// Ready reports whether /healthz should answer 200.
	Ready func() error

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
	m.HandleFunc("/v1/status", s.methods(map[string]http.HandlerFunc{"GET": s.status}))
	m.HandleFunc("/healthz", s.methods(map[string]http.HandlerFunc{"GET": s.healthz}))
	m.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		if s.Metrics == nil {
			writeError(w, reaper.Errorf(reaper.ENOTFOUND, "metrics are not enabled"))
			return
		}
		s.Metrics.ServeHTTP(w, r)
	})
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
		if c, ok := reaper.CallerFrom(r.Context()); ok {
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

// decode reads one JSON object from the body into v, strictly: unknown
// fields, trailing data and oversized bodies are errors. An empty body
// leaves v as is when allowEmpty.
func decode(w http.ResponseWriter, r *http.Request, v any, allowEmpty bool) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return reaper.Errorf(reaper.ETOOLARGE, "request body is larger than %d bytes", MaxBodyBytes)
	} else if err != nil {
		return reaper.Errorf(reaper.EINVALID, "read request body: %v", err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if allowEmpty {
			return nil
		}
		return reaper.Errorf(reaper.EINVALID, "request body is empty: send a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var de *reaper.DurationError
		if errors.As(err, &de) {
			if field := fieldWithValue(body, de.Input); field != "" {
				return reaper.Errorf(reaper.EINVALID, "%s: %v", field, de.Err)
			}
		}
		return reaper.Errorf(reaper.EINVALID, "invalid JSON body: %s", jsonErrorMessage(err))
	}
	if dec.More() {
		return reaper.Errorf(reaper.EINVALID, "invalid JSON body: unexpected data after the object")
	}
	return nil
}

// fieldWithValue returns the name of the top-level field of the JSON
// object body whose raw value is raw, or "" if there is none; it names the
// field behind an error that json does not attribute.
func fieldWithValue(body []byte, raw string) string {
	var obj map[string]json.RawMessage
	if json.Unmarshal(body, &obj) != nil {
		return ""
	}
	for _, k := range slices.Sorted(maps.Keys(obj)) {
		if string(bytes.TrimSpace(obj[k])) == raw {
			return k
		}
	}
	return ""
}

func jsonErrorMessage(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at byte %d: %v", se.Offset, se)
	case errors.As(err, &te):
		if te.Field != "" {
			return fmt.Sprintf("field %q must be a %s, not %s", te.Field, jsonKind(te.Type.Kind().String()), te.Value)
		}
		return fmt.Sprintf("expected a JSON object, not %s", te.Value)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "the body ends too early"
	}
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "json: ")
	if f, ok := strings.CutPrefix(msg, "unknown field "); ok {
		return "unknown field " + f + ": check the field names in the README's API section"
	}
	return msg
}

func jsonKind(k string) string {
	switch k {
	case "map", "struct":
		return "object"
	case "slice", "array":
		return "list"
	case "int", "int64", "uint32", "float64":
		return "number"
	case "bool":
		return "boolean (true or false)"
	}
	return k
}

// EntryView is an entry as the API shows it, with its key.
type EntryView struct {
	Key string `json:"key"`
	*reaper.Entry
}

func view(e *reaper.Entry) EntryView { return EntryView{Key: e.Key(), Entry: e} }

func (s *Server) register(w http.ResponseWriter, r *http.Request) {
	var req reaper.RegisterRequest
	if err := decode(w, r, &req, false); err != nil {
		s.fail(w, r, err)
		return
	}
	ent, created, err := s.Engine.Register(r.Context(), req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, view(ent))
}

func (s *Server) listSandboxes(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if err := onlyParams(q, "state", "provider", "session", "limit"); err != nil {
		s.fail(w, r, err)
		return
	}
	f := reaper.EntryFilter{Provider: q.Get("provider"), Session: q.Get("session")}
	for _, v := range q["state"] {
		for _, st := range strings.Split(v, ",") {
			if st = strings.TrimSpace(st); st != "" {
				f.States = append(f.States, reaper.State(st))
			}
		}
	}
	limit, err := intParam(q.Get("limit"), "limit")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ents, err := s.Engine.Entries(r.Context(), f, limit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := make([]EntryView, 0, len(ents))
	for _, e := range ents {
		out = append(out, view(e))
	}
	writeJSON(w, http.StatusOK, map[string]any{"sandboxes": out})
}

func pathKey(r *http.Request) (string, error) {
	key := r.PathValue("provider") + "/" + r.PathValue("id")
	if _, _, err := reaper.ParseKey(key); err != nil {
		return "", err
	}
	return key, nil
}

func (s *Server) getSandbox(w http.ResponseWriter, r *http.Request) {
	key, err := pathKey(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ent, err := s.Engine.Entry(r.Context(), key)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, view(ent))
}

func (s *Server) tag(w http.ResponseWriter, r *http.Request) {
	key, err := pathKey(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var req reaper.TagRequest
	if err := decode(w, r, &req, false); err != nil {
		s.fail(w, r, err)
		return
	}
	ent, err := s.Engine.Tag(r.Context(), key, req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, view(ent))
}

func (s *Server) release(w http.ResponseWriter, r *http.Request) {
	key, err := pathKey(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var empty struct{}
	if err := decode(w, r, &empty, true); err != nil {
		s.fail(w, r, err)
		return
	}
	ent, err := s.Engine.Release(r.Context(), key)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, view(ent))
}

func (s *Server) listSessions(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if err := onlyParams(q, "live"); err != nil {
		s.fail(w, r, err)
		return
	}
	live := false
	if v := q.Get("live"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			s.fail(w, r, reaper.Errorf(reaper.EINVALID, "live=%q: use true or false", v))
			return
		}
		live = b
	}
	ss, err := s.Engine.Sessions(r.Context(), live)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"sessions": ss})
}

func (s *Server) getSession(w http.ResponseWriter, r *http.Request) {
	sess, err := s.Engine.Session(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, sess)
}

// HeartbeatRequest is the optional body of a heartbeat.
type HeartbeatRequest struct {
	Lease reaper.Duration `json:"lease,omitempty"`
}

func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request) {
	var req HeartbeatRequest
	if err := decode(w, r, &req, true); err != nil {
		s.fail(w, r, err)
		return
	}
	sess, err := s.Engine.Heartbeat(r.Context(), r.PathValue("id"), req.Lease)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, sess)
}

func (s *Server) endSession(w http.ResponseWriter, r *http.Request) {
	var empty struct{}
	if err := decode(w, r, &empty, true); err != nil {
		s.fail(w, r, err)
		return
	}
	res, err := s.Engine.EndSession(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if res.Items == nil {
		res.Items = []reaper.SweepItem{}
	}
	writeJSON(w, http.StatusOK, res)
}

// SweepRequest is the body of POST /v1/sweep.
type SweepRequest struct {
	DryRun bool `json:"dry_run"`
}

func (s *Server) sweep(w http.ResponseWriter, r *http.Request) {
	var req SweepRequest
	if err := decode(w, r, &req, true); err != nil {
		s.fail(w, r, err)
		return
	}
	rep, err := s.Engine.Sweep(r.Context(), reaper.SweepOptions{DryRun: req.DryRun})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if rep.Items == nil {
		rep.Items = []reaper.SweepItem{}
	}
	writeJSON(w, http.StatusOK, rep)
}

// DiscoverResponse is the body answered by POST /v1/discover.
type DiscoverResponse struct {
	Untracked []reaper.Untracked `json:"untracked"`
	Errors    map[string]string  `json:"errors,omitempty"`
}

func (s *Server) discover(w http.ResponseWriter, r *http.Request) {
	var empty struct{}
	if err := decode(w, r, &empty, true); err != nil {
		s.fail(w, r, err)
		return
	}
	found, errs := s.Engine.Discover(r.Context())
	if found == nil {
		found = []reaper.Untracked{}
	}
	writeJSON(w, http.StatusOK, DiscoverResponse{Untracked: found, Errors: errs})
}

func (s *Server) audit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if err := onlyParams(q, "since", "limit"); err != nil {
		s.fail(w, r, err)
		return
	}
	since, err := ParseSince(q.Get("since"), time.Now())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	limit, err := intParam(q.Get("limit"), "limit")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	evs, err := s.Engine.Audit(r.Context(), since, limit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"events": evs})
}

// ParseSince reads a --since value: a duration before now ("24h", "7d"),
// an RFC 3339 time, or empty for the beginning of the log.
func ParseSince(v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	d, err := reaper.ParseDuration(v)
	if err != nil {
		return time.Time{}, reaper.Errorf(reaper.EINVALID, "since=%q: use a duration such as 24h or 7d, or a time such as 2026-01-02T15:04:05Z", v)
	}
	return now.Add(-d), nil
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	if s.Status == nil {
		s.fail(w, r, reaper.Errorf(reaper.ENOTFOUND, "status is not available"))
		return
	}
	writeJSON(w, http.StatusOK, s.Status())
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	if s.Ready != nil {
		if err := s.Ready(); err != nil {
			s.fail(w, r, reaper.Errorf(reaper.EUNAVAILABLE, "not ready: %v", err))
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func onlyParams(q map[string][]string, allowed ...string) error {
	for k := range q {
		ok := false
		for _, a := range allowed {
			if k == a {
				ok = true
			}
		}
		if !ok {
			return reaper.Errorf(reaper.EINVALID, "unknown query parameter %q: use %s", k, strings.Join(allowed, ", "))
		}
	}
	return nil
}

func intParam(v, name string) (int, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, reaper.Errorf(reaper.EINVALID, "%s=%q: use a whole number of zero or more", name, v)
	}
	return n, nil
}

// ConnContext records the peer credentials of a Unix socket connection in
// the connection's context. Use it as http.Server.ConnContext.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ctx
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || credErr != nil || cred == nil {
		return ctx
	}
	return reaper.WithCaller(ctx, reaper.Caller{UID: cred.Uid, PID: cred.Pid})
}
