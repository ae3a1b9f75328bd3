package api

import (
	"net/http"
	"net/url"
	"time"

	"github.com/reaperd/reaperd/reaper"
)

// DefaultReportWindow is the window of a report that gives no since.
const DefaultReportWindow = 7 * 24 * time.Hour

// ReportQuery reads a report's parameters: since (default 7d), until
// (default now), provider and group_by. Relative times count back from
// now; the report states the window it resolved.
func ReportQuery(q url.Values, now time.Time, extra ...string) (reaper.ReportQuery, error) {
	var rq reaper.ReportQuery
	if err := onlyParams(q, append([]string{"since", "until", "provider", "group_by"}, extra...)...); err != nil {
		return rq, err
	}
	now = now.UTC().Truncate(time.Second)
	since, err := ParseWhen("since", q.Get("since"), now)
	if err != nil {
		return rq, err
	}
	if q.Get("since") == "" {
		since = now.Add(-DefaultReportWindow)
	}
	until, err := ParseWhen("until", q.Get("until"), now)
	if err != nil {
		return rq, err
	}
	if q.Get("until") == "" {
		until = now
	}
	rq = reaper.ReportQuery{Since: since.UTC(), Until: until.UTC(), Provider: q.Get("provider"), GroupBy: reaper.GroupBy(q.Get("group_by"))}
	return rq, rq.Validate()
}

func (s *Server) auditReport(w http.ResponseWriter, r *http.Request) {
	q, err := ReportQuery(r.URL.Query(), time.Now())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	rep, err := s.Service.AuditReport(r.Context(), q)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}
