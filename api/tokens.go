package api

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/reaperd/reaperd/reaper"
)

// MinTokenLen is the shortest API token accepted, in bytes.
const MinTokenLen = 16

// Tokens are the API tokens the TCP listener accepts, each with a name
// that owns what it registers (as a uid does on the socket).
type Tokens struct {
	names   []string
	digests [][sha256.Size]byte
}

// ParseTokens reads a token file: one token per line, "name:token" or a
// bare token (named "token-N" after its line number N). Blank lines and
// lines starting with "#" are skipped. Tokens must be at least MinTokenLen
// bytes without spaces; names are unique. Errors name the line, never the
// token.
func ParseTokens(r io.Reader) (*Tokens, error) {
	t := &Tokens{}
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, tok, ok := strings.Cut(line, ":")
		if !ok {
			name, tok = "token-"+strconv.Itoa(n), line
		}
		name, tok = strings.TrimSpace(name), strings.TrimSpace(tok)
		switch {
		case reaper.ValidateID("token name", name) != nil:
			return nil, fmt.Errorf("line %d: the token's name must be letters, digits, '.', '_' or '-'", n)
		case seen[name]:
			return nil, fmt.Errorf("line %d: token name %q is given twice", n, name)
		case len(tok) < MinTokenLen:
			return nil, fmt.Errorf("line %d: token %q is shorter than %d bytes: generate one with `openssl rand -hex 32`", n, name, MinTokenLen)
		case strings.ContainsAny(tok, " \t"):
			return nil, fmt.Errorf("line %d: token %q holds a space", n, name)
		}
		seen[name] = true
		t.names = append(t.names, name)
		t.digests = append(t.digests, sha256.Sum256([]byte(tok)))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read tokens: %w", err)
	}
	return t, nil
}

// LoadTokens reads a token file (see ParseTokens). It refuses a file that
// others than its owner and group may read.
func LoadTokens(path string) (*Tokens, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read token file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read token file: %w", err)
	}
	if fi.Mode().Perm()&0o004 != 0 {
		return nil, fmt.Errorf("token file %s is readable by everyone (mode %v): chmod o-r it", path, fi.Mode().Perm())
	}
	t, err := ParseTokens(f)
	if err != nil {
		return nil, fmt.Errorf("token file %s: %w", path, err)
	}
	return t, nil
}

// Len returns the number of tokens.
func (t *Tokens) Len() int {
	if t == nil {
		return 0
	}
	return len(t.names)
}

// Lookup returns the name of the token tok, comparing in constant time
// against every token (digests, so that lengths do not show).
func (t *Tokens) Lookup(tok string) (string, bool) {
	if t == nil {
		return "", false
	}
	d := sha256.Sum256([]byte(tok))
	found := -1
	for i := range t.digests {
		if subtle.ConstantTimeCompare(d[:], t.digests[i][:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return "", false
	}
	return t.names[found], true
}

// TCPHandler serves the API on the TCP listener. /metrics, /healthz and
// the page at / are open; every other route needs "Authorization: Bearer TOKEN" with a token
// tokens() holds, and the request then acts as that token. tokens may
// return nil (no token file: only the open routes are served).
func (s *Server) TCPHandler(tokens func() *Tokens) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/metrics" || r.URL.Path == "/healthz" || r.URL.Path == "/" {
			s.ServeHTTP(w, r)
			return
		}
		ts := tokens()
		if ts.Len() == 0 {
			writeError(w, reaper.Errorf(reaper.EUNAUTHORIZED, "this listener serves only /metrics, /healthz and the page at /: set [http] token_file for the API"))
			return
		}
		auth := r.Header.Get("Authorization")
		tok, ok := strings.CutPrefix(auth, "Bearer ")
		if !ok || strings.TrimSpace(tok) == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="reaperd"`)
			writeError(w, reaper.Errorf(reaper.EUNAUTHORIZED, "send an API token: Authorization: Bearer TOKEN (the CLI reads REAPERD_TOKEN or --token-file)"))
			return
		}
		name, ok := ts.Lookup(strings.TrimSpace(tok))
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="reaperd", error="invalid_token"`)
			writeError(w, reaper.Errorf(reaper.EUNAUTHORIZED, "the API token is not one this daemon accepts (see its [http] token_file)"))
			return
		}
		s.ServeHTTP(w, r.WithContext(reaper.WithCaller(r.Context(), reaper.Caller{Token: name})))
	})
}

// TokenStore holds the listener's tokens, which a reload replaces.
type TokenStore struct{ p atomic.Pointer[Tokens] }

// Get returns the current tokens (nil when none are set).
func (s *TokenStore) Get() *Tokens { return s.p.Load() }

// Set replaces the tokens.
func (s *TokenStore) Set(t *Tokens) { s.p.Store(t) }
