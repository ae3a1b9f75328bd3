// Package e2btest runs an in-process fake of the E2B REST API, like
// net/http/httptest, for tests of the e2b provider and end-to-end tests of
// reaperd.
//
// # Basics
//
// NewServer starts the fake; put Server.URL in E2B_API_URL (or
// e2b.Config.APIURL). The fake serves the calls reaperd makes, shaped as
// the E2B API (spec/openapi.yml of e2b-dev/E2B, handlers of e2b-dev/infra)
// shapes them:
//
//   - every request must carry the X-API-Key header; a missing or wrong key
//     gets 401 with the API's JSON error body {"code":401,"message":...};
//   - DELETE /sandboxes/{sandboxID} removes a running or a paused sandbox and
//     answers 204, or 404 {"code":404,"message":"Sandbox \"ID\" doesn't exist
//     or you don't have access to it"}; it never answers 409, as the API's kill
//     handler never does;
//   - both routes of one sandbox check the id as the API does (utils.ShortID):
//     a "-clientID" suffix, which old SDKs append, is dropped, and an id
//     with more than one "-", or whose first part is not lowercase letters
//     and digits, is answered 400 {"code":400,"message":"Invalid sandbox ID"};
//   - GET /v2/sandboxes lists sandboxes newest first, filtered by the
//     metadata query (decoded as the API decodes it) and by state (a single
//     comma-separated value: the parameter is form style, explode false;
//     repeating it is a 400), limit 1..100 (capped further by SetPageSize),
//     with the cursor for the next page in the X-Next-Token response header
//     (base64url of "RFC3339Nano-startedAt__sandboxID", as the API mints it),
//     accepted back as the nextToken query parameter;
//   - GET /sandboxes/{sandboxID} returns one sandbox or 404
//     {"code":404,"message":"Sandbox \"ID\" doesn't exist or you don't have access to it"}.
//
// Listed sandboxes carry templateID and, when SetTemplate gave one, the
// template's alias.
//
// Paused sandboxes are alive: E2B keeps a paused sandbox's snapshot until it
// is killed, so only a DELETE removes it. Resume runs a paused sandbox again
// and, as E2B does, makes the resume its startedAt.
//
// # Caveats
//
// The first page has no upper time bound (the API starts its cursor at the
// current time), so sandboxes created with future timestamps are listed.
// Injected failures (Fail) apply to every request, before authentication,
// except FailSpuriousNotFound, which only affects DELETE
// /sandboxes/{sandboxID} and GET /sandboxes/{sandboxID} with a well-formed
// id, after authentication: they are answered exactly as for a sandbox the
// fake does not have (404 with the bodies above), as E2B answers a key of
// another team, while the sandbox stays alive and GET /v2/sandboxes still
// lists it. FailConflict changes nothing: E2B has no such answer.
package e2btest

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/reaperd/reaperd/providers/providertest"
)

// Messages of the API's 401 answers.
const (
	MessageMissingKey = "authorization header is missing"
	MessageInvalidKey = "Invalid API key, please visit https://e2b.dev/docs/api-key for more information."
)

// maxLimit is the API's largest page.
const maxLimit = 100

// DefaultTemplateID is the template Create gives a sandbox.
const DefaultTemplateID = "rki5dems9wqfm4r03t7g"

// MessageInvalidID is the API's answer to a malformed sandbox id.
const MessageInvalidID = "Invalid sandbox ID"

// Sandbox is one sandbox as the fake holds it.
type Sandbox struct {
	ID         string
	TemplateID string
	Alias      string // "" when the template has none
	StartedAt  time.Time
	EndAt      time.Time
	State      string // "running" or "paused"
	Metadata   map[string]string
}

// Request is one request the fake received.
type Request struct {
	Method string
	Path   string     // unescaped path
	Query  url.Values // decoded query
	// RawQuery is the query as sent, still escaped.
	RawQuery string
	// NextToken is the X-Next-Token the fake answered with, if any.
	NextToken string
	// Status is the status code the fake answered with; 0 while hung.
	Status int
	// Time is when the fake received the request.
	Time time.Time
}

// Server is a running fake. It is safe for concurrent use.
type Server struct {
	// URL is the base URL of the fake API, for E2B_API_URL.
	URL string

	srv       *httptest.Server
	apiKey    string
	done      chan struct{}
	closeOnce sync.Once

	mu        sync.Mutex
	sandboxes map[string]*Sandbox
	failure   providertest.Failure
	pageSize  int
	requests  []Request
}

