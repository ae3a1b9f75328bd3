// Package daytonatest is an in-process fake of the Daytona API, in the manner
// of net/http/httptest, for tests of the daytona provider and end-to-end
// tests of reaperd.
//
// # Basics
//
// NewServer starts the fake; put Server.URL in DAYTONA_API_URL and the key
// given to NewServer in DAYTONA_API_KEY. The fake answers the routes the
// provider uses, the way Daytona's NestJS API (apps/api) does:
//
//	GET    /api/sandbox                      cursor-paginated list (limit, cursor, sort, order, labels, states, includeErroredDeleted)
//	GET    /api/sandbox/{sandboxIdOrName}    one sandbox; 404 once destroyed
//	DELETE /api/sandbox/{sandboxIdOrName}    accept a delete: 200 with the sandbox, desiredState "destroyed"
//
// Every request must carry "Authorization: Bearer <key>"; otherwise it is
// answered 401. Errors use the body of Daytona's exception filter:
//
//	{"statusCode":409,"source":"DAYTONA_API","code":"SANDBOX_STATE_CHANGE_IN_PROGRESS",
//	 "message":"Sandbox state change in progress","error":"Conflict",
//	 "path":"/api/sandbox/…","timestamp":"…","method":"DELETE"}
//
// Sandboxes follow Daytona's state machine: created "started"; SetState
// settles one in another state ("stopped", "archived", "paused", ...), all
// of them alive; Transition puts one mid-change (pending), so that a DELETE
// is refused with 409. An accepted DELETE marks the sandbox pending with
// desiredState "destroyed" and answers with its current state; from then on
// it reads "destroying" until the destroy delay (SetDestroyDelay, default
// zero) has passed, and then "destroyed": GET answers 404 and the list omits
// it. A DELETE while the destroy runs is answered 409, as Daytona does.
//
// The list is ordered as Daytona's Postgres search orders it: by the "sort"
// field (name, cpu, memoryGib, diskGib, lastActivityAt or createdAt; default
// lastActivityAt) in the "order" direction (asc or desc; default desc), the
// id breaking ties in the same direction. Its nextCursor is the base64 of
// {"sortValue":…,"id":…} of the page's last item, times in milliseconds as
// JavaScript's toISOString writes them; the next page holds the items past
// that value (or equal to it, with a greater id, descending a smaller one),
// compared with the stored, finer times. So a sandbox whose sort value
// changes while a client pages can move behind the cursor and be missed: a
// sandbox gains activity (Touch) and, in the default order, jumps ahead of
// the pages already read.
//
// # Caveats
//
// Routes the provider does not use answer like an unknown NestJS route (404
// "Cannot POST /api/sandbox"). Sandboxes are created through Create, not
// through POST /sandbox. Filters other than labels and states are ignored.
// Every sandbox has cpu 1, memory 1 and disk 3, so sorting by those orders
// by id alone. lastActivityAt is never null (Create sets it to the creation
// time), so the NULLS LAST rule of the real query has nothing to order.
// Failures injected with Fail apply to every request until cleared, except
// FailConflict, which only affects DELETE, and FailSpuriousNotFound, which
// only affects GET and DELETE of one sandbox: those are answered, after
// authentication and rate limiting, exactly as a sandbox the fake does not
// have (404, code NOT_FOUND, "Sandbox with ID or name {id} not found"), the
// answer of Daytona's SandboxAccessGuard whenever its lookup fails or the
// sandbox belongs to another organization. The sandbox stays as it is and
// GET /api/sandbox still lists it.
package daytonatest

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/reaperd/reaperd/providers/providertest"
)

// Throttler names of Daytona's API: a 429 from throttler "x" carries
// "Retry-After-x" (@nestjs/throttler only omits the suffix for a throttler
// named "default").
const (
	ThrottlerAuthenticated    = "authenticated"
	ThrottlerSandboxLifecycle = "sandbox-lifecycle"
)

// Sandbox states used by the fake (Daytona's SandboxState values).
const (
	StateStarted    = "started"
	StateStopped    = "stopped"
	StateArchived   = "archived"
	StatePaused     = "paused"
	StateError      = "error"
	StateDestroying = "destroying"
	StateDestroyed  = "destroyed"
)

// MaxLimit is the largest page size GET /sandbox accepts (v0.190.0 spec).
const MaxLimit = 200

