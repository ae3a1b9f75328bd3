package api

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/url"
	"time"

	"github.com/reaperd/reaperd/reaper"
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
	// Engine is the engine's state: queues, provider health, the next
	// deadline, quarantined records, ledger health.
	Engine *reaper.EngineStatus `json:"engine,omitempty"`
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
	rep, err := s.Service.Sweep(r.Context(), reaper.SweepOptions{DryRun: req.DryRun})
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
	found, errs := s.Service.Discover(r.Context())
	if found == nil {
		found = []reaper.Untracked{}
	}
	writeJSON(w, http.StatusOK, DiscoverResponse{Untracked: found, Errors: errs})
}

func (s *Server) audit(w http.ResponseWriter, r *http.Request) {
	since, limit, err := auditQuery(r.URL.Query())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	evs, err := s.Service.Audit(r.Context(), since, limit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"events": evs})
}

// Audit event pages: the default and largest number of events per page.
const (
	DefaultEventPage = 10000
	MaxEventPage     = 100000
)

// HeaderNextPage carries the cursor of the next page of events; it is
// absent on the last page.
const HeaderNextPage = "Reaperd-Next"

// auditEvents serves GET /v1/audit/events: one page of audit events as
// JSON lines (application/x-ndjson), oldest first, from since or after the
// cursor of the previous page, which HeaderNextPage gives.
// auditQuery reads the since and limit parameters of the audit routes,
// refusing any parameter but those and extra.
func auditQuery(q url.Values, extra ...string) (time.Time, int, error) {
	if err := onlyParams(q, append([]string{"since", "limit"}, extra...)...); err != nil {
		return time.Time{}, 0, err
	}
	since, err := ParseSince(q.Get("since"), time.Now())
	if err != nil {
		return time.Time{}, 0, err
	}
	limit, err := intParam(q.Get("limit"), "limit")
	return since, limit, err
}

func (s *Server) auditEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	since, limit, err := auditQuery(q, "after")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	switch {
	case limit == 0:
		limit = DefaultEventPage
	case limit > MaxEventPage:
		s.fail(w, r, reaper.Errorf(reaper.EINVALID, "limit=%d: a page holds at most %d events; follow %s for more", limit, MaxEventPage, HeaderNextPage))
		return
	}
	evs, next, err := s.Service.AuditPage(r.Context(), since, q.Get("after"), limit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	if next != "" {
		w.Header().Set(HeaderNextPage, next)
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	for i := range evs {
		if err := enc.Encode(&evs[i]); err != nil {
			return // the client went away
		}
	}
	_ = bw.Flush()
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	if s.Status == nil {
		s.fail(w, r, reaper.Errorf(reaper.ENOTFOUND, "status is not available"))
		return
	}
	st := s.Status()
	if s.Service != nil {
		es, err := s.Service.Status(r.Context())
		if err != nil {
			s.fail(w, r, err)
			return
		}
		st.Engine = es
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	if s.Ready != nil {
		if err := s.Ready(); err != nil {
			s.fail(w, r, reaper.Errorf(reaper.EUNAVAILABLE, "not ready: %s", reaper.ErrorMessage(err)))
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}
