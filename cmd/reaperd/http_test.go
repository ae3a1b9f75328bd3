package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	tcpToken   = "ci-token-0123456789abcdef"
	tcpToken2  = "ci-token-fedcba9876543210"
	otherToken = "ops-token-0123456789abcdef"
)

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// remoteCLI runs a client subcommand against a daemon's TCP listener.
func remoteCLI(env map[string]string, args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	m := &Main{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return env[k] }}
	code := m.Run(context.Background(), args)
	return out.String(), errb.String(), code
}

// TestTCPListener: /metrics and /healthz answer without a token; the API
// needs one, and what a token registers belongs to it; the CLI reaches the
// daemon with REAPERD_URL and REAPERD_TOKEN; a reload replaces the tokens.
func TestTCPListener(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "api.token")
	if err := os.WriteFile(tokens, []byte("ci:"+tcpToken+"\nops:"+otherToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	cfg := filepath.Join(dir, "reaperd.toml")
	if err := os.WriteFile(cfg, []byte("[http]\nlisten = \""+addr+"\"\ntoken_file = \""+tokens+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d, fake := e2bDaemon(t, "--config", cfg)
	base := "http://" + addr
	get := func(path, token string) int {
		req, _ := http.NewRequest("GET", base+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for path, want := range map[string]int{"/metrics": 200, "/healthz": 200, "/v1/status": 401} {
		if got := get(path, ""); got != want {
			t.Errorf("GET %s without a token = %d, want %d", path, got, want)
		}
	}
	if got := get("/v1/status", "not-a-token-0123456789"); got != 401 {
		t.Errorf("GET /v1/status with a wrong token = %d, want 401", got)
	}
	if strings.Contains(d.log.String(), tcpToken) {
		t.Fatal("the log shows a token")
	}

	env := map[string]string{"REAPERD_URL": base, "REAPERD_TOKEN": tcpToken}
	id := fake.Create(nil, time.Now())
	if out, errOut, code := remoteCLI(env, "register", "e2b/"+id, "--ttl", "1h", "-o", "json"); code != 0 || !strings.Contains(out, `"owner_token": "ci"`) {
		t.Fatalf("register over TCP: exit %d %s %s, want it owned by token ci", code, out, errOut)
	}
	ops := map[string]string{"REAPERD_URL": base, "REAPERD_TOKEN": otherToken}
	if _, errOut, code := remoteCLI(ops, "tag", "e2b/"+id, "--keep"); code == 0 || !strings.Contains(errOut, `API token "ci"`) {
		t.Errorf("tag by another token: exit %d %q, want refused naming the owner", code, errOut)
	}
	// The socket's root may change it; the entry shows its token owner.
	if e := listJSON(t, d)["e2b/"+id]; e.OwnerToken != "ci" || e.Owner != nil {
		t.Errorf("entry owner = %v, %q; want the token ci alone", e.Owner, e.OwnerToken)
	}
	if _, errOut, code := remoteCLI(map[string]string{"REAPERD_URL": base}, "list"); code != 2 || !strings.Contains(errOut, "REAPERD_TOKEN") {
		t.Errorf("list by URL without a token: exit %d %q, want 2 naming REAPERD_TOKEN", code, errOut)
	}

	// A reload replaces the tokens.
	if err := os.WriteFile(tokens, []byte("ci:"+tcpToken2+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = d.cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, 10*time.Second, "the new token to be accepted", func() bool { return get("/v1/status", tcpToken2) == 200 })
	if got := get("/v1/status", tcpToken); got != 401 {
		t.Errorf("the old token after a reload = %d, want 401", got)
	}
}

// TestTCPListenerTLS serves HTTPS with a certificate the CLI trusts by
// --ca-file; a client that does not trust it fails.
func TestTCPListenerTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeSelfSigned(t, certFile, keyFile)
	tokens := filepath.Join(dir, "api.token")
	if err := os.WriteFile(tokens, []byte("ci:"+tcpToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	cfg := filepath.Join(dir, "reaperd.toml")
	if err := os.WriteFile(cfg, []byte("[http]\nlisten = \""+addr+"\"\ntoken_file = \""+tokens+"\"\ntls_cert_file = \""+certFile+"\"\ntls_key_file = \""+keyFile+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e2bDaemon(t, "--config", cfg)
	env := map[string]string{"REAPERD_URL": "https://" + addr, "REAPERD_TOKEN": tcpToken, "REAPERD_CA_FILE": certFile}
	if out, errOut, code := remoteCLI(env, "status"); code != 0 {
		t.Fatalf("status over TLS: exit %d %s %s", code, out, errOut)
	}
	delete(env, "REAPERD_CA_FILE")
	if _, errOut, code := remoteCLI(env, "status"); code == 0 || !strings.Contains(errOut, "certificate") {
		t.Fatalf("status over TLS without trusting the certificate: exit %d %q, want a certificate error", code, errOut)
	}
	// Plain HTTP to the TLS port gets nothing useful.
	resp, err := http.Get("http://" + addr + "/healthz")
	if err == nil && resp.StatusCode == 200 {
		t.Fatal("plain HTTP was served on the TLS listener")
	}
	if err == nil {
		resp.Body.Close()
	}
}

func writeSelfSigned(t *testing.T, certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "reaperd test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
}
