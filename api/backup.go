package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/reaperd/reaperd/reaper"
)

// LedgerBackup is what GET /v1/ledger/backup streams from (ledger.DB):
// Backup writes a consistent copy into w, calling begin with its size
// before the first byte.
type LedgerBackup interface {
	Backup(ctx context.Context, w io.Writer, begin func(size int64) error) (int64, error)
}

// ledgerSource returns the ledger to copy and the access rule that guards
// it; ok is false when the server has none.
func (s *Server) ledgerSource() (b LedgerBackup, a reaper.Access, ok bool) {
	return s.Ledger, s.Access, s.Ledger != nil
}

// mayReadLedger returns nil when the caller carried by ctx may copy the
// whole ledger, and an EFORBIDDEN error otherwise. The ledger holds every
// user's registrations, so only root, the daemon's user and members of an
// admin group may: the callers that may change anything in it. A context
// without a caller (the daemon itself, a test) may; an API token may not.
func mayReadLedger(ctx context.Context, a reaper.Access) error {
	c, ok := reaper.CallerFrom(ctx)
	if !ok {
		return nil
	}
	if c.Token == "" {
		if c.UID == 0 || c.UID == a.Self {
			return nil
		}
		for _, g := range a.AdminGroups {
			if c.InGroup(g) {
				return nil
			}
		}
	}
	who := "root or the daemon's user"
	if len(a.AdminGroups) > 0 {
		who = "root, the daemon's user or a member of the admin group"
	}
	caller := "uid " + strconv.FormatUint(uint64(c.UID), 10)
	if c.Token != "" {
		caller = "API token " + strconv.Quote(c.Token)
	}
	return reaper.Errorf(reaper.EFORBIDDEN, "the ledger holds every user's registrations: only %s may back it up, not %s", who, caller)
}

// Headers of GET /v1/ledger/backup besides Content-Length.
const (
	backupContentType = "application/octet-stream"
	// headerLedgerSize repeats the copy's length, for a client that
	// does not see Content-Length.
	headerLedgerSize = "Reaperd-Ledger-Size"
)

// backupStall is how long a backup waits on a client that stops reading
// before it lets go of its read transaction, which holds back the
// ledger's close and any write that must grow the file's memory map.
var backupStall = 30 * time.Second

// errClientStalled ends a backup whose client stopped reading.
var errClientStalled = errors.New("the client stopped reading")

// backup streams a consistent copy of the ledger: one bbolt read
// transaction written as it is read. Its length is sent first
// (Content-Length), so a client can tell a copy cut short; an error once
// the copy has started aborts the connection rather than end it cleanly.
//
// The transaction writes into a pipe that another goroutine copies to the
// client, so that a client that stops reading for backupStall costs the
// transaction, not the ledger.
func (s *Server) backup(w http.ResponseWriter, r *http.Request) {
	if err := onlyParams(r.URL.Query()); err != nil {
		s.fail(w, r, err)
		return
	}
	src, access, ok := s.ledgerSource()
	if !ok {
		s.fail(w, r, reaper.Errorf(reaper.ENOTFOUND, "this daemon has no ledger to back up"))
		return
	}
	if err := mayReadLedger(r.Context(), access); err != nil {
		s.fail(w, r, err)
		return
	}
	head := r.Method == http.MethodHead
	errHead := errors.New("HEAD: headers only")
	pr, pw := io.Pipe()
	var sent chan error // set once the copy to the client has started
	n, err := src.Backup(r.Context(), pw, func(size int64) error {
		h := w.Header()
		h.Set("Content-Type", backupContentType)
		h.Set("Content-Length", strconv.FormatInt(size, 10))
		h.Set(headerLedgerSize, strconv.FormatInt(size, 10))
		h.Set("Content-Disposition", `attachment; filename="ledger.db"`)
		h.Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		if head {
			return errHead
		}
		sent = make(chan error, 1)
		go func() { sent <- sendStream(w, pr, backupStall) }()
		return nil
	})
	pw.CloseWithError(err) // nil: the copy ends at EOF
	var sendErr error
	if sent != nil {
		sendErr = <-sent
	}
	switch {
	case head && errors.Is(err, errHead):
	case sent == nil:
		s.fail(w, r, err)
	case err == nil && sendErr == nil:
		if s.Logger != nil {
			s.Logger.Info("ledger backed up", logUID, callerUID(r.Context()), "bytes", n)
		}
	default:
		if err == nil || errors.Is(err, io.ErrClosedPipe) || errors.Is(err, errClientStalled) {
			err = sendErr
		}
		if s.Logger != nil && r.Context().Err() == nil {
			s.Logger.Warn("ledger backup failed", logUID, callerUID(r.Context()), "bytes", n, logErr, err)
		}
		panic(http.ErrAbortHandler)
	}
}

