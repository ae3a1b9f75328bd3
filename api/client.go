package api

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/reaperd/reaperd/reaper"
)

// Client calls a daemon's API over its Unix socket, or over its TCP
// listener with a token.
type Client struct {
	// Socket is the path of the daemon's socket.
	Socket string
	// URL, when set, is the base URL of the daemon's TCP listener
	// (https://host:port); Socket is then unused.
	URL string
	// Token is the API token sent to the TCP listener.
	Token string
	// Err, when set, is what every call returns: the client could not be
	// configured (a bad URL, an unreadable token file).
	Err error
	// Timeout bounds each call. Zero means 30 seconds; sweeps get longer.
	Timeout time.Duration
	// CallTimeout, when set, bounds every call, sweeps and discovery
	// included (the CLI's --timeout).
	CallTimeout time.Duration

	http *http.Client
}

// NewClient returns a client for the daemon listening on socket.
func NewClient(socket string) *Client {
	c := &Client{Socket: socket}
	c.http = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", c.Socket)
		},
		MaxIdleConnsPerHost: 64,
	}}
	return c
}

// NewRemoteClient returns a client for the daemon's TCP listener at
// baseURL, sending token. tlsConfig may be nil (system roots).
func NewRemoteClient(baseURL, token string, tlsConfig *tls.Config) (*Client, error) {
	u, err := url.Parse(strings.TrimSpace(baseURL))
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return nil, fmt.Errorf("parse daemon URL %q: use https://host:port (or http:// on loopback)", baseURL)
	}
	if strings.TrimSpace(token) == "" {
		return nil, errors.New("no API token: set REAPERD_TOKEN or --token-file for a daemon reached by URL")
	}
	c := &Client{URL: u.Scheme + "://" + u.Host, Token: strings.TrimSpace(token)}
	c.http = &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig, MaxIdleConnsPerHost: 64,
		Proxy: http.ProxyFromEnvironment},
		// A redirect would carry the token elsewhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return c, nil
}

// where names the daemon the client calls.
func (c *Client) where() string {
	if c.URL != "" {
		return c.URL
	}
	return c.Socket
}

// NotRunningError is returned when no daemon answers on the socket.
type NotRunningError struct {
	Socket string
	Err    error
}

func (e *NotRunningError) Error() string {
	if strings.Contains(e.Socket, "://") {
		return fmt.Sprintf("cannot reach reaperd at %s: %v (is its [http] listen set, and the address reachable?)", e.Socket, e.Err)
	}
	switch {
	case errors.Is(e.Err, os.ErrPermission):
		return fmt.Sprintf("cannot connect to reaperd at %s: permission denied (the socket is mode 0660: add your user to its group, or use sudo)", e.Socket)
	case errors.Is(e.Err, syscall.ECONNREFUSED):
		return fmt.Sprintf("reaperd is not running: nothing is listening on %s (a stale socket?); start it with `reaperd serve`", e.Socket)
	}
	return fmt.Sprintf("reaperd is not running: no socket at %s; start it with `reaperd serve`, or point --socket or REAPERD_SOCKET at its socket", e.Socket)
}

func (e *NotRunningError) Unwrap() error { return e.Err }

// do sends a request and decodes a JSON response into out. API errors are
// returned as *reaper.Error with the daemon's code and message.
func (c *Client) do(ctx context.Context, method, path string, in, out any, timeout time.Duration) error {
	if c.Err != nil {
		return c.Err
	}
	if timeout == 0 {
		timeout = c.Timeout
	}
	if c.CallTimeout > 0 {
		timeout = c.CallTimeout
	}
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	base := "http://reaperd"
	if c.URL != "" {
		base = c.URL
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, body)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return &NotRunningError{Socket: c.where(), Err: op.Err}
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("reaperd at %s did not answer within %s", c.where(), timeout)
		}
		return fmt.Errorf("call reaperd: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode >= 400 {
		var eb ErrorBody
		if json.Unmarshal(data, &eb) == nil && eb.Error.Code != "" {
			return &reaper.Error{Code: eb.Error.Code, Message: eb.Error.Message}
		}
		return fmt.Errorf("reaperd answered %s", resp.Status)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decode response: %w", err)
		}
	}
	return nil
}

