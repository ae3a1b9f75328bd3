// Package runlooptest runs an in-process fake of the Runloop devbox API, for
// tests of the runloop provider and of anything built on it, in the manner of
// net/http/httptest.
//
// # Basics
//
//	srv := runlooptest.NewServer("test-key")
//	defer srv.Close()
//	// RUNLOOP_BASE_URL=srv.URL, RUNLOOP_API_KEY=test-key
//	id := srv.Create(map[string]string{"team": "a"}, time.Now())
//
// The fake serves what reaperd uses of the API, with Runloop's paths,
// methods, bearer authentication, status codes and cursor pagination:
//
//	GET  /v1/devboxes                 status, limit, starting_after, include_total_count
//	GET  /v1/devboxes/{id}
//	POST /v1/devboxes/{id}/shutdown   force
//
// Devboxes are listed newest first; starting_after=ID continues with the
// devboxes created before ID, whether or not ID itself still matches the
// status filter. Every status of Runloop's DevboxView is accepted as a
// filter: queued (waiting for infrastructure; FLEX devboxes start so) and
// its deprecated name scheduled included, which the fake lists like any
// other (CreateWithStatus, CreateDevbox). A devbox reports its name,
// blueprint_id and snapshot_id when CreateDevbox gave them, null otherwise.
// Its launch_parameters carry resource_size_request ("X_SMALL" ...
// "XX_LARGE", "CUSTOM_SIZE") and custom_cpu_cores, custom_gb_memory and
// custom_disk_size (JSON numbers) when CreateDevbox gave them, and leave
// each out otherwise.
//
// # Caveats
//
// Devbox state is modelled as far as reaperd cares: a suspended devbox (which
// Runloop still bills for its disk) is alive until it is shut down; shut down
// and failed devboxes are dead but stay listed, as at Runloop. A devbox with a
// snapshot in progress (SetSnapshotInProgress) refuses a shutdown with 409
// unless force=true. Runloop does not document what a shutdown of a devbox
// that is already shut down answers; the fake answers 400 by default and 200
// (the devbox, unchanged) after SetTerminalShutdownStatus(200). Runloop does
// not document its error body either; the fake answers {"message": "..."},
// for an unknown devbox 404 {"message": "Devbox not found: ID"}.
package runlooptest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/reaperd/reaperd/providers/providertest"
)

// Devbox statuses, as Runloop names them.
const (
	StatusScheduled    = "scheduled" // deprecated name of queued
	StatusQueued       = "queued"
	StatusProvisioning = "provisioning"
	StatusInitializing = "initializing"
	StatusRunning      = "running"
	StatusSuspending   = "suspending"
	StatusSuspended    = "suspended"
	StatusResuming     = "resuming"
	StatusFailure      = "failure"
	StatusShutdown     = "shutdown"
)

var statuses = []string{
	StatusScheduled, StatusQueued, StatusProvisioning, StatusInitializing, StatusRunning,
	StatusSuspending, StatusSuspended, StatusResuming, StatusFailure, StatusShutdown,
}

const (
	defaultLimit = 20
	maxLimit     = 5000
)

// Devbox is the fake's record of one devbox.
type Devbox struct {
	ID                 string
	Name               string // "" answers null
	BlueprintID        string // "" answers null
	SnapshotID         string // "" answers null
	Size               Size   // launch_parameters' size fields
	Status             string
	CreateTimeMs       int64
	EndTimeMs          int64 // zero while the devbox is not terminal
	Metadata           map[string]string
	ShutdownReason     string // "api_shutdown" after a shutdown through the API
	SnapshotInProgress bool
	ForcedShutdown     bool // shut down with force=true
}

// Alive reports whether the devbox still holds resources at Runloop.
func (d Devbox) Alive() bool { return d.Status != StatusShutdown && d.Status != StatusFailure }

func (d *Devbox) clone() Devbox {
	c := *d
	if d.Metadata != nil {
		c.Metadata = make(map[string]string, len(d.Metadata))
		for k, v := range d.Metadata {
			c.Metadata[k] = v
		}
	}
	return c
}

// Server is a fake Runloop API. It is safe for concurrent use.
type Server struct {
	// URL is the base URL of the fake, for RUNLOOP_BASE_URL.
	URL string

	ts        *httptest.Server
	apiKey    string
	done      chan struct{}
	closeOnce sync.Once

	mu               sync.Mutex
	seq              int
	boxes            map[string]*Devbox
	failure          providertest.Failure
	pageSize         int
	terminalShutdown int
	requests         []string
	now              func() time.Time
}