// Request is one request the fake received.
type Request struct {
	Method         string
	Path           string     // escaped path, e.g. /api/sandbox/ID
	Query          url.Values // decoded query parameters
	OrganizationID string     // X-Daytona-Organization-ID, if sent
	Status         int        // status the fake answered
}

// DefaultSnapshot is the snapshot Create gives a sandbox.
const DefaultSnapshot = "daytonaio/sandbox:0.4.3"

// Sandbox is a snapshot of one sandbox at the fake.
type Sandbox struct {
	ID             string
	Name           string
	Snapshot       string // "" when none
	State          string
	DesiredState   string
	Pending        bool
	Labels         map[string]string
	CreatedAt      time.Time
	LastActivityAt time.Time
}

type sandbox struct {
	id, name     string
	snapshot     string // "" answers null
	labels       map[string]string
	createdAt    time.Time
	updatedAt    time.Time
	lastActivity time.Time
	state        string
	desiredState string
	pending      bool
	destroyAt    time.Time // when a running destroy completes; zero if none
}

// Server is the fake Daytona API. Its methods are safe for concurrent use.
type Server struct {
	// URL is the API base URL, ending in /api like https://app.daytona.io/api.
	URL string
	// OrganizationID is the organization every sandbox belongs to.
	OrganizationID string

	srv       *httptest.Server
	apiKey    string
	closing   chan struct{}
	closeOnce sync.Once

	mu           sync.Mutex
	now          func() time.Time
	sandboxes    map[string]*sandbox
	pageSize     int
	failure      providertest.Failure
	destroyDelay time.Duration
	log          []Request
}

var _ providertest.Fake = (*Server)(nil)

// NewServer starts a fake that accepts apiKey as its only valid key.
func NewServer(apiKey string) *Server {
	s := &Server{
		OrganizationID: newUUID(),
		apiKey:         apiKey,
		closing:        make(chan struct{}),
		now:            time.Now,
		sandboxes:      map[string]*sandbox{},
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serveHTTP))
	s.URL = s.srv.URL + "/api"
	return s
}

// Close releases hung requests and shuts the server down.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.closing)
		s.srv.Close()
	})
}

// Create adds a started sandbox, named after its id as Daytona names an
// unnamed one, from DefaultSnapshot, and returns its id. Its last activity
// is its creation.
func (s *Server) Create(labels map[string]string, createdAt time.Time) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if createdAt.IsZero() {
		createdAt = s.now()
	}
	createdAt = createdAt.Truncate(time.Microsecond) // Postgres keeps microseconds
	id := newUUID()
	l := map[string]string{}
	for k, v := range labels {
		l[k] = v
	}
	s.sandboxes[id] = &sandbox{
		id: id, name: id, snapshot: DefaultSnapshot, labels: l,
		createdAt: createdAt.UTC(), updatedAt: createdAt.UTC(), lastActivity: createdAt.UTC(),
		state: StateStarted, desiredState: StateStarted,
	}
	return id
}

// Rename gives the sandbox another name.
func (s *Server) Rename(id, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sb := s.sandboxes[id]; sb != nil {
		sb.name = name
	}
}

// SetSnapshot sets the snapshot the sandbox reports; "" reports none
// (null), as for a sandbox built from an image.
func (s *Server) SetSnapshot(id, snapshot string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sb := s.sandboxes[id]; sb != nil {
		sb.snapshot = snapshot
	}
}

// Touch records activity in the sandbox at the given time (the current time
// when zero), as a toolbox or preview request does at Daytona. It moves the
// sandbox in a list sorted by lastActivityAt, the default order.
func (s *Server) Touch(id string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if at.IsZero() {
		at = s.now()
	}
	if sb := s.sandboxes[id]; sb != nil {
		sb.lastActivity = at.UTC().Truncate(time.Microsecond)
	}
}

// Alive reports whether the sandbox exists and is not destroyed. Stopped,
// archived, paused, errored and still-destroying sandboxes are alive.
func (s *Server) Alive(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb := s.sandboxes[id]
	if sb == nil {
		return false
	}
	s.settle(sb)
	return sb.state != StateDestroyed
}

// Fail injects f for all following requests; Failure{} clears it.
func (s *Server) Fail(f providertest.Failure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failure = f
}

// SetPageSize caps the number of sandboxes per list page (0: no cap beyond
// the request's limit).
func (s *Server) SetPageSize(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pageSize = n
}