var _ providertest.Fake = (*Server)(nil)

// NewServer starts a fake E2B API that accepts apiKey.
func NewServer(apiKey string) *Server {
	s := &Server{
		apiKey:    apiKey,
		done:      make(chan struct{}),
		sandboxes: map[string]*Sandbox{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v2/sandboxes", s.listSandboxes)
	mux.HandleFunc("GET /sandboxes/{sandboxID}", s.getSandbox)
	mux.HandleFunc("DELETE /sandboxes/{sandboxID}", s.killSandbox)
	s.srv = httptest.NewServer(s.middleware(mux))
	s.URL = s.srv.URL
	return s
}

// Close releases hung requests and shuts the server down.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.done)
		s.srv.Close()
	})
}

// Create adds a running sandbox with the given metadata, started at
// createdAt, and returns its id.
func (s *Server) Create(labels map[string]string, createdAt time.Time) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.newIDLocked()
	s.sandboxes[id] = &Sandbox{
		ID:         id,
		TemplateID: DefaultTemplateID,
		StartedAt:  createdAt.UTC(),
		EndAt:      createdAt.UTC().Add(5 * time.Minute),
		State:      "running",
		Metadata:   clone(labels),
	}
	return id
}

// Pause pauses a running sandbox, as POST /sandboxes/{id}/pause does, and
// reports whether it was running.
func (s *Server) Pause(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb, ok := s.sandboxes[id]
	if !ok || sb.State != "running" {
		return false
	}
	sb.State = "paused"
	return true
}

// SetTemplate sets the template a sandbox reports: its id and alias ("" for
// none). It reports whether the sandbox exists.
func (s *Server) SetTemplate(id, templateID, alias string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb, ok := s.sandboxes[id]
	if ok {
		sb.TemplateID, sb.Alias = templateID, alias
	}
	return ok
}

// Resume resumes a paused sandbox, as POST /sandboxes/{id}/resume does: it
// runs again, and its startedAt is the time of the resume. It reports
// whether the sandbox was paused.
func (s *Server) Resume(id string, at time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb, ok := s.sandboxes[id]
	if !ok || sb.State != "paused" {
		return false
	}
	sb.State = "running"
	sb.StartedAt = at.UTC()
	sb.EndAt = sb.StartedAt.Add(5 * time.Minute)
	return true
}

// Alive reports whether the sandbox exists, running or paused.
func (s *Server) Alive(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.sandboxes[id]
	return ok
}

// Fail injects f for all following requests; Failure{} clears it.
func (s *Server) Fail(f providertest.Failure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failure = f
}

// SetPageSize caps the sandboxes per list page; n <= 0 restores the API's
// own limit handling.
func (s *Server) SetPageSize(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pageSize = n
}

// Sandboxes returns a copy of the sandboxes the fake holds, sorted by id.
func (s *Server) Sandboxes() []Sandbox {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Sandbox, 0, len(s.sandboxes))
	for _, sb := range s.sandboxes {
		c := *sb
		c.Metadata = clone(sb.Metadata)
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Sandbox) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Requests returns "METHOD path" for every request received, in order.
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, len(s.requests))
	for i, r := range s.requests {
		out[i] = r.Method + " " + r.Path
	}
	return out
}

// RequestLog returns the requests received, in order, with their queries
// and answers.
func (s *Server) RequestLog() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Request, len(s.requests))
	for i, r := range s.requests {
		r.Query = cloneValues(r.Query)
		out[i] = r
	}
	return out
}

const idChars = "abcdefghijklmnopqrstuvwxyz0123456789"

func (s *Server) newIDLocked() string {
	for {
		b := make([]byte, 20)
		b[0] = 'i'
		for i := 1; i < len(b); i++ {
			b[i] = idChars[rand.IntN(len(idChars))]
		}
		if _, dup := s.sandboxes[string(b)]; !dup {
			return string(b)
		}
	}
}