var _ providertest.Fake = (*Server)(nil)

// NewServer starts a fake that accepts the bearer token apiKey.
func NewServer(apiKey string) *Server {
	s := &Server{
		apiKey:           apiKey,
		done:             make(chan struct{}),
		boxes:            make(map[string]*Devbox),
		terminalShutdown: http.StatusBadRequest,
		now:              time.Now,
	}
	s.ts = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.ts.URL
	return s
}

// Close releases any request held by FailHang and shuts the server down.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.done)
		s.ts.Close()
	})
}

// Create adds a running devbox with the given metadata and creation time and
// returns its id.
func (s *Server) Create(labels map[string]string, createdAt time.Time) string {
	return s.CreateWithStatus(StatusRunning, labels, createdAt)
}

// CreateWithStatus adds a devbox in the given status.
func (s *Server) CreateWithStatus(status string, labels map[string]string, createdAt time.Time) string {
	return s.CreateDevbox(DevboxSpec{Status: status, Metadata: labels, CreatedAt: createdAt})
}

// DevboxSpec describes a devbox for CreateDevbox.
type DevboxSpec struct {
	Status      string // "" means running
	Name        string
	BlueprintID string
	SnapshotID  string
	Size        Size
	Metadata    map[string]string
	CreatedAt   time.Time
}

// Size is what a devbox's launch_parameters say of its size, as Runloop's
// LaunchParameters names the fields. A zero field is left out of
// launch_parameters. The fake checks none of them: Runloop would refuse
// some combinations at creation.
type Size struct {
	// ResourceSize is resource_size_request: "X_SMALL", "SMALL",
	// "MEDIUM", "LARGE", "X_LARGE", "XX_LARGE" or "CUSTOM_SIZE".
	ResourceSize string
	// CustomCPUCores (custom_cpu_cores, vCPUs), CustomGBMemory
	// (custom_gb_memory, GiB) and CustomDiskSize (custom_disk_size, GiB)
	// give a CUSTOM_SIZE.
	CustomCPUCores float64
	CustomGBMemory int
	CustomDiskSize int
}

// CreateDevbox adds a devbox as spec describes and returns its id.
func (s *Server) CreateDevbox(spec DevboxSpec) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	d := &Devbox{
		ID: newID(s.seq), Name: spec.Name, BlueprintID: spec.BlueprintID, SnapshotID: spec.SnapshotID, Size: spec.Size,
		Status: spec.Status, CreateTimeMs: spec.CreatedAt.UnixMilli(), Metadata: map[string]string{},
	}
	if d.Status == "" {
		d.Status = StatusRunning
	}
	for k, v := range spec.Metadata {
		d.Metadata[k] = v
	}
	if !d.Alive() {
		d.EndTimeMs = s.now().UnixMilli()
	}
	s.boxes[d.ID] = d
	return d.ID
}

// newID returns an id shaped like Runloop's ("dbx_" and 21 base62 digits)
// that sorts in creation order.
func newID(n int) string {
	const digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	b := []byte(strings.Repeat("0", 21))
	v := uint64(n) + 1<<40
	for i := len(b) - 1; i >= 0 && v > 0; i-- {
		b[i] = digits[v%62]
		v /= 62
	}
	return "dbx_" + string(b)
}

// Alive reports whether the devbox exists and is neither shut down nor
// failed. Suspended devboxes are alive.
func (s *Server) Alive(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.boxes[id]
	return ok && d.Alive()
}

// Devbox returns a copy of the fake's record of a devbox.
func (s *Server) Devbox(id string) (Devbox, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.boxes[id]
	if !ok {
		return Devbox{}, false
	}
	return d.clone(), true
}