// SetDestroyDelay sets how long an accepted delete stays "destroying"
// before the sandbox is destroyed. It applies to deletes accepted later.
func (s *Server) SetDestroyDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.destroyDelay = d
}

// SetState settles the sandbox in state (e.g. "stopped", "archived",
// "paused", "error"): desiredState follows, nothing is pending.
func (s *Server) SetState(id, state string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sb := s.sandboxes[id]; sb != nil {
		sb.state, sb.desiredState, sb.pending, sb.destroyAt = state, state, false, time.Time{}
		if state == StateError {
			sb.desiredState = StateStarted
		}
		sb.updatedAt = s.now().UTC()
	}
}

// Transition puts the sandbox mid-change: in state (e.g. "stopping",
// "archiving") with a pending change, so a DELETE is answered 409 until
// SetState settles it.
func (s *Server) Transition(id, state string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sb := s.sandboxes[id]; sb != nil {
		sb.state, sb.pending = state, true
		sb.updatedAt = s.now().UTC()
	}
}

// BeginDestroy starts a delete as another client (or Daytona's auto-delete)
// would, without a request: the sandbox is "destroying" for the destroy
// delay.
func (s *Server) BeginDestroy(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sb := s.sandboxes[id]; sb != nil && sb.desiredState != StateDestroyed {
		s.beginDestroy(sb)
		s.settle(sb)
	}
}

// CompleteDestroy finishes a running destroy now.
func (s *Server) CompleteDestroy(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sb := s.sandboxes[id]; sb != nil && !sb.destroyAt.IsZero() {
		sb.destroyAt = s.now()
		s.settle(sb)
	}
}

// FailDestroy ends a running destroy the way a runner failure does: state
// "error" with desiredState "destroyed". Daytona then hides the sandbox (GET
// answers 404; the list omits it unless includeErroredDeleted=true).
func (s *Server) FailDestroy(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sb := s.sandboxes[id]; sb != nil {
		sb.state, sb.desiredState, sb.pending, sb.destroyAt = StateError, StateDestroyed, false, time.Time{}
		sb.updatedAt = s.now().UTC()
	}
}

// Sandboxes returns a snapshot of every sandbox the fake knows, destroyed
// ones included, oldest first.
func (s *Server) Sandboxes() []Sandbox {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Sandbox, 0, len(s.sandboxes))
	for _, sb := range s.sandboxes {
		s.settle(sb)
		out = append(out, Sandbox{
			ID: sb.id, Name: sb.name, Snapshot: sb.snapshot, State: sb.state, DesiredState: sb.desiredState,
			Pending: sb.pending, Labels: copyLabels(sb.labels), CreatedAt: sb.createdAt,
			LastActivityAt: sb.lastActivity,
		})
	}
	slices.SortFunc(out, func(a, b Sandbox) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// Log returns the requests received so far, in order.
func (s *Server) Log() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.log)
}

// Requests returns the requests received so far as "METHOD path".
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, len(s.log))
	for i, r := range s.log {
		out[i] = r.Method + " " + r.Path
	}
	return out
}

// beginDestroy records an accepted delete. Caller holds s.mu.
func (s *Server) beginDestroy(sb *sandbox) {
	now := s.now()
	sb.pending = true
	sb.desiredState = StateDestroyed
	sb.name = fmt.Sprintf("DESTROYED_%s_%d", sb.name, now.UnixMilli())
	sb.destroyAt = now.Add(s.destroyDelay)
	sb.updatedAt = now.UTC()
}

// settle advances a running destroy by the clock. Caller holds s.mu.
func (s *Server) settle(sb *sandbox) {
	if sb.destroyAt.IsZero() {
		return
	}
	if s.now().Before(sb.destroyAt) {
		sb.state = StateDestroying
		return
	}
	sb.state, sb.pending, sb.destroyAt = StateDestroyed, false, time.Time{}
	sb.updatedAt = s.now().UTC()
}

