package api

import (
	"net/http"
	"strconv"

	"github.com/reaperd/reaperd/reaper"
)

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
	ss, err := s.Service.Sessions(r.Context(), live)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"sessions": ss})
}

func (s *Server) getSession(w http.ResponseWriter, r *http.Request) {
	sess, err := s.Service.Session(r.Context(), r.PathValue("id"))
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
	sess, err := s.Service.Heartbeat(r.Context(), r.PathValue("id"), req.Lease)
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
	res, err := s.Service.EndSession(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if res.Items == nil {
		res.Items = []reaper.SweepItem{}
	}
	writeJSON(w, http.StatusOK, res)
}