// Devboxes returns copies of all devboxes, oldest first.
func (s *Server) Devboxes() []Devbox {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Devbox, 0, len(s.boxes))
	for _, d := range s.boxes {
		out = append(out, d.clone())
	}
	slices.SortFunc(out, func(a, b Devbox) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// SetStatus moves a devbox to status, as Runloop's own lifecycle would (an
// idle devbox suspended, a keep-alive timeout shutting one down). It reports
// whether the devbox exists.
func (s *Server) SetStatus(id, status string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.boxes[id]
	if !ok {
		return false
	}
	d.Status = status
	if d.Alive() {
		d.EndTimeMs = 0
	} else if d.EndTimeMs == 0 {
		d.EndTimeMs = s.now().UnixMilli()
	}
	return true
}

// SetSnapshotInProgress marks a devbox as having a disk snapshot in
// progress: a shutdown without force=true is refused with 409. It reports
// whether the devbox exists.
func (s *Server) SetSnapshotInProgress(id string, on bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.boxes[id]
	if ok {
		d.SnapshotInProgress = on
	}
	return ok
}

// SetTerminalShutdownStatus sets what a shutdown of a devbox that is already
// shut down or failed answers: http.StatusBadRequest (the default) or
// http.StatusOK with the devbox unchanged.
func (s *Server) SetTerminalShutdownStatus(code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.terminalShutdown = code
}

// Fail injects f for all following requests; providertest.Failure{} clears
// it. FailConflict answers a shutdown without force=true with 409, as a
// devbox with a snapshot in progress does. FailSpuriousNotFound answers
// GET /v1/devboxes/{id} and POST /v1/devboxes/{id}/shutdown, once the key is
// accepted, exactly as for a devbox the fake does not have (404
// {"message": "Devbox not found: ID"}), as Runloop answers a key of another
// account; the devbox keeps running and GET /v1/devboxes still lists it.
// The other failures apply to every request, before authentication.
func (s *Server) Fail(f providertest.Failure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failure = f
}

// SetPageSize caps the number of devboxes per list page, whatever limit the
// client asks for. Zero removes the cap.
func (s *Server) SetPageSize(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pageSize = n
}

// Requests returns the requests received so far, as "METHOD path" with the
// query appended when there is one ("GET /v1/devboxes?limit=2").
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// ResetRequests forgets the requests received so far.
func (s *Server) ResetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = nil
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	line := r.Method + " " + r.URL.Path
	if r.URL.RawQuery != "" {
		line += "?" + r.URL.RawQuery
	}
	s.mu.Lock()
	s.requests = append(s.requests, line)
	f := s.failure
	s.mu.Unlock()

	switch f.Kind {
	case providertest.FailUnauthorized:
		writeError(w, http.StatusUnauthorized, "Unauthorized: invalid API key")
		return
	case providertest.FailRateLimited:
		if f.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int(f.RetryAfter/time.Second)))
		}
		writeError(w, http.StatusTooManyRequests, "Too many requests, please slow down")
		return
	case providertest.FailServerError:
		writeError(w, http.StatusInternalServerError, "Internal server error")
		return
	case providertest.FailHang:
		select {
		case <-r.Context().Done():
		case <-s.done:
		}
		return
	}

	if r.Header.Get("Authorization") != "Bearer "+s.apiKey || s.apiKey == "" {
		writeError(w, http.StatusUnauthorized, "Unauthorized: invalid API key")
		return
	}

	rest, ok := strings.CutPrefix(r.URL.Path, "/v1/devboxes")
	switch {
	case !ok:
		writeError(w, http.StatusNotFound, "Not found")
	case rest == "" || rest == "/":
		if r.Method != http.MethodGet {
			writeError(w, http.StatusMethodNotAllowed, "Method not allowed")
			return
		}
		s.list(w, r)
	default:
		parts := strings.Split(strings.TrimPrefix(rest, "/"), "/")
		switch {
		case len(parts) == 1 && parts[0] != "":
			if r.Method != http.MethodGet {
				writeError(w, http.StatusMethodNotAllowed, "Method not allowed")
				return
			}
			s.get(w, parts[0], f.Kind == providertest.FailSpuriousNotFound)
		case len(parts) == 2 && parts[0] != "" && parts[1] == "shutdown":
			if r.Method != http.MethodPost {
				writeError(w, http.StatusMethodNotAllowed, "Method not allowed")
				return
			}
			s.shutdown(w, r, parts[0], f)
		default:
			writeError(w, http.StatusNotFound, "Not found")
		}
	}
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := defaultLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxLimit {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit must be between 1 and %d", maxLimit))
			return
		}
		limit = n
	}
	status := q.Get("status")
	if status != "" && !slices.Contains(statuses, status) {
		writeError(w, http.StatusBadRequest, "Invalid status: "+status)
		return
	}
	withTotal := true
	if v := q.Get("include_total_count"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			writeError(w, http.StatusBadRequest, "include_total_count must be a boolean")
			return
		}
		withTotal = b
	}
	after := q.Get("starting_after")

	s.mu.Lock()
	if s.pageSize > 0 && s.pageSize < limit {
		limit = s.pageSize
	}
	var match []*Devbox
	for _, d := range s.boxes {
		if status == "" || d.Status == status {
			match = append(match, d)
		}
	}
	slices.SortFunc(match, func(a, b *Devbox) int { return strings.Compare(b.ID, a.ID) }) // newest first
	total := len(match)
	if after != "" {
		i := 0
		for i < len(match) && match[i].ID >= after {
			i++
		}
		match = match[i:]
	}
	page := match[:min(limit, len(match))]
	views := make([]map[string]any, 0, len(page))
	for _, d := range page {
		views = append(views, view(d))
	}
	remaining := len(match) - len(page)
	s.mu.Unlock()

	body := map[string]any{
		"devboxes":        views,
		"has_more":        remaining > 0,
		"remaining_count": remaining,
	}
	if withTotal {
		body["total_count"] = total
	}
	writeJSON(w, http.StatusOK, body)
}