// hidden reports whether Daytona treats the sandbox as not found: destroyed,
// or errored with desiredState destroyed. Caller holds s.mu.
func hidden(sb *sandbox, includeErroredDeleted bool) bool {
	if sb.state == StateDestroyed {
		return true
	}
	if (sb.state == StateError || sb.state == "build_failed") && sb.desiredState == StateDestroyed {
		return !includeErroredDeleted
	}
	return false
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (s *Server) serveHTTP(rw http.ResponseWriter, r *http.Request) {
	w := &statusWriter{ResponseWriter: rw}
	s.handle(w, r)
	s.mu.Lock()
	s.log = append(s.log, Request{
		Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.Query(),
		OrganizationID: r.Header.Get("X-Daytona-Organization-ID"), Status: w.status,
	})
	s.mu.Unlock()
}

func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	f := s.failure
	s.mu.Unlock()

	if f.Kind == providertest.FailHang {
		select {
		case <-r.Context().Done():
		case <-s.closing:
		}
		return
	}

	route, id, ok := parseRoute(r)
	if !ok {
		writeError(w, r, http.StatusNotFound, "NOT_FOUND", fmt.Sprintf("Cannot %s %s", r.Method, r.URL.Path))
		return
	}
	// Guards run in Daytona's order: authentication, then rate limiting.
	if f.Kind == providertest.FailUnauthorized || r.Header.Get("Authorization") != "Bearer "+s.apiKey {
		writeError(w, r, http.StatusUnauthorized, "UNAUTHORIZED", "Unauthorized")
		return
	}
	if f.Kind == providertest.FailRateLimited {
		throttler := ThrottlerAuthenticated
		if route == "delete" {
			throttler = ThrottlerSandboxLifecycle
		}
		secs := int((f.RetryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After-"+throttler, strconv.Itoa(secs))
		writeError(w, r, http.StatusTooManyRequests, "RATE_LIMIT_EXCEEDED", "ThrottlerException: Too Many Requests")
		return
	}
	if f.Kind == providertest.FailServerError {
		writeError(w, r, http.StatusInternalServerError, "INTERNAL_SERVER_ERROR", "An unexpected error occurred.")
		return
	}
	// SandboxAccessGuard guards the routes of one sandbox, not the list.
	if f.Kind == providertest.FailSpuriousNotFound && (route == "get" || route == "delete") {
		writeSandboxNotFound(w, r, id)
		return
	}

	switch route {
	case "list":
		s.list(w, r)
	case "get":
		s.get(w, r, id)
	case "delete":
		s.delete(w, r, id, f.Kind == providertest.FailConflict)
	}
}

// parseRoute maps a request to "list", "get" or "delete" and the
// sandboxIdOrName path parameter.
func parseRoute(r *http.Request) (route, id string, ok bool) {
	rest, found := strings.CutPrefix(r.URL.EscapedPath(), "/api/sandbox")
	if !found {
		return "", "", false
	}
	if rest == "" || rest == "/" {
		if r.Method == http.MethodGet {
			return "list", "", true
		}
		return "", "", false
	}
	seg := strings.TrimPrefix(rest, "/")
	if seg == "" || strings.Contains(seg, "/") {
		return "", "", false
	}
	id, err := url.PathUnescape(seg)
	if err != nil {
		return "", "", false
	}
	switch r.Method {
	case http.MethodGet:
		return "get", id, true
	case http.MethodDelete:
		return "delete", id, true
	}
	return "", "", false
}

// find looks a sandbox up by id, then by name, as findOneByIdOrName does.
// Caller holds s.mu.
func (s *Server) find(idOrName string) *sandbox {
	if sb := s.sandboxes[idOrName]; sb != nil {
		s.settle(sb)
		if !hidden(sb, false) {
			return sb
		}
	}
	for _, sb := range s.sandboxes {
		s.settle(sb)
		if sb.name == idOrName && !hidden(sb, false) {
			return sb
		}
	}
	return nil
}

func (s *Server) get(w http.ResponseWriter, r *http.Request, id string) {
	s.mu.Lock()
	sb := s.find(id)
	var dto sandboxDTO
	if sb != nil {
		dto = s.dto(sb)
	}
	s.mu.Unlock()
	if sb == nil {
		writeSandboxNotFound(w, r, id)
		return
	}
	writeJSON(w, http.StatusOK, dto)
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request, id string, forceConflict bool) {
	s.mu.Lock()
	sb := s.find(id)
	if sb == nil {
		s.mu.Unlock()
		writeSandboxNotFound(w, r, id)
		return
	}
	if forceConflict || (sb.pending && sb.state != "pending_build") {
		s.mu.Unlock()
		writeError(w, r, http.StatusConflict, "SANDBOX_STATE_CHANGE_IN_PROGRESS", "Sandbox state change in progress")
		return
	}
	// Like sandboxService.destroy: record desiredState "destroyed" and
	// answer with the updated row, whose state the runner has yet to change.
	before := sb.state
	s.beginDestroy(sb)
	dto := s.dto(sb)
	dto.State = before
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, dto)
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.ParseFloat(v, 64)
		switch {
		case err != nil || n != float64(int(n)):
			writeError(w, r, http.StatusBadRequest, "BAD_REQUEST", "limit must be an integer number")
			return
		case n < 1:
			writeError(w, r, http.StatusBadRequest, "BAD_REQUEST", "limit must not be less than 1")
			return
		case n > MaxLimit:
			writeError(w, r, http.StatusBadRequest, "BAD_REQUEST", fmt.Sprintf("limit must not be greater than %d", MaxLimit))
			return
		}
		limit = int(n)
	}
	var labels map[string]string
	if v := q.Get("labels"); v != "" {
		if err := json.Unmarshal([]byte(v), &labels); err != nil || labels == nil {
			writeError(w, r, http.StatusBadRequest, "BAD_REQUEST", "Invalid labels JSON format")
			return
		}
	}
	states := q["states"]
	for _, st := range states {
		if st == StateDestroyed {
			writeError(w, r, http.StatusBadRequest, "BAD_REQUEST", "each value in states must be one of the following values: non-destroyed states")
			return
		}
	}
	sortField := SortLastActivityAt
	if q.Has("sort") {
		sortField = q.Get("sort")
		if !slices.Contains(sortFields, sortField) {
			writeError(w, r, http.StatusBadRequest, "BAD_REQUEST",
				"sort must be one of the following values: "+strings.Join(sortFields, ", "))
			return
		}
	}
	desc := true
	if q.Has("order") {
		switch q.Get("order") {
		case "asc":
			desc = false
		case "desc":
		default:
			writeError(w, r, http.StatusBadRequest, "BAD_REQUEST", "order must be one of the following values: asc, desc")
			return
		}
	}
	includeErroredDeleted := q.Get("includeErroredDeleted") == "true"
	var after *cursor
	if v := q.Get("cursor"); v != "" {
		c, err := decodeCursor(v, sortField)
		if err != nil {
			writeError(w, r, http.StatusBadRequest, "BAD_REQUEST", "Invalid cursor provided: "+v)
			return
		}
		after = &c
	}

	s.mu.Lock()
	if s.pageSize > 0 && s.pageSize < limit {
		limit = s.pageSize
	}
	var match []*sandbox
	for _, sb := range s.sandboxes {
		s.settle(sb)
		if hidden(sb, includeErroredDeleted) {
			continue
		}
		if len(states) > 0 && !slices.Contains(states, sb.state) {
			continue
		}
		if !containsLabels(sb.labels, labels) {
			continue
		}
		match = append(match, sb)
	}
	// ORDER BY <field> <dir>, id <dir>, and the cursor condition
	// "<field> <op> value OR (<field> = value AND id <op> cursorId)", op
	// being > ascending and < descending, as SandboxTypeormSearchAdapter
	// builds them.
	dir := 1
	if desc {
		dir = -1
	}
	slices.SortFunc(match, func(a, b *sandbox) int {
		if c := compareField(sortField, a, b); c != 0 {
			return dir * c
		}
		return dir * strings.Compare(a.id, b.id)
	})
	if after != nil {
		match = slices.DeleteFunc(match, func(sb *sandbox) bool {
			c := after.compareTo(sortField, sb)
			if c == 0 {
				c = strings.Compare(sb.id, after.ID)
			}
			return dir*c <= 0 // not past the cursor
		})
	}
	end := min(limit, len(match))
	resp := listResponse{Items: []listItemDTO{}}
	for _, sb := range match[:end] {
		resp.Items = append(resp.Items, s.listItem(sb))
	}
	if end < len(match) {
		c := cursorOf(sortField, match[end-1])
		resp.NextCursor = &c
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, resp)
}

