// Command scalefigures measures a real reaperd daemon at several ledger
// sizes and prints every scale figure: durable registrations per second
// (beside raw bbolt on the same disk), disk written per registration, the
// ledger's size, the daemon's memory, its start-up time warm and cold, and
// the time of the reads that grow with the ledger. It is a development tool
// and is not shipped.
//
// Run it from the repository's root:
//
//	go run ./internal/cmd/scalefigures [-sizes 10000,100000,1000000] [-dir DIR] [-clients 64] [-json]
//
// It builds the daemon once (go build -o WORKDIR/reaperd ./cmd/reaperd;
// -reaperd PATH uses a binary instead), then, for each size N:
//
//  1. times raw bbolt on a fresh file in the work directory: db.Batch (with
//     MaxBatchSize equal to -clients) from -clients goroutines, one Put of an
//     entry-sized value with a random key each, opened as the ledger is
//     (map freelist, written at each commit, fsync on), min(N, -baseline)
//     times;
//  2. starts `reaperd serve` on a fresh ledger and socket in the work
//     directory, with E2B enabled against an in-process fake
//     (providers/e2b/e2btest), discovery off, fsync on as in production,
//     and a NOTIFY_SOCKET of its own to learn when the daemon is ready;
//  3. registers N sandboxes through the API over the Unix socket from
//     -clients concurrent api.Clients, one session each, with a -ttl TTL
//     and lease, so that nothing falls due while it measures; it reads the
//     daemon's /proc/PID/io and the ledger's bbolt transaction id around
//     the build;
//  4. waits for the daemon's verification listing of the registrations to
//     be applied and for the daemon to go idle, then reads the ledger's size
//     and the daemon's memory;
//  5. stops the daemon with SIGTERM and starts it again, warm (the ledger
//     read into the page cache first) and cold (evicted first, with
//     posix_fadvise DONTNEED, and, as root, /proc/sys/vm/drop_caches),
//     timing each start to sd_notify READY=1 and to the first GET /healthz
//     answered 200;
//  6. on the restarted daemon, once its start-up listing is applied: its
//     memory, then the first page of GET /v1/sandboxes, every page through
//     the Go client, `reaperd list -o json` to /dev/null (with the CLI's
//     and the daemon's peak memory), GET /v1/sandboxes?state=closing
//     (indexed) against ?state=released (a full scan), and `reaperd sweep
//     --dry-run`.
//
// The fake lists none of the registered sandboxes, so the daemon marks
// every entry unverified a few seconds after its registration: the most
// writing case, as in api/bench_test.go (a key of another organisation).
//
// Other flags: -keep, -reaperd, -baseline, -ttl, -idle, -settle,
// -drop-caches (see -h).
//
// It prints a table per size as each finishes, then a summary (figure |
// one column per size); with -json, one JSON document instead. Progress
// goes to stderr. The work directory (a new directory under -dir, default
// $TMPDIR) is removed at the end unless -keep. Put -dir on the disk to
// measure: a tmpfs makes fsync free.
//
// The 1,000,000-entry size takes minutes: registrations run at a few
// thousand a second on a small machine (about 5 minutes on 2 cores), and
// the ledger is about 700 MiB.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/reaperd/reaperd/providers/e2b/e2btest"
	"golang.org/x/sys/unix"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			err = fmt.Errorf("interrupted (%w); the daemon was stopped", err)
		}
		fmt.Fprintf(os.Stderr, "scalefigures: %v\n", err)
		os.Exit(1)
	}
}