// get answers GET /v1/devboxes/{id}; spurious answers as if the devbox did
// not exist.
func (s *Server) get(w http.ResponseWriter, id string, spurious bool) {
	s.mu.Lock()
	d, ok := s.boxes[id]
	ok = ok && !spurious
	var v map[string]any
	if ok {
		v = view(d)
	}
	s.mu.Unlock()
	if !ok {
		writeNotFound(w, id)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) shutdown(w http.ResponseWriter, r *http.Request, id string, f providertest.Failure) {
	force, _ := strconv.ParseBool(r.URL.Query().Get("force"))
	injectedConflict := f.Kind == providertest.FailConflict
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.boxes[id]
	switch {
	case !ok || f.Kind == providertest.FailSpuriousNotFound:
		writeNotFound(w, id)
	case !d.Alive():
		if s.terminalShutdown == http.StatusOK {
			writeJSON(w, http.StatusOK, view(d))
			return
		}
		writeError(w, s.terminalShutdown, fmt.Sprintf("Devbox %s is already in terminal state %s", id, d.Status))
	case (d.SnapshotInProgress || injectedConflict) && !force:
		writeError(w, http.StatusConflict, "Devbox has in-progress snapshots and cannot be shut down at this time. Use force=true to override.")
	default:
		d.Status = StatusShutdown
		d.EndTimeMs = s.now().UnixMilli()
		d.ShutdownReason = "api_shutdown"
		d.ForcedShutdown = force && d.SnapshotInProgress
		d.SnapshotInProgress = false
		writeJSON(w, http.StatusOK, view(d))
	}
}

// view renders a devbox as Runloop's DevboxView. Callers hold s.mu.
func view(d *Devbox) map[string]any {
	v := map[string]any{
		"id":                d.ID,
		"name":              nullable(d.Name),
		"blueprint_id":      nullable(d.BlueprintID),
		"snapshot_id":       nullable(d.SnapshotID),
		"status":            d.Status,
		"create_time_ms":    d.CreateTimeMs,
		"end_time_ms":       nil,
		"metadata":          metadata(d),
		"capabilities":      []string{},
		"launch_parameters": launchParameters(d.Size),
		"state_transitions": []any{},
		"initiator_type":    "api",
		"shutdown_reason":   nil,
	}
	if d.EndTimeMs != 0 {
		v["end_time_ms"] = d.EndTimeMs
	}
	if d.ShutdownReason != "" {
		v["shutdown_reason"] = d.ShutdownReason
	}
	return v
}

// launchParameters renders a devbox's launch_parameters: the size fields
// that are set.
func launchParameters(z Size) map[string]any {
	lp := map[string]any{}
	if z.ResourceSize != "" {
		lp["resource_size_request"] = z.ResourceSize
	}
	if z.CustomCPUCores != 0 {
		lp["custom_cpu_cores"] = z.CustomCPUCores
	}
	if z.CustomGBMemory != 0 {
		lp["custom_gb_memory"] = z.CustomGBMemory
	}
	if z.CustomDiskSize != 0 {
		lp["custom_disk_size"] = z.CustomDiskSize
	}
	return lp
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func metadata(d *Devbox) map[string]string {
	m := make(map[string]string, len(d.Metadata))
	for k, v := range d.Metadata {
		m[k] = v
	}
	return m
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"message": msg})
}

// writeNotFound answers a request about a devbox the API does not have.
func writeNotFound(w http.ResponseWriter, id string) {
	writeError(w, http.StatusNotFound, "Devbox not found: "+id)
}
