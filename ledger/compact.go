package ledger

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"strings"
	"syscall"

	bolt "go.etcd.io/bbolt"
)

// compactTxSize bounds what one transaction of a compaction writes.
const compactTxSize = 16 << 20

// CompactResult says what Compact did.
type CompactResult struct {
	// Before and After are the sizes of the source and the new file.
	Before, After int64
	// Report is the check of the new file.
	Report *CheckReport
}

// Compact copies the ledger at src, which no daemon may hold, into a new
// file at dest without its free pages. dest is written like a Copy: it
// appears only once complete, synced and verified, and an existing dest
// is replaced only when replace is set (dest may then be src itself). The
// new file gets src's mode and, where allowed, its owner, so that the
// daemon's user can open it. A source that fails bbolt's check is refused:
// compaction would drop what its tree cannot reach.
func Compact(src, dest string, replace bool) (*CompactResult, error) {
	bsrc, err := openOffline(src, "compact")
	if err != nil {
		return nil, err
	}
	defer bsrc.Close()
	fi, err := os.Stat(src)
	if err != nil {
		return nil, fmt.Errorf("compact ledger %s: %w", src, err)
	}
	var corrupt []string
	srcKeys := map[string]int{}
	err = bsrc.View(func(btx *bolt.Tx) error {
		if err := complete(btx, fi.Size()); err != nil {
			corrupt = append(corrupt, err.Error())
			return nil
		}
		for err := range btx.Check() {
			corrupt = append(corrupt, err.Error())
		}
		if len(corrupt) == 0 {
			srcKeys = keyCounts(btx)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("compact ledger %s: %w", src, err)
	}
	if len(corrupt) > 0 {
		if len(corrupt) > 5 {
			corrupt = append(corrupt[:5], fmt.Sprintf("and %d more", len(corrupt)-5))
		}
		return nil, fmt.Errorf("compact ledger %s: the file is damaged (bbolt's check: %s): restore a backup instead", src, strings.Join(corrupt, "; "))
	}

	cp, err := NewCopy(dest, replace)
	if err != nil {
		return nil, err
	}
	defer cp.Abort()
	if err := cp.f.Close(); err != nil {
		return nil, fmt.Errorf("compact ledger %s: %w", src, err)
	}
	cp.f = nil
	if err := compactInto(cp.tmp, bsrc, srcKeys); err != nil {
		return nil, fmt.Errorf("compact ledger %s: %w", src, err)
	}
	if err := os.Chmod(cp.tmp, fi.Mode().Perm()); err != nil {
		return nil, fmt.Errorf("compact ledger %s: %w", src, err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		// Only root may give a file away; anyone else's copy is theirs.
		if err := os.Chown(cp.tmp, int(st.Uid), int(st.Gid)); err != nil && !errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("compact ledger %s: %w", src, err)
		}
	}
	if err := bsrc.Close(); err != nil {
		return nil, fmt.Errorf("compact ledger %s: %w", src, err)
	}
	rep, err := cp.Commit()
	if err != nil {
		return nil, err
	}
	return &CompactResult{Before: fi.Size(), After: rep.Size, Report: rep}, nil
}

// compactInto writes the compacted copy of src into the file at path,
// syncs it, and checks that every bucket holds as many keys as in src.
func compactInto(path string, src *bolt.DB, want map[string]int) error {
	// The file is synced once at the end, not at every commit: it is not
	// used before then.
	dst, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: offlineLockTimeout, NoSync: true,
		FreelistType: bolt.FreelistMapType})
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer dst.Close()
	if err := bolt.Compact(dst, src, compactTxSize); err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	var got map[string]int
	if err := dst.View(func(btx *bolt.Tx) error { got = keyCounts(btx); return nil }); err != nil {
		return err
	}
	if !maps.Equal(got, want) {
		return fmt.Errorf("the copy holds %v keys per bucket, the ledger %v", got, want)
	}
	if err := dst.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return dst.Close()
}

// keyCounts returns the number of keys in each top-level bucket.
func keyCounts(btx *bolt.Tx) map[string]int {
	n := map[string]int{}
	_ = btx.ForEach(func(name []byte, b *bolt.Bucket) error {
		n[string(name)] = b.Stats().KeyN
		return nil
	})
	return n
}