// sendStream copies r to w until EOF. A write that takes longer than
// stall closes r with errClientStalled, so that its writer is released
// while this copy waits for the client.
func sendStream(w io.Writer, r *io.PipeReader, stall time.Duration) error {
	timer := time.AfterFunc(stall, func() { r.CloseWithError(errClientStalled) })
	defer timer.Stop()
	buf := make([]byte, 256<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			timer.Reset(stall)
			if _, werr := w.Write(buf[:n]); werr != nil {
				r.CloseWithError(werr)
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			r.CloseWithError(err)
			return err
		}
	}
}

func callerUID(ctx context.Context) string {
	if c, ok := reaper.CallerFrom(ctx); ok && c.Token == "" {
		return strconv.FormatUint(uint64(c.UID), 10)
	}
	return "-"
}

// errStalled ends a download that receives nothing for a while.
var errStalled = errors.New("the daemon stopped sending")

// download sends GET path and copies the response body into w. The body
// must be as long as the daemon announced: a copy cut short is an error.
// timeout bounds the wait for the response and any pause in the body, not
// the whole download.
func (c *Client) download(ctx context.Context, path string, w io.Writer, timeout time.Duration) (int64, error) {
	if c.Err != nil {
		return 0, c.Err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stall := time.AfterFunc(timeout, func() { cancel(errStalled) })
	defer stall.Stop()
	base := "http://reaperd"
	if c.URL != "" {
		base = c.URL
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		return 0, fmt.Errorf("build request: %w", err)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return 0, &NotRunningError{Socket: c.where(), Err: op.Err}
		}
		if errors.Is(context.Cause(ctx), errStalled) {
			return 0, fmt.Errorf("reaperd at %s did not answer within %s", c.where(), timeout)
		}
		return 0, fmt.Errorf("call reaperd: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var eb ErrorBody
		if json.Unmarshal(data, &eb) == nil && eb.Error.Code != "" {
			return 0, &reaper.Error{Code: eb.Error.Code, Message: eb.Error.Message}
		}
		return 0, fmt.Errorf("reaperd answered %s", resp.Status)
	}
	want := resp.ContentLength
	if want < 0 {
		if want, err = strconv.ParseInt(resp.Header.Get(headerLedgerSize), 10, 64); err != nil {
			return 0, fmt.Errorf("download %s: the daemon did not say how long it is", path)
		}
	}
	n, err := io.Copy(w, &progressReader{r: resp.Body, progress: func() { stall.Reset(timeout) }})
	if err != nil {
		if cause := context.Cause(ctx); errors.Is(cause, errStalled) {
			err = fmt.Errorf("%w for %s", cause, timeout)
		}
		return n, fmt.Errorf("download %s: %w after %d of %d bytes", path, err, n, want)
	}
	if n != want {
		return n, fmt.Errorf("download %s: got %d of %d bytes", path, n, want)
	}
	return n, nil
}

// progressReader calls progress after each read that returns data.
type progressReader struct {
	r        io.Reader
	progress func()
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.progress()
	}
	return n, err
}
