package api

import (
	"encoding/base64"
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
	if err := onlyParams(q, "state", "provider", "session", "limit", "after"); err != nil {
		s.fail(w, r, err)
		return
	}
	after, err := decodeListCursor(q.Get("after"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	f := reaper.EntryFilter{Provider: q.Get("provider"), Session: q.Get("session"), After: after}
	for _, v := range q["state"] {
		for _, st := range strings.Split(v, ",") {
			if st = strings.TrimSpace(st); st != "" {
				f.States = append(f.States, reaper.State(st))
			}
		}
	}
	limit, err := intParam(q.Get("limit"), "limit")
	switch {
	case err != nil:
		s.fail(w, r, err)
		return
	case limit == 0:
		limit = DefaultListPage
	case limit > MaxListPage:
		s.fail(w, r, reaper.Errorf(reaper.EINVALID, "limit=%d: a page holds at most %d entries; follow next for more", limit, MaxListPage))
		return
	}
	ents, err := s.Service.Entries(r.Context(), f, limit+1)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	page := ListPage{Sandboxes: make([]EntryView, 0, min(len(ents), limit))}
	if len(ents) > limit {
		ents = ents[:limit]
		page.Next = encodeListCursor(ents[limit-1].Key())
		w.Header().Set(HeaderNextPage, page.Next)
	}
	for _, e := range ents {
		page.Sandboxes = append(page.Sandboxes, view(e))
	}
	writeJSON(w, http.StatusOK, page)
}

// Pages of GET /v1/sandboxes: DefaultListPage entries unless limit says
// otherwise, at most MaxListPage.
const (
	DefaultListPage = 1000
	MaxListPage     = 10000
)

// ListPage is one page of GET /v1/sandboxes, in key order. Next, when
// set, is the after= cursor of the next page (also in the Reaperd-Next
// header); it is absent on the last page.
type ListPage struct {
	Sandboxes []EntryView `json:"sandboxes"`
	Next      string      `json:"next,omitempty"`
}

// encodeListCursor makes the opaque after= cursor that follows key.
func encodeListCursor(key string) string { return base64.RawURLEncoding.EncodeToString([]byte(key)) }

func decodeListCursor(v string) (string, error) {
	if v == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(v)
	if _, _, kerr := reaper.ParseKey(string(b)); err != nil || kerr != nil {
		return "", reaper.Errorf(reaper.EINVALID, "after=%q: not a cursor this daemon gave out (take it from the previous page's next)", v)
	}
	return string(b), nil
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