// config is the command line.
type config struct {
	sizes       []int
	dir         string
	clients     int
	json        bool
	keep        bool
	reaperd     string
	baselineMax int
	ttl         time.Duration
	idle        time.Duration
	settle      time.Duration
	dropCaches  bool
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("scalefigures", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sizes := fs.String("sizes", "10000,100000,1000000", "ledger sizes to measure, comma-separated (entries)")
	fs.StringVar(&c.dir, "dir", "", "directory to make the work directory in (default $TMPDIR); it must be on the disk to measure")
	fs.IntVar(&c.clients, "clients", 64, "concurrent API clients registering (and goroutines of the bbolt baseline)")
	fs.BoolVar(&c.json, "json", false, "print one JSON document instead of tables")
	fs.BoolVar(&c.keep, "keep", false, "keep the work directory (ledgers, daemon logs)")
	fs.StringVar(&c.reaperd, "reaperd", "", "reaperd binary to run (default: go build ./cmd/reaperd into the work directory)")
	fs.IntVar(&c.baselineMax, "baseline", 50000, "most puts of the raw bbolt baseline (it does min(N, this))")
	fs.DurationVar(&c.ttl, "ttl", 24*time.Hour, "TTL and session lease of the registrations: longer than the run, so nothing falls due")
	fs.DurationVar(&c.idle, "idle", 5*time.Second, "how long the daemon idles before its memory is read")
	fs.DurationVar(&c.settle, "settle", 10*time.Minute, "longest wait for the daemon's verification listing to be applied and for it to go idle")
	fs.BoolVar(&c.dropCaches, "drop-caches", os.Geteuid() == 0, "for the cold start, also drop the whole page cache (/proc/sys/vm/drop_caches; root only)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: go run ./internal/cmd/scalefigures [flags]\n\n"+
			"Builds ledgers of each size through a real reaperd's API and prints every scale figure.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, s := range strings.Split(*sizes, ",") {
		n, err := parseSize(s)
		if err != nil {
			return nil, fmt.Errorf("-sizes: %w", err)
		}
		c.sizes = append(c.sizes, n)
	}
	switch {
	case c.clients < 1:
		return nil, fmt.Errorf("-clients %d: use at least 1", c.clients)
	case c.baselineMax < 1:
		return nil, fmt.Errorf("-baseline %d: use at least 1", c.baselineMax)
	case c.ttl < time.Hour:
		return nil, fmt.Errorf("-ttl %s: use at least 1h, or entries fall due while they are measured", c.ttl)
	case c.idle < 0 || c.settle < 0:
		return nil, errors.New("-idle and -settle must not be negative")
	}
	return c, nil
}

// parseSize reads a number of entries: 10000, 10_000, 10k or 1M.
func parseSize(s string) (int, error) {
	v := strings.ReplaceAll(strings.TrimSpace(s), "_", "")
	mult := 1
	if rest, ok := strings.CutSuffix(v, "k"); ok {
		v, mult = rest, 1000
	} else if rest, ok := strings.CutSuffix(v, "M"); ok {
		v, mult = rest, 1_000_000
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("%q is not a whole number of entries (10000, 10k, 1M)", s)
	}
	return n * mult, nil
}

// progress prints what the program does on stderr.
type progress struct {
	w  io.Writer
	t0 time.Time
}

func (p *progress) printf(format string, args ...any) {
	fmt.Fprintf(p.w, "scalefigures %7.1fs: %s\n", time.Since(p.t0).Seconds(), fmt.Sprintf(format, args...))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	log := &progress{w: stderr, t0: time.Now()}
	if cfg.dir != "" {
		if err := os.MkdirAll(cfg.dir, 0o755); err != nil {
			return fmt.Errorf("-dir: %w", err)
		}
	}
	work, err := os.MkdirTemp(cfg.dir, "scalefigures-")
	if err != nil {
		return fmt.Errorf("make the work directory: %w", err)
	}
	defer func() {
		if cfg.keep {
			log.printf("kept the work directory %s", work)
			return
		}
		if rerr := os.RemoveAll(work); rerr != nil {
			err = errors.Join(err, fmt.Errorf("remove the work directory: %w", rerr))
		}
	}()
	machine := map[string]string{
		"directory":  work,
		"filesystem": filesystem(work),
		"cpus":       strconv.Itoa(runtime.NumCPU()),
		"go":         runtime.Version(),
		"clients":    strconv.Itoa(cfg.clients),
	}
	var uts unix.Utsname
	if unix.Uname(&uts) == nil {
		machine["kernel"] = unix.ByteSliceToString(uts.Release[:])
	}
	if machine["filesystem"] == "tmpfs" {
		log.printf("warning: %s is on tmpfs: fsync costs nothing there; use -dir on the disk to measure", work)
	}

	bin := cfg.reaperd
	if bin == "" {
		if bin, err = buildReaperd(ctx, work, log); err != nil {
			return err
		}
	} else if bin, err = filepath.Abs(bin); err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, bin, "version").Output(); err == nil {
		machine["reaperd"] = strings.Join(strings.Fields(string(out)), " ")
	} else {
		return fmt.Errorf("run %s version: %w", bin, err)
	}

	if !cfg.json {
		if err := writeHeader(stdout, machine); err != nil {
			return err
		}
	}
	var runs []*runResult
	for i, n := range cfg.sizes {
		dir := filepath.Join(work, fmt.Sprintf("%d-%s", i+1, sizeName(n)))
		r, err := measureSize(ctx, cfg, bin, dir, n, log)
		if err != nil {
			return fmt.Errorf("%s entries: %w", sizeName(n), err)
		}
		if !cfg.keep {
			// A million entries is a GiB: free the disk for the next size.
			if err := os.RemoveAll(dir); err != nil {
				return fmt.Errorf("remove %s: %w", dir, err)
			}
		}
		runs = append(runs, r)
		if !cfg.json {
			if err := writeRun(stdout, r); err != nil {
				return err
			}
		}
	}
	if cfg.json {
		return writeJSON(stdout, document{Machine: machine, Clients: cfg.clients, Figures: figures, Runs: runs})
	}
	return writeSummary(stdout, runs)
}

