package main

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/reaperd/reaperd/api"
)

// tcpListener is the optional TCP listener and what a reload replaces in
// it: the tokens and the certificate.
type tcpListener struct {
	tokens api.TokenStore
	cert   atomic.Pointer[tls.Certificate]
	srv    *http.Server
	done   chan error
	addr   string
}

// load reads the token file and the certificate of h.
func (l *tcpListener) load(h HTTPConfig) error {
	var tokens *api.Tokens
	if h.TokenFile != "" {
		t, err := api.LoadTokens(h.TokenFile)
		if err != nil {
			return fmt.Errorf("[http] token_file: %w", err)
		}
		tokens = t
	}
	var cert *tls.Certificate
	if h.TLSCertFile != "" {
		c, err := tls.LoadX509KeyPair(h.TLSCertFile, h.TLSKeyFile)
		if err != nil {
			return fmt.Errorf("[http] tls_cert_file, tls_key_file: %w", err)
		}
		cert = &c
	}
	l.tokens.Set(tokens)
	if cert != nil {
		// Turning TLS on or off needs a restart: a reload only rotates
		// the certificate.
		l.cert.Store(cert)
	}
	return nil
}

// startTCP starts the TCP listener of cfg, or returns nil when it has none.
func startTCP(h HTTPConfig, srv *api.Server, logger *slog.Logger) (*tcpListener, error) {
	if h.Listen == "" {
		return nil, nil
	}
	l := &tcpListener{done: make(chan error, 1)}
	if err := l.load(h); err != nil {
		return nil, usageError{err}
	}
	ln, err := net.Listen("tcp", h.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", h.Listen, err)
	}
	useTLS := h.TLSCertFile != ""
	if useTLS {
		ln = tls.NewListener(ln, &tls.Config{MinVersion: tls.VersionTLS12,
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return l.cert.Load(), nil }})
	}
	l.addr = ln.Addr().String()
	l.srv = &http.Server{
		Handler:           srv.TCPHandler(l.tokens.Get),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	go func() { l.done <- l.srv.Serve(ln) }()
	logger.Info("serving the API over TCP", "listen", l.addr, "tls", useTLS, "tokens", l.tokens.Get().Len())
	if l.tokens.Get().Len() == 0 {
		logger.Warn("the TCP listener has no [http] token_file: it serves /metrics and /healthz only")
	}
	return l, nil
}