func containsLabels(have, want map[string]string) bool {
	for k, v := range want {
		if got, ok := have[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// Sort fields of GET /sandbox (SandboxListSortField).
const (
	SortName           = "name"
	SortCPU            = "cpu"
	SortMemory         = "memoryGib"
	SortDisk           = "diskGib"
	SortLastActivityAt = "lastActivityAt"
	SortCreatedAt      = "createdAt"
)

var sortFields = []string{SortName, SortCPU, SortMemory, SortDisk, SortLastActivityAt, SortCreatedAt}

// Every sandbox of the fake has these resources.
const (
	fakeCPU    = 1
	fakeMemory = 1
	fakeDisk   = 3
)

// compareField compares two sandboxes by one sort field, ascending.
func compareField(field string, a, b *sandbox) int {
	switch field {
	case SortName:
		return strings.Compare(a.name, b.name)
	case SortLastActivityAt:
		return a.lastActivity.Compare(b.lastActivity)
	case SortCreatedAt:
		return a.createdAt.Compare(b.createdAt)
	}
	return 0 // cpu, memory and disk are the same for every sandbox
}

// cursor is a decoded nextCursor: the sort value of the last item of a page
// and its id.
type cursor struct {
	SortValue json.RawMessage `json:"sortValue"`
	ID        string          `json:"id"`

	t time.Time // SortValue of a time field
	s string    // SortValue of name
	n float64   // SortValue of cpu, memoryGib, diskGib
}

// cursorOf encodes the cursor after sb, as encodeCursor does: base64 of
// JSON, dates through toISOString (milliseconds).
func cursorOf(field string, sb *sandbox) string {
	var v any
	switch field {
	case SortName:
		v = sb.name
	case SortLastActivityAt:
		v = isoTime(sb.lastActivity)
	case SortCreatedAt:
		v = isoTime(sb.createdAt)
	case SortCPU:
		v = fakeCPU
	case SortMemory:
		v = fakeMemory
	case SortDisk:
		v = fakeDisk
	}
	b, _ := json.Marshal(map[string]any{"sortValue": v, "id": sb.id})
	return base64.StdEncoding.EncodeToString(b)
}

func decodeCursor(v, field string) (cursor, error) {
	var c cursor
	var b []byte
	var err error
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err = enc.DecodeString(v); err == nil {
			break
		}
	}
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(b, &c); err != nil || c.ID == "" {
		return c, fmt.Errorf("bad cursor")
	}
	switch field {
	case SortName:
		err = json.Unmarshal(c.SortValue, &c.s)
	case SortLastActivityAt, SortCreatedAt:
		var iso string
		if err = json.Unmarshal(c.SortValue, &iso); err == nil {
			c.t, err = time.Parse(time.RFC3339Nano, iso)
		}
	default:
		err = json.Unmarshal(c.SortValue, &c.n)
	}
	return c, err
}

// compareTo compares sb's sort value with the cursor's, as Postgres compares
// the stored value with the cursor parameter: sb's time at full precision
// against the cursor's milliseconds.
func (c cursor) compareTo(field string, sb *sandbox) int {
	switch field {
	case SortName:
		return strings.Compare(sb.name, c.s)
	case SortLastActivityAt:
		return sb.lastActivity.Compare(c.t)
	case SortCreatedAt:
		return sb.createdAt.Compare(c.t)
	case SortCPU:
		return cmpFloat(fakeCPU, c.n)
	case SortMemory:
		return cmpFloat(fakeMemory, c.n)
	case SortDisk:
		return cmpFloat(fakeDisk, c.n)
	}
	return 0
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// sandboxDTO is Daytona's Sandbox schema (the required properties of the
// v0.190.0 client and the fields reaperd reads).
type sandboxDTO struct {
	ID                  string            `json:"id"`
	OrganizationID      string            `json:"organizationId"`
	Name                string            `json:"name"`
	Snapshot            *string           `json:"snapshot"`
	User                string            `json:"user"`
	Env                 map[string]string `json:"env"`
	Labels              map[string]string `json:"labels"`
	Public              bool              `json:"public"`
	NetworkBlockAll     bool              `json:"networkBlockAll"`
	Target              string            `json:"target"`
	CPU                 float64           `json:"cpu"`
	GPU                 float64           `json:"gpu"`
	Memory              float64           `json:"memory"`
	Disk                float64           `json:"disk"`
	State               string            `json:"state"`
	DesiredState        string            `json:"desiredState"`
	BackupState         string            `json:"backupState"`
	AutoStopInterval    int               `json:"autoStopInterval"`
	AutoArchiveInterval int               `json:"autoArchiveInterval"`
	AutoDeleteInterval  int               `json:"autoDeleteInterval"`
	Volumes             []any             `json:"volumes"`
	CreatedAt           string            `json:"createdAt"`
	UpdatedAt           string            `json:"updatedAt"`
	ToolboxProxyURL     string            `json:"toolboxProxyUrl"`
}

// listItemDTO is Daytona's SandboxListItem schema.
type listItemDTO struct {
	ID                  string            `json:"id"`
	OrganizationID      string            `json:"organizationId"`
	Name                string            `json:"name"`
	Target              string            `json:"target"`
	State               string            `json:"state"`
	DesiredState        string            `json:"desiredState"`
	Snapshot            *string           `json:"snapshot"`
	User                string            `json:"user"`
	Public              bool              `json:"public"`
	CPU                 float64           `json:"cpu"`
	GPU                 float64           `json:"gpu"`
	Memory              float64           `json:"memory"`
	Disk                float64           `json:"disk"`
	Labels              map[string]string `json:"labels"`
	AutoStopInterval    int               `json:"autoStopInterval"`
	AutoArchiveInterval int               `json:"autoArchiveInterval"`
	AutoDeleteInterval  int               `json:"autoDeleteInterval"`
	CreatedAt           string            `json:"createdAt"`
	UpdatedAt           string            `json:"updatedAt"`
	LastActivityAt      string            `json:"lastActivityAt"`
	ToolboxProxyURL     string            `json:"toolboxProxyUrl"`
}

type listResponse struct {
	Items      []listItemDTO `json:"items"`
	NextCursor *string       `json:"nextCursor"`
}

const toolboxProxyURL = "https://proxy.app.daytona.io/toolbox"

// isoTime formats like JavaScript's Date.toISOString.
func isoTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

func (s *Server) dto(sb *sandbox) sandboxDTO {
	return sandboxDTO{
		ID: sb.id, OrganizationID: s.OrganizationID, Name: sb.name, Snapshot: optional(sb.snapshot),
		User: "daytona", Env: map[string]string{}, Labels: copyLabels(sb.labels), Target: "us",
		CPU: fakeCPU, Memory: fakeMemory, Disk: fakeDisk, State: sb.state, DesiredState: sb.desiredState, BackupState: "None",
		AutoStopInterval: 15, AutoArchiveInterval: 10080, AutoDeleteInterval: -1, Volumes: []any{},
		CreatedAt: isoTime(sb.createdAt), UpdatedAt: isoTime(sb.updatedAt), ToolboxProxyURL: toolboxProxyURL,
	}
}

func (s *Server) listItem(sb *sandbox) listItemDTO {
	return listItemDTO{
		ID: sb.id, OrganizationID: s.OrganizationID, Name: sb.name, Target: "us", State: sb.state,
		DesiredState: sb.desiredState, Snapshot: optional(sb.snapshot), User: "daytona",
		CPU: fakeCPU, Memory: fakeMemory, Disk: fakeDisk, Labels: copyLabels(sb.labels),
		AutoStopInterval: 15, AutoArchiveInterval: 10080, AutoDeleteInterval: -1,
		CreatedAt: isoTime(sb.createdAt), UpdatedAt: isoTime(sb.updatedAt),
		LastActivityAt: isoTime(sb.lastActivity), ToolboxProxyURL: toolboxProxyURL,
	}
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func copyLabels(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// errorBody is the body of Daytona's AllExceptionsFilter.
type errorBody struct {
	StatusCode int    `json:"statusCode"`
	Source     string `json:"source"`
	Code       string `json:"code"`
	Message    string `json:"message"`
	Error      string `json:"error"`
	Path       string `json:"path"`
	Timestamp  string `json:"timestamp"`
	Method     string `json:"method"`
}

func writeError(w http.ResponseWriter, r *http.Request, status int, code, message string) {
	writeJSON(w, status, errorBody{
		StatusCode: status, Source: "DAYTONA_API", Code: code, Message: message,
		Error: http.StatusText(status), Path: r.URL.RequestURI(),
		Timestamp: isoTime(time.Now()), Method: r.Method,
	})
}

// writeSandboxNotFound answers as SandboxAccessGuard does when it cannot
// find, or cannot read, the sandbox named in the path.
func writeSandboxNotFound(w http.ResponseWriter, r *http.Request, idOrName string) {
	writeError(w, r, http.StatusNotFound, "NOT_FOUND", fmt.Sprintf("Sandbox with ID or name %s not found", idOrName))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
