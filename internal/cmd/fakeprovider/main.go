// Command fakeprovider runs the in-process fake of the E2B API
// (providers/e2b/e2btest) on loopback, for tests that drive a real reaperd
// process from outside Go, such as the Python client's. It is a development
// tool and is not shipped.
//
// It prints the fake's base URL on stdout as one line, then serves until
// stdin is closed, or until SIGTERM or SIGINT. Point the daemon at it with
//
//	E2B_API_URL=<the URL> E2B_API_KEY=<-key> reaperd serve ...
//
// Under the same URL it serves a few control routes, which need no API key
// and are not part of E2B's API:
//
//	POST /_fake/sandboxes   create a running sandbox; optional body {"labels": {"k": "v"}};
//	                        answers 201 {"id": "..."}
//	GET  /_fake/sandboxes   the sandboxes alive at the fake: {"sandboxes": [{"id": "...", "state": "running"}]}
//	GET  /_fake/deleted     the ids whose DELETE /sandboxes/{id} the fake accepted (204), in order:
//	                        {"deleted": ["..."]}
//
// Every other request is passed to the E2B fake unchanged.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/reaperd/reaperd/providers/e2b/e2btest"
)

// defaultKey is the API key the fake accepts unless -key says otherwise. It
// is a fake's key, not a secret.
const defaultKey = "fake-e2b-key"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintf(os.Stderr, "fakeprovider: %v\n", err)
		os.Exit(1)
	}
}

// run starts the fake and serves until ctx is done or, with -stdin, stdin
// reaches its end.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fakeprovider", flag.ContinueOnError)
	fs.SetOutput(stderr)
	key := fs.String("key", defaultKey, "API key the fake accepts (X-API-Key)")
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	n := fs.Int("sandboxes", 0, "running sandboxes to create at start (their ids are printed on stderr)")
	watchStdin := fs.Bool("stdin", true, "stop when stdin is closed")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: fakeprovider [flags]\n\n"+
			"Runs a fake E2B API on loopback and prints its URL on stdout.\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("parse arguments: unexpected %q", fs.Args())
	}

	fake := e2btest.NewServer(*key)
	defer fake.Close()
	h, err := newHandler(fake)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	for i := 0; i < *n; i++ {
		fmt.Fprintf(stderr, "fakeprovider: created e2b/%s\n", fake.Create(nil, time.Now()))
	}
	if _, err := fmt.Fprintf(stdout, "http://%s\n", ln.Addr()); err != nil {
		_ = srv.Close()
		return fmt.Errorf("print URL: %w", err)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if *watchStdin {
		go func() {
			_, _ = io.Copy(io.Discard, stdin)
			cancel()
		}()
	}
	select {
	case <-ctx.Done():
	case err := <-served:
		return fmt.Errorf("serve HTTP: %w", err)
	}
	shutdownCtx, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shut down server: %w", err)
	}
	return nil
}

// newHandler serves the control routes and passes everything else to the
// fake.
func newHandler(fake *e2btest.Server) (http.Handler, error) {
	target, err := url.Parse(fake.URL)
	if err != nil {
		return nil, fmt.Errorf("parse fake URL: %w", err)
	}
	proxy := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(target) }}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /_fake/sandboxes", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Labels map[string]string `json:"labels"`
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		if len(bytes.TrimSpace(body)) > 0 {
			dec := json.NewDecoder(bytes.NewReader(body))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&req); err != nil {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
				return
			}
		}
		writeJSON(w, http.StatusCreated, map[string]string{"id": fake.Create(req.Labels, time.Now())})
	})
	mux.HandleFunc("GET /_fake/sandboxes", func(w http.ResponseWriter, r *http.Request) {
		type sandbox struct {
			ID    string `json:"id"`
			State string `json:"state"`
		}
		out := []sandbox{}
		for _, sb := range fake.Sandboxes() {
			out = append(out, sandbox{ID: sb.ID, State: sb.State})
		}
		writeJSON(w, http.StatusOK, map[string]any{"sandboxes": out})
	})
	mux.HandleFunc("GET /_fake/deleted", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"deleted": deleted(fake)})
	})
	mux.HandleFunc("/_fake/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such control route " + r.Method + " " + r.URL.Path})
	})
	mux.Handle("/", proxy)
	return mux, nil
}

// deleted returns the ids whose DELETE the fake answered 204, in order.
func deleted(fake *e2btest.Server) []string {
	out := []string{}
	for _, r := range fake.RequestLog() {
		if id, ok := strings.CutPrefix(r.Path, "/sandboxes/"); ok && r.Method == http.MethodDelete && r.Status == http.StatusNoContent {
			out = append(out, id)
		}
	}
	return out
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