// Register registers a sandbox. created is false when it was already
// registered to the same session.
func (c *Client) Register(ctx context.Context, r reaper.RegisterRequest) (ent *EntryView, err error) {
	ent = &EntryView{}
	err = c.do(ctx, "POST", "/v1/sandboxes", r, ent, 0)
	return ent, err
}

// Entry returns one entry.
func (c *Client) Entry(ctx context.Context, key string) (*EntryView, error) {
	ent := &EntryView{}
	return ent, c.do(ctx, "GET", "/v1/sandboxes/"+escapeKey(key), nil, ent, 0)
}

// Entries lists the entries f selects, at most limit (zero: all),
// following the pages.
func (c *Client) Entries(ctx context.Context, f reaper.EntryFilter, limit int) ([]EntryView, error) {
	out := []EntryView{}
	err := c.EntryPages(ctx, f, limit, func(page []EntryView) error {
		out = append(out, page...)
		return nil
	})
	return out, err
}

// EntryPages calls fn with each page of the entries f selects, in key
// order, until limit entries (zero: all) have been given: memory is
// bounded by a page, however many entries the ledger holds.
func (c *Client) EntryPages(ctx context.Context, f reaper.EntryFilter, limit int, fn func([]EntryView) error) error {
	q := url.Values{}
	if f.Provider != "" {
		q.Set("provider", f.Provider)
	}
	if f.Session != "" {
		q.Set("session", f.Session)
	}
	for _, s := range f.States {
		q.Add("state", string(s))
	}
	given := 0
	for {
		size := DefaultListPage
		if limit > 0 {
			size = min(size, limit-given)
		}
		q.Set("limit", strconv.Itoa(size))
		var page ListPage
		if err := c.do(ctx, "GET", "/v1/sandboxes?"+q.Encode(), nil, &page, 0); err != nil {
			return err
		}
		given += len(page.Sandboxes)
		if len(page.Sandboxes) > 0 {
			if err := fn(page.Sandboxes); err != nil {
				return err
			}
		}
		if page.Next == "" || (limit > 0 && given >= limit) {
			return nil
		}
		q.Set("after", page.Next)
	}
}

// Tag changes an entry's tags or labels.
func (c *Client) Tag(ctx context.Context, key string, r reaper.TagRequest) (*EntryView, error) {
	ent := &EntryView{}
	return ent, c.do(ctx, "PATCH", "/v1/sandboxes/"+escapeKey(key), r, ent, 0)
}

// Release releases an entry.
func (c *Client) Release(ctx context.Context, key string) (*EntryView, error) {
	ent := &EntryView{}
	return ent, c.do(ctx, "POST", "/v1/sandboxes/"+escapeKey(key)+"/release", nil, ent, 0)
}

// Heartbeat renews a session's lease, optionally changing it.
func (c *Client) Heartbeat(ctx context.Context, session string, lease time.Duration) (*reaper.Session, error) {
	s := &reaper.Session{}
	var in any
	if lease > 0 {
		in = HeartbeatRequest{Lease: reaper.Duration(lease)}
	}
	return s, c.do(ctx, "POST", "/v1/sessions/"+url.PathEscape(session)+"/heartbeat", in, s, 0)
}

// EndSession ends a session.
func (c *Client) EndSession(ctx context.Context, session string) (*reaper.EndResult, error) {
	r := &reaper.EndResult{}
	return r, c.do(ctx, "POST", "/v1/sessions/"+url.PathEscape(session)+"/end", nil, r, 0)
}

// Sessions lists sessions.
func (c *Client) Sessions(ctx context.Context, liveOnly bool) ([]*reaper.Session, error) {
	var out struct {
		Sessions []*reaper.Session `json:"sessions"`
	}
	return out.Sessions, c.do(ctx, "GET", "/v1/sessions?live="+strconv.FormatBool(liveOnly), nil, &out, 0)
}

// Sweep runs a sweep, or a dry run.
func (c *Client) Sweep(ctx context.Context, dryRun bool) (*reaper.SweepReport, error) {
	rep := &reaper.SweepReport{}
	return rep, c.do(ctx, "POST", "/v1/sweep", SweepRequest{DryRun: dryRun}, rep, 10*time.Minute)
}

// Discover lists sandboxes no entry tracks.
func (c *Client) Discover(ctx context.Context) (*DiscoverResponse, error) {
	out := &DiscoverResponse{}
	return out, c.do(ctx, "POST", "/v1/discover", nil, out, 10*time.Minute)
}

// Audit returns audit events since a time or duration ("24h").
func (c *Client) Audit(ctx context.Context, since string, limit int) ([]reaper.AuditEvent, error) {
	q := url.Values{}
	if since != "" {
		q.Set("since", since)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out struct {
		Events []reaper.AuditEvent `json:"events"`
	}
	return out.Events, c.do(ctx, "GET", "/v1/audit?"+q.Encode(), nil, &out, 0)
}

// AuditReport asks for a cost report; empty arguments take the daemon's
// defaults (the last 7 days, by provider).
func (c *Client) AuditReport(ctx context.Context, since, until, provider, groupBy string) (*reaper.Report, error) {
	q := url.Values{}
	for k, v := range map[string]string{"since": since, "until": until, "provider": provider, "group_by": groupBy} {
		if v != "" {
			q.Set(k, v)
		}
	}
	rep := &reaper.Report{}
	return rep, c.do(ctx, "GET", "/v1/audit/report?"+q.Encode(), nil, rep, 0)
}

// Status returns the daemon's status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	st := &Status{}
	return st, c.do(ctx, "GET", "/v1/status", nil, st, 0)
}

// Backup streams a consistent copy of the daemon's ledger into w and
// returns its length. A copy cut short is an error; so is a pause of
// Timeout (30 seconds when zero) with nothing received.
func (c *Client) Backup(ctx context.Context, w io.Writer) (int64, error) {
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	return c.download(ctx, "/v1/ledger/backup", w, timeout)
}

func escapeKey(key string) string {
	p, id, ok := strings.Cut(key, "/")
	if !ok {
		return url.PathEscape(key)
	}
	return url.PathEscape(p) + "/" + url.PathEscape(id)
}

// AuditEvents streams audit events at or after since (a duration before
// now, an RFC 3339 time, or "" for all) into w as JSON lines, one page at a
// time (pageSize events; zero means DefaultEventPage), following each
// page's cursor. It returns the number of events written. Memory stays
// bounded by a page whatever the size of the log.
func (c *Client) AuditEvents(ctx context.Context, since string, pageSize int, w io.Writer) (int, error) {
	if c.Err != nil {
		return 0, c.Err
	}
	n, cursor := 0, ""
	for {
		q := url.Values{}
		if since != "" {
			q.Set("since", since)
		}
		if cursor != "" {
			q.Set("after", cursor)
		}
		if pageSize > 0 {
			q.Set("limit", strconv.Itoa(pageSize))
		}
		next, lines, err := c.eventPage(ctx, "/v1/audit/events?"+q.Encode(), w)
		n += lines
		if err != nil || next == "" {
			return n, err
		}
		cursor = next
	}
}

// eventPage fetches one page of events into w; it returns the next page's
// cursor and the number of lines written.
func (c *Client) eventPage(ctx context.Context, path string, w io.Writer) (string, int, error) {
	timeout := cmp.Or(c.CallTimeout, c.Timeout, 30*time.Second)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	base := "http://reaperd"
	if c.URL != "" {
		base = c.URL
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		return "", 0, fmt.Errorf("build request: %w", err)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return "", 0, &NotRunningError{Socket: c.where(), Err: op.Err}
		}
		return "", 0, fmt.Errorf("call reaperd: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var eb ErrorBody
		if json.Unmarshal(data, &eb) == nil && eb.Error.Code != "" {
			return "", 0, &reaper.Error{Code: eb.Error.Code, Message: eb.Error.Message}
		}
		return "", 0, fmt.Errorf("reaperd answered %s", resp.Status)
	}
	lines := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		if _, err := w.Write(append(sc.Bytes(), '\n')); err != nil {
			return "", lines, fmt.Errorf("write events: %w", err)
		}
		lines++
	}
	if err := sc.Err(); err != nil {
		return "", lines, fmt.Errorf("read events: %w", err)
	}
	return resp.Header.Get(HeaderNextPage), lines, nil
}