// statusRecorder keeps the status and X-Next-Token written.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (w *statusRecorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusRecorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (s *Server) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		s.mu.Lock()
		idx := len(s.requests)
		s.requests = append(s.requests, Request{
			Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), RawQuery: r.URL.RawQuery, Time: now,
		})
		f := s.failure
		s.mu.Unlock()

		rec := &statusRecorder{ResponseWriter: w}
		defer func() {
			s.mu.Lock()
			s.requests[idx].Status = rec.status
			s.requests[idx].NextToken = rec.Header().Get("X-Next-Token")
			s.mu.Unlock()
		}()

		switch f.Kind {
		case providertest.FailHang:
			select {
			case <-r.Context().Done():
			case <-s.done:
			}
			return
		case providertest.FailUnauthorized:
			writeError(rec, http.StatusUnauthorized, MessageInvalidKey)
			return
		case providertest.FailRateLimited:
			if f.RetryAfter > 0 {
				rec.Header().Set("Retry-After", strconv.Itoa(int((f.RetryAfter+time.Second-1)/time.Second)))
			}
			writeError(rec, http.StatusTooManyRequests, "Rate limit exceeded, please try again later.")
			return
		case providertest.FailServerError:
			writeError(rec, http.StatusInternalServerError, "Error when getting sandboxes")
			return
		}

		switch key := r.Header.Get("X-API-Key"); {
		case key == "":
			writeError(rec, http.StatusUnauthorized, MessageMissingKey)
			return
		case key != s.apiKey:
			writeError(rec, http.StatusUnauthorized, MessageInvalidKey)
			return
		}
		next.ServeHTTP(rec, r)
	})
}

func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"code": status, "message": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

var sandboxIDPattern = regexp.MustCompile(`^[a-z0-9]+$`)

// shortID checks a sandbox id as the API's utils.ShortID does: it drops the
// "-clientID" suffix old SDKs append, and refuses an id with more than one
// "-" or whose first part is not lowercase letters and digits.
func shortID(id string) (string, bool) {
	parts := strings.Split(id, "-")
	if len(parts) > 2 || !sandboxIDPattern.MatchString(parts[0]) {
		return "", false
	}
	return parts[0], true
}

// notFoundMessage is the API's utils.SandboxNotFoundMsg.
func notFoundMessage(id string) string {
	return fmt.Sprintf("Sandbox %q doesn't exist or you don't have access to it", id)
}

func (s *Server) killSandbox(w http.ResponseWriter, r *http.Request) {
	id, ok := shortID(r.PathValue("sandboxID"))
	if !ok {
		writeError(w, http.StatusBadRequest, MessageInvalidID)
		return
	}
	s.mu.Lock()
	_, ok = s.sandboxes[id]
	if s.failure.Kind == providertest.FailSpuriousNotFound {
		ok = false // answered as another team's sandbox: not touched
	} else {
		delete(s.sandboxes, id)
	}
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, notFoundMessage(id)) // the short id, as the kill handler says it
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// listedSandbox is the API's ListedSandbox (and SandboxDetail) schema.
type listedSandbox struct {
	TemplateID  string             `json:"templateID"`
	Alias       *string            `json:"alias,omitempty"`
	SandboxID   string             `json:"sandboxID"`
	ClientID    string             `json:"clientID"`
	StartedAt   time.Time          `json:"startedAt"`
	EndAt       time.Time          `json:"endAt"`
	CPUCount    int32              `json:"cpuCount"`
	MemoryMB    int32              `json:"memoryMB"`
	DiskSizeMB  int32              `json:"diskSizeMB"`
	Metadata    *map[string]string `json:"metadata,omitempty"`
	State       string             `json:"state"`
	EnvdVersion string             `json:"envdVersion"`
}

func toListed(sb *Sandbox) listedSandbox {
	l := listedSandbox{
		TemplateID:  sb.TemplateID,
		Alias:       optional(sb.Alias),
		SandboxID:   sb.ID,
		ClientID:    "6532622b",
		StartedAt:   sb.StartedAt,
		EndAt:       sb.EndAt,
		CPUCount:    2,
		MemoryMB:    512,
		DiskSizeMB:  512,
		State:       sb.State,
		EnvdVersion: "0.2.0",
	}
	if sb.Metadata != nil {
		m := clone(sb.Metadata)
		l.Metadata = &m
	}
	return l
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func (s *Server) getSandbox(w http.ResponseWriter, r *http.Request) {
	raw := r.PathValue("sandboxID")
	id, ok := shortID(raw)
	if !ok {
		writeError(w, http.StatusBadRequest, MessageInvalidID)
		return
	}
	s.mu.Lock()
	sb, ok := s.sandboxes[id]
	if s.failure.Kind == providertest.FailSpuriousNotFound {
		ok = false
	}
	var l listedSandbox
	if ok {
		l = toListed(sb)
	}
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, notFoundMessage(raw)) // the id as sent, as the get handler says it
		return
	}
	writeJSON(w, http.StatusOK, l)
}

