"""Runs a real reaperd daemon against the fake E2B API for the tests.

The binaries come from REAPERD_BIN and FAKEPROVIDER_BIN when set, else they
are built once per run with ``go build`` from the repository that holds this
directory.
"""

import atexit
import datetime
import json
import os
import socket as _socket_mod
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Callable, List, Optional, Set

CLIENT_DIR = Path(__file__).resolve().parents[1]
REPO = CLIENT_DIR.parents[1]
if str(CLIENT_DIR) not in sys.path:
    sys.path.insert(0, str(CLIENT_DIR))

import reaperd  # noqa: E402

#: The API key the fake accepts; a fake's key, not a secret.
FAKE_KEY = "fake-e2b-key-for-python-tests"

_built: Optional[tuple] = None


def binaries() -> tuple:
    """Return the paths of the reaperd and fakeprovider binaries."""
    global _built
    if _built is not None:
        return _built
    daemon, fake = os.environ.get("REAPERD_BIN"), os.environ.get("FAKEPROVIDER_BIN")
    if not (daemon and fake):
        go = shutil.which("go")
        if go is None:
            raise RuntimeError("go is not on PATH: install Go, or set REAPERD_BIN and FAKEPROVIDER_BIN")
        out = tempfile.mkdtemp(prefix="reaperd-py-bin-")
        atexit.register(shutil.rmtree, out, True)
        proc = subprocess.run([go, "build", "-o", out + os.sep, "./cmd/reaperd", "./internal/cmd/fakeprovider"],
                              cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            raise RuntimeError("go build failed:\n" + proc.stdout.decode(errors="replace"))
        daemon = daemon or os.path.join(out, "reaperd")
        fake = fake or os.path.join(out, "fakeprovider")
    _built = (daemon, fake)
    return _built


try:
    import ctypes

    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (ImportError, OSError, AttributeError):
    _prctl = None


def _die_with_parent() -> None:
    """In the child: be killed when the test process dies (Linux)."""
    if _prctl is not None:
        _prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


def eventually(pred: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> float:
    """Poll pred until it holds; return the seconds it took. Raise
    AssertionError naming what was awaited when timeout passes."""
    start = time.monotonic()
    while True:
        if pred():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def parse_time(s: str) -> datetime.datetime:
    """Parse an RFC 3339 time as Go writes it (nanoseconds, Z)."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", s)
    if not m:
        raise ValueError("not an RFC 3339 time: %r" % s)
    frac = (m.group(2) or "0")[:6].ljust(6, "0")
    tz = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.datetime.fromisoformat("%s.%s%s" % (m.group(1), frac, tz))


class Fake:
    """The fakeprovider process: a fake E2B API and its control routes."""

    def __init__(self, binary: str, workdir: str) -> None:
        self.log_path = os.path.join(workdir, "fake.log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([binary, "-key", FAKE_KEY], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, preexec_fn=_die_with_parent)
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout=20):
            self.stop()
            raise RuntimeError("fakeprovider printed no URL within 20s")
        line = self.proc.stdout.readline().decode().strip()
        if not line.startswith("http://"):
            self.stop()
            raise RuntimeError("fakeprovider printed %r, not a URL; log:\n%s" % (line, self.log()))
        self.url = line

    def _get(self, path: str, body: Optional[dict] = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method="GET" if data is None else "POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def create(self, labels: Optional[dict] = None) -> str:
        """Create a running sandbox at the fake; return its id."""
        return self._get("/_fake/sandboxes", {"labels": labels or {}})["id"]

    def alive(self) -> Set[str]:
        """The ids of the sandboxes that exist at the fake."""
        return {sb["id"] for sb in self._get("/_fake/sandboxes")["sandboxes"]}

    def deleted(self) -> List[str]:
        """The ids whose DELETE the fake accepted, in order."""
        return self._get("/_fake/deleted")["deleted"]

    def log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self) -> Optional[int]:
        if self.proc.poll() is None:
            self.proc.stdin.close()  # the fake stops when its stdin closes
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self._log.close()
        return self.proc.returncode


# Variables the daemon must not inherit from the test's environment.
_SCRUB = ("DAYTONA_", "E2B_", "MODAL_", "RUNLOOP_", "REAPERD_")
_SCRUB_EXACT = ("STATE_DIRECTORY", "RUNTIME_DIRECTORY", "CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET", "WATCHDOG_USEC",
                "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")

CONFIG = """\
schedule = "@every 2s"
discover = false

[engine]
shutdown_grace = "2s"
min_backoff = "1s"
process_check = "200ms"
"""


class Daemon:
    """A `reaperd serve` process on a fresh ledger and socket, with the e2b
    provider pointed at the fake."""

    def __init__(self, binary: str, workdir: str, fake_url: str) -> None:
        self.socket = os.path.join(workdir, "s.sock")
        self.ledger = os.path.join(workdir, "ledger.db")
        self.config = os.path.join(workdir, "reaperd.toml")
        # A TCP listener too, on a free loopback port, with one token.
        probe = _socket_mod.socket(_socket_mod.AF_INET, _socket_mod.SOCK_STREAM)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        self.url = "http://127.0.0.1:%d" % port
        self.token = "py-test-token-0123456789abcdef"
        token_file = os.path.join(workdir, "api.token")
        with open(token_file, "w") as f:
            f.write("py:%s\n" % self.token)
        os.chmod(token_file, 0o600)
        with open(self.config, "w") as f:
            f.write(CONFIG)
            f.write('\n[http]\nlisten = "127.0.0.1:%d"\ntoken_file = "%s"\n' % (port, token_file))
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(_SCRUB) and k not in _SCRUB_EXACT}
        env.update({"E2B_API_URL": fake_url, "E2B_API_KEY": FAKE_KEY})
        self.log_path = os.path.join(workdir, "daemon.log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [binary, "serve", "--ledger", self.ledger, "--socket", self.socket, "--config", self.config],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=workdir,
            preexec_fn=_die_with_parent)
        self.client = reaperd.Client(socket=self.socket, timeout=10)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.client.status()
                return
            except reaperd.ReaperdError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError("reaperd exited at start (%s):\n%s" % (self.proc.returncode, self.log()))
            if time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError("reaperd did not answer on %s within 20s:\n%s" % (self.socket, self.log()))
            time.sleep(0.02)

    def log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self) -> int:
        """SIGTERM the daemon and return its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode
