package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
)

// figureSpec describes one figure of a run.
type figureSpec struct {
	Key  string `json:"key"`
	Name string `json:"name"`
	Unit string `json:"unit"`
	How  string `json:"how"`
}

// section starts a group of figures in the tables.
type section struct {
	title string
	first string // key of its first figure
}

// figures are every figure a run reports, in the order of the tables.
var figures = []figureSpec{
	{"reg_per_s", "durable registrations/s, whole build", "reg/s", "N registrations over the API (Unix socket, api.Client) from -clients closed-loop clients, one session each, every call a new sandbox; fsync on"},
	{"reg_per_s_tail", "durable registrations/s, last 10k", "reg/s", "the same over the last 10,000 registrations of the build (all of them when N <= 10,000)"},
	{"reg_p50_ms", "registration latency p50", "ms", "client-side, call to answer"},
	{"reg_p99_ms", "registration latency p99", "ms", "client-side"},
	{"reg_max_ms", "registration latency max", "ms", "client-side: the longest stall of the build"},
	{"build_s", "build time", "s", "first registration sent to last answered"},
	{"written_per_reg_bytes", "disk written per registration", "B", "daemon's write_bytes (/proc/PID/io) across the build, less cancelled_write_bytes, / N"},
	{"written_mib", "disk written during the build", "MiB", "the same, in all"},
	{"commits", "ledger commits during the build", "tx", "difference of the ledger's bbolt txid (meta page) across the build; each commit is 2 fdatasyncs"},
	{"regs_per_commit", "registrations per commit", "reg/tx", "N / commits"},
	{"baseline_ops_per_s", "raw bbolt db.Batch, 64 goroutines", "op/s", "fresh file in the same directory, ledger's open options, MaxBatchSize = clients, one Put of an entry-sized value with a random key per op"},
	{"baseline_ops", "raw bbolt ops timed", "op", "min(N, -baseline)"},
	{"reaperd_over_baseline", "reaperd / raw bbolt", "x", "reg_per_s / baseline_ops_per_s"},
	{"ledger_mib", "ledger file size", "MiB", "stat size after the build"},
	{"ledger_bytes_per_entry", "ledger bytes per entry", "B", "file size / N"},
	{"rss_build_mib", "daemon RSS, idle after the build", "MiB", "VmRSS from /proc/PID/status, after the registrations' verification listing and -idle"},
	{"rss_anon_build_mib", "  of which anonymous", "MiB", "RssAnon (Go heap and stacks)"},
	{"rss_file_build_mib", "  of which file-backed", "MiB", "RssFile (binary and the ledger's mmap; reclaimable)"},
	{"heap_build_mib", "  Go heap in use", "MiB", "go_memstats_heap_inuse_bytes from GET /metrics (garbage not yet collected included)"},
	{"status_ms", "GET /v1/status", "ms", "once, after the build"},
	{"unverified", "entries unverified", "entries", "from /v1/status; the fake lists none of the sandboxes, so every entry ends unverified (N)"},
	{"stop_ms", "graceful stop", "ms", "SIGTERM to exit, after the build"},
	{"resident_warm_pct", "ledger in page cache, warm start", "%", "mincore(2) before the start, after reading the whole file"},
	{"ready_warm_ms", "start to READY=1, warm", "ms", "process start to sd_notify READY=1 on a NOTIFY_SOCKET of ours"},
	{"answer_warm_ms", "start to first /healthz 200, warm", "ms", "GET /healthz polled every 5 ms from the process start"},
	{"resident_cold_pct", "ledger in page cache, cold start", "%", "mincore(2) before the start, after the eviction (see notes)"},
	{"ready_cold_ms", "start to READY=1, cold", "ms", "as warm, the ledger evicted first"},
	{"answer_cold_ms", "start to first /healthz 200, cold", "ms", "as warm"},
	{"rss_restart_mib", "daemon RSS, idle after the restart", "MiB", "VmRSS after the cold start, its start-up listing and -idle"},
	{"rss_anon_restart_mib", "  of which anonymous", "MiB", "RssAnon"},
	{"rss_file_restart_mib", "  of which file-backed", "MiB", "RssFile"},
	{"heap_restart_mib", "  Go heap in use", "MiB", "go_memstats_heap_inuse_bytes"},
	{"first_page_ms", "GET /v1/sandboxes, first page", "ms", "1,000 entries (the default page), to the last byte; median of up to 5"},
	{"list_api_s", "all entries, API pages", "s", "api.Client.EntryPages with provider=e2b: every page of 1,000, decoded; checks N entries"},
	{"list_cli_s", "reaperd list -o json > /dev/null", "s", "the CLI process, start to exit"},
	{"list_cli_maxrss_mib", "  CLI peak RSS", "MiB", "ru_maxrss of the CLI process"},
	{"list_daemon_hwm_mib", "  daemon peak RSS growth", "MiB", "VmHWM after the list less VmRSS before (peak reset through /proc/PID/clear_refs)"},
	{"closing_ms", "GET /v1/sandboxes?state=closing", "ms", "through the closing index (no entry is closing); median of up to 5"},
	{"scan_ms", "GET /v1/sandboxes?state=released", "ms", "no index: every entry read to answer an empty page; the full-scan baseline; median of up to 5"},
	{"sweep_dry_run_ms", "reaperd sweep --dry-run", "ms", "the CLI process, start to exit; nothing is due"},
}