func (s *Server) listSandboxes(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()

	states := []string{"running", "paused"}
	if vs, ok := q["state"]; ok {
		if len(vs) != 1 {
			writeError(w, http.StatusBadRequest, "Invalid format for parameter state: parameter 'state' is not exploded, but is specified multiple times")
			return
		}
		states = strings.Split(vs[0], ",")
		for _, st := range states {
			if st != "running" && st != "paused" {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("validation error: parameter \"state\" in query has an error: value is not one of the allowed values [\"running\",\"paused\"]: %q", st))
				return
			}
		}
	}

	limit := maxLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxLimit {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("validation error: parameter \"limit\" in query has an error: value %s must be an integer between 1 and %d", v, maxLimit))
			return
		}
		limit = n
	}

	var filter map[string]string
	if _, ok := q["metadata"]; ok {
		m, err := parseMetadata(q.Get("metadata"))
		if err != nil {
			writeError(w, http.StatusBadRequest, "Error parsing metadata")
			return
		}
		filter = m
	}

	var (
		cursorTime time.Time
		cursorID   string
		hasCursor  bool
	)
	if tok := q.Get("nextToken"); tok != "" {
		t, id, err := parseCursor(tok)
		if err != nil {
			writeError(w, http.StatusBadRequest, "Invalid next token")
			return
		}
		cursorTime, cursorID, hasCursor = t, id, true
	}

	s.mu.Lock()
	if s.pageSize > 0 && s.pageSize < limit {
		limit = s.pageSize
	}
	var matched []listedSandbox
	for _, sb := range s.sandboxes {
		if !slices.Contains(states, sb.State) || !matches(sb.Metadata, filter) {
			continue
		}
		if hasCursor && !(sb.StartedAt.Before(cursorTime) || (sb.StartedAt.Equal(cursorTime) && sb.ID > cursorID)) {
			continue
		}
		matched = append(matched, toListed(sb))
	}
	s.mu.Unlock()

	// Newest first, then by id, as the API sorts.
	slices.SortFunc(matched, func(a, b listedSandbox) int {
		if c := b.StartedAt.Compare(a.StartedAt); c != 0 {
			return c
		}
		return strings.Compare(a.SandboxID, b.SandboxID)
	})
	if len(matched) > limit {
		last := matched[limit-1]
		w.Header().Set("X-Next-Token", mintCursor(last.StartedAt, last.SandboxID))
		matched = matched[:limit]
	}
	if matched == nil {
		matched = []listedSandbox{}
	}
	writeJSON(w, http.StatusOK, matched)
}

func matches(have, want map[string]string) bool {
	if want == nil {
		return true
	}
	if have == nil {
		return false
	}
	for k, v := range want {
		if got, ok := have[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// parseMetadata decodes the metadata query value as the API does: unescape
// the whole value, split it into "k=v" pairs on "&" and "=", then unescape
// each key and value.
func parseMetadata(v string) (map[string]string, error) {
	v, err := url.QueryUnescape(v)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for pair := range strings.SplitSeq(v, "&") {
		parts := strings.Split(pair, "=")
		if len(parts) != 2 {
			return nil, errors.New("invalid key value pair in query")
		}
		k, err := url.QueryUnescape(parts[0])
		if err != nil {
			return nil, err
		}
		val, err := url.QueryUnescape(parts[1])
		if err != nil {
			return nil, err
		}
		out[k] = val
	}
	return out, nil
}

func mintCursor(t time.Time, id string) string {
	return base64.URLEncoding.EncodeToString([]byte(t.Format(time.RFC3339Nano) + "__" + id))
}

func parseCursor(tok string) (time.Time, string, error) {
	b, err := base64.URLEncoding.DecodeString(tok)
	if err != nil {
		return time.Time{}, "", err
	}
	parts := strings.Split(string(b), "__")
	if len(parts) != 2 {
		return time.Time{}, "", errors.New("invalid cursor format")
	}
	t, err := time.Parse(time.RFC3339Nano, parts[0])
	if err != nil {
		return time.Time{}, "", err
	}
	return t, parts[1], nil
}

func clone(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func cloneValues(v url.Values) url.Values {
	out := make(url.Values, len(v))
	for k, vs := range v {
		out[k] = slices.Clone(vs)
	}
	return out
}