// buildReaperd builds ./cmd/reaperd of the module this is run in.
func buildReaperd(ctx context.Context, work string, log *progress) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("find the reaperd module (go env GOMOD: %v): run from the repository, or pass -reaperd", err)
	}
	root := filepath.Dir(gomod)
	bin := filepath.Join(work, "reaperd")
	log.printf("building %s from %s", bin, root)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/reaperd")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/reaperd in %s: %w\n%s", root, err, out)
	}
	return bin, nil
}

// measureSize measures one ledger size in dir.
func measureSize(ctx context.Context, cfg *config, bin, dir string, n int, log *progress) (_ *runResult, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	r := newRun(n)
	s := &sizeRun{cfg: cfg, bin: bin, dir: dir, n: n, log: log, r: r}

	// 1. The raw bbolt baseline, before the daemon runs.
	ops := min(n, cfg.baselineMax)
	log.printf("%s: raw bbolt baseline, %d puts", sizeName(n), ops)
	base, err := baseline(ctx, filepath.Join(dir, "baseline.db"), ops, cfg.clients)
	if err != nil {
		return nil, err
	}
	r.set("baseline_ops_per_s", base.perSecond)
	r.set("baseline_ops", float64(base.ops))
	r.Notes["baseline"] = fmt.Sprintf("%d puts of a %d-byte value", base.ops, base.valueSize)
	_ = os.Remove(filepath.Join(dir, "baseline.db"))

	// 2. The daemon, in front of the E2B fake.
	s.fake = e2btest.NewServer(fakeKey)
	defer s.fake.Close()
	if s.d, err = newDaemon(bin, dir, s.fake.URL); err != nil {
		return nil, err
	}
	defer func() {
		if cerr := s.d.close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	log.printf("%s: starting reaperd on a fresh ledger", sizeName(n))
	if _, _, err := s.d.start(ctx); err != nil {
		return nil, err
	}

	// 3-4. Build, settle, size and memory.
	if err := s.build(ctx); err != nil {
		return nil, err
	}
	r.set("reaperd_over_baseline", r.Figures["reg_per_s"]/base.perSecond)
	if err := s.afterBuild(ctx); err != nil {
		return nil, err
	}
	// 5. Start-up, warm and cold.
	if err := s.restarts(ctx); err != nil {
		return nil, err
	}
	// 6. The restarted daemon: memory and reads.
	if err := s.afterRestart(ctx); err != nil {
		return nil, err
	}
	if err := s.reads(ctx); err != nil {
		return nil, err
	}
	if _, err := s.d.stop(); err != nil {
		return nil, err
	}
	if missing := missingFigures(r); len(missing) > 0 {
		return nil, fmt.Errorf("figures not measured: %s", strings.Join(missing, ", "))
	}
	return r, nil
}

// missingFigures lists the figures a run lacks.
func missingFigures(r *runResult) []string {
	var out []string
	for _, f := range figures {
		if _, ok := r.Figures[f.Key]; !ok {
			out = append(out, f.Key)
		}
	}
	return out
}

// median returns the median of ds (the lower one of an even count).
func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

func ms(d time.Duration) float64      { return float64(d) / float64(time.Millisecond) }
func mib(b int64) float64             { return float64(b) / (1 << 20) }
func seconds(d time.Duration) float64 { return d.Seconds() }