var sections = []section{
	{"build", "reg_per_s"},
	{"ledger and memory", "ledger_mib"},
	{"start-up", "stop_ms"},
	{"after the restart", "rss_restart_mib"},
	{"reads", "first_page_ms"},
}

// runResult is one size's figures.
type runResult struct {
	Entries int                `json:"entries"`
	Figures map[string]float64 `json:"figures"`
	Notes   map[string]string  `json:"notes"`
}

func newRun(n int) *runResult {
	return &runResult{Entries: n, Figures: map[string]float64{}, Notes: map[string]string{}}
}

func (r *runResult) set(key string, v float64) {
	if !knownFigure(key) {
		panic("unknown figure " + key)
	}
	r.Figures[key] = v
}

func knownFigure(key string) bool {
	for _, f := range figures {
		if f.Key == key {
			return true
		}
	}
	return false
}

// document is the -json output.
type document struct {
	Machine map[string]string `json:"machine"`
	Clients int               `json:"clients"`
	Figures []figureSpec      `json:"figures"`
	Runs    []*runResult      `json:"runs"`
}

func writeJSON(w io.Writer, doc document) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}

// sizeName is 10k, 100k, 1M, or the number.
func sizeName(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return strconv.Itoa(n/1_000_000) + "M"
	case n >= 1000 && n%1000 == 0:
		return strconv.Itoa(n/1000) + "k"
	}
	return strconv.Itoa(n)
}

// formatValue prints a figure with a precision that suits its size.
func formatValue(v float64, ok bool) string {
	switch {
	case !ok || math.IsNaN(v):
		return "-"
	case v == 0:
		return "0"
	case v == math.Trunc(v) && math.Abs(v) < 1000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case math.Abs(v) >= 1000:
		return thousands(int64(math.Round(v)))
	case math.Abs(v) >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case math.Abs(v) >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case math.Abs(v) >= 0.01:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'g', 2, 64)
}

func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// writeHeader says what was measured where.
func writeHeader(w io.Writer, machine map[string]string) error {
	_, err := fmt.Fprintf(w, "%s; %s CPUs, Linux %s, %s; work directory %s (%s); %s clients\n\n",
		machine["reaperd"], machine["cpus"], machine["kernel"], machine["go"], machine["directory"], machine["filesystem"], machine["clients"])
	return err
}

// writeRun prints one size's table: figure, value, unit, how.
func writeRun(w io.Writer, r *runResult) error {
	fmt.Fprintf(w, "reaperd with %s entries (%s entries)\n", sizeName(r.Entries), thousands(int64(r.Entries)))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FIGURE\tVALUE\tUNIT\tHOW")
	for _, f := range figures {
		for _, s := range sections {
			if s.first == f.Key {
				fmt.Fprintf(tw, "[%s]\t\t\t\n", s.title)
			}
		}
		v, ok := r.Figures[f.Key]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", f.Name, formatValue(v, ok), f.Unit, f.How)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	writeNotes(w, r.Notes)
	_, err := fmt.Fprintln(w)
	return err
}

func writeNotes(w io.Writer, notes map[string]string) {
	keys := make([]string, 0, len(notes))
	for k := range notes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  %s: %s\n", k, notes[k])
	}
}

// writeSummary prints figure | unit | one column per size.
func writeSummary(w io.Writer, runs []*runResult) error {
	fmt.Fprintln(w, "summary")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	head := []string{"FIGURE", "UNIT"}
	for _, r := range runs {
		head = append(head, sizeName(r.Entries))
	}
	// AlignRight right-aligns every column: pad the names by hand.
	width := 0
	for _, f := range figures {
		width = max(width, len(f.Name))
	}
	pad := func(s string) string { return s + strings.Repeat(" ", width-len(s)) }
	fmt.Fprintln(tw, pad(head[0])+"\t"+strings.Join(head[1:], "\t")+"\t")
	for _, f := range figures {
		for _, s := range sections {
			if s.first == f.Key {
				fmt.Fprintln(tw, pad("["+s.title+"]")+"\t\t"+strings.Repeat("\t", len(runs)))
			}
		}
		row := []string{pad(f.Name), f.Unit}
		for _, r := range runs {
			v, ok := r.Figures[f.Key]
			row = append(row, formatValue(v, ok))
		}
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	return tw.Flush()
}
