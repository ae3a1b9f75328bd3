package ledger

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// Backup writes a consistent copy of the ledger to w while the daemon
// serves: the file as one read transaction sees it, so writers carry on
// and none of their later commits is in the copy. begin, when not nil, is
// called with the copy's exact length before the first byte is written; an
// error from it ends the backup with nothing written. Backup returns the
// number of bytes written.
//
// A write transaction that has to grow the file's memory map waits for
// the backup to finish, as for any long read transaction.
func (db *DB) Backup(ctx context.Context, w io.Writer, begin func(size int64) error) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	db.mu.RLock()
	defer db.mu.RUnlock()
	if db.closed {
		return 0, errClosed()
	}
	var n int64
	err := db.bolt.View(func(btx *bolt.Tx) error {
		if begin != nil {
			if err := begin(btx.Size()); err != nil {
				return err
			}
		}
		var err error
		n, err = btx.WriteTo(&ctxWriter{ctx: ctx, w: w})
		return err
	})
	if err != nil {
		return n, fmt.Errorf("back up ledger %s: %w", db.path, err)
	}
	return n, nil
}

// ctxWriter fails writes once its context ends, so that a backup to a
// client that went away stops.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c *ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

// ErrExists is returned when a copy would replace a file that exists and
// replacing was not asked for.
var ErrExists = errors.New("file exists")

// A Copy is a ledger file being written next to its destination. It
// becomes the destination only once it is complete, on disk and verified,
// in one rename, so that a copy cut short never leaves a file behind.
type Copy struct {
	dest    string
	tmp     string
	f       *os.File
	replace bool
}

// NewCopy starts a copy that Commit will move to dest. Unless replace is
// set it refuses, at once and again at Commit, when dest exists. The
// temporary file is created in dest's directory, mode 0600: a ledger holds
// every registration.
func NewCopy(dest string, replace bool) (*Copy, error) {
	if !replace {
		if _, err := os.Lstat(dest); err == nil {
			return nil, fmt.Errorf("create %s: %w: give --force to replace it", dest, ErrExists)
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("create %s: %w", dest, err)
		}
	}
	dir, base := filepath.Split(dest)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", dest, err)
	}
	return &Copy{dest: dest, tmp: f.Name(), f: f, replace: replace}, nil
}

// Name returns the path of the temporary file.
func (c *Copy) Name() string { return c.tmp }

// Write writes to the temporary file.
func (c *Copy) Write(p []byte) (int, error) {
	if c.f == nil {
		return 0, os.ErrClosed
	}
	return c.f.Write(p)
}

// Commit makes the copy the destination: it syncs and closes the temporary
// file, verifies that it opens as a ledger and passes bbolt's consistency
// check, renames it to the destination and syncs the directory. It returns
// the check's report, whose index findings (Findings) do not stop the copy:
// a copy is faithful to what it copies. On any error the temporary file is
// removed and the destination is left as it was.
func (c *Copy) Commit() (*CheckReport, error) {
	if c.f != nil {
		err := c.f.Sync()
		if cerr := c.f.Close(); err == nil {
			err = cerr
		}
		c.f = nil
		if err != nil {
			c.Abort()
			return nil, fmt.Errorf("write %s: %w", c.tmp, err)
		}
	}
	rep, err := Check(c.tmp)
	if err != nil {
		c.Abort()
		return nil, fmt.Errorf("verify the copy: %w", err)
	}
	if len(rep.Corrupt) > 0 {
		c.Abort()
		return nil, fmt.Errorf("verify the copy: bbolt's check failed: %s", strings.Join(rep.Corrupt, "; "))
	}
	if err := c.install(); err != nil {
		c.Abort()
		return nil, err
	}
	c.tmp = ""
	rep.Path = c.dest
	return rep, nil
}

// install moves the temporary file to the destination and syncs the
// directory. Without replace, a hard link refuses an existing destination
// atomically; where hard links are not supported, it looks first.
func (c *Copy) install() error {
	if c.replace {
		if err := os.Rename(c.tmp, c.dest); err != nil {
			return fmt.Errorf("install %s: %w", c.dest, err)
		}
	} else {
		err := os.Link(c.tmp, c.dest)
		switch {
		case errors.Is(err, os.ErrExist):
			return fmt.Errorf("install %s: %w: give --force to replace it", c.dest, ErrExists)
		case err != nil:
			if _, serr := os.Lstat(c.dest); serr == nil {
				return fmt.Errorf("install %s: %w: give --force to replace it", c.dest, ErrExists)
			}
			if err := os.Rename(c.tmp, c.dest); err != nil {
				return fmt.Errorf("install %s: %w", c.dest, err)
			}
		default:
			// The destination is in place; a temporary name left behind
			// costs nothing but space.
			_ = os.Remove(c.tmp)
		}
	}
	if err := syncDir(filepath.Dir(c.dest)); err != nil {
		return fmt.Errorf("install %s: %w", c.dest, err)
	}
	return nil
}

// Abort removes the temporary file. It is a no-op after a successful
// Commit.
func (c *Copy) Abort() {
	if c.f != nil {
		c.f.Close()
		c.f = nil
	}
	if c.tmp != "" {
		os.Remove(c.tmp)
		c.tmp = ""
	}
}

// syncDir fsyncs a directory, so that a rename in it is durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
