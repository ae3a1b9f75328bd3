package api

import (
	"net/http"
	"strings"

	"github.com/reaperd/reaperd/reaper"
)

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
	ent, created, err := s.Service.Register(r.Context(), req)
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
	ents, err := s.Service.Entries(r.Context(), f, limit)
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
	ent, err := s.Service.Entry(r.Context(), key)
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
	ent, err := s.Service.Tag(r.Context(), key, req)
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
	ent, err := s.Service.Release(r.Context(), key)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, view(ent))
}
