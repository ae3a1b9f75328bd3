"""The client's own logic, without a daemon: durations, the socket path,
failures to reach the daemon, and the session's heartbeat thread against a
stub client."""

import datetime
import http.server
import os
import socket
import socketserver
import tempfile
import threading
import time
import unittest
from unittest import mock
from typing import Any, Dict, List

from _harness import eventually  # also puts the package on sys.path

import reaperd
from reaperd.durations import to_json, to_seconds


class Durations(unittest.TestCase):
    def test_to_seconds(self) -> None:
        cases = {"90s": 90, "30m": 1800, "1h30m": 5400, "2h": 7200, "7d": 604800, "1.5d": 129600,
                 "250ms": 0.25, "1m30.5s": 90.5, "0": 0, " 2m ": 120}
        for s, want in cases.items():
            self.assertAlmostEqual(to_seconds(s), want, msg=s)
        self.assertEqual(to_seconds(datetime.timedelta(minutes=2)), 120)
        self.assertEqual(to_seconds(45), 45)
        for bad in ("", "5x", "m", "1h 30m", "-5m", "1d2h", "h1"):
            with self.assertRaises(ValueError, msg=bad):
                to_seconds(bad)
        with self.assertRaises(ValueError):
            to_seconds(-1)
        with self.assertRaises(TypeError):
            to_seconds(True)
        with self.assertRaises(TypeError):
            to_seconds([1])

    def test_to_json(self) -> None:
        self.assertEqual(to_json("2h"), "2h")
        self.assertEqual(to_json("5x"), "5x")  # the daemon says what is wrong
        self.assertEqual(to_json(datetime.timedelta(minutes=2)), 120)
        self.assertIsInstance(to_json(datetime.timedelta(minutes=2)), int)
        self.assertEqual(to_json(datetime.timedelta(milliseconds=1500)), 1.5)
        self.assertEqual(to_json(30), 30)
        self.assertEqual(to_json(2.5), 2.5)
        with self.assertRaises(TypeError):
            to_json(False)


class DefaultSocket(unittest.TestCase):
    def test_explicit_variable_wins(self) -> None:
        env = {"REAPERD_SOCKET": "/x/y.sock", "RUNTIME_DIRECTORY": "/run/reaperd"}
        self.assertEqual(reaperd.default_socket(env), "/x/y.sock")

    def test_runtime_directory(self) -> None:
        with tempfile.TemporaryDirectory() as d1, tempfile.TemporaryDirectory() as d2:
            want = os.path.join(d1, "reaperd.sock")
            open(want, "w").close()
            self.assertEqual(reaperd.default_socket({"RUNTIME_DIRECTORY": d1 + ":" + d2}), want)
        # Nothing exists: the daemon's default, so that the error names it.
        if not os.path.exists(reaperd.SYSTEM_SOCKET) and not os.path.exists("reaperd-data/reaperd.sock"):
            self.assertEqual(reaperd.default_socket({"RUNTIME_DIRECTORY": "/nonexistent/rt"}),
                             "/nonexistent/rt/reaperd.sock")

    @unittest.skipIf(os.path.exists(reaperd.SYSTEM_SOCKET), "a daemon's socket exists at " + reaperd.SYSTEM_SOCKET)
    def test_local_data_directory(self) -> None:
        cwd = os.getcwd()
        with tempfile.TemporaryDirectory() as d:
            os.mkdir(os.path.join(d, "reaperd-data"))
            open(os.path.join(d, "reaperd-data", "reaperd.sock"), "w").close()
            os.chdir(d)
            try:
                self.assertEqual(reaperd.default_socket({}), os.path.join("reaperd-data", "reaperd.sock"))
            finally:
                os.chdir(cwd)

    def test_client_uses_it(self) -> None:
        with mock.patch.dict(os.environ, {"REAPERD_SOCKET": "/tmp/elsewhere.sock"}):
            self.assertEqual(reaperd.Client().socket, "/tmp/elsewhere.sock")
        self.assertEqual(reaperd.Client(socket="/a.sock").socket, "/a.sock")


class _Handler(http.server.BaseHTTPRequestHandler):
    """Answers every request with the server's canned status and body."""

    def do_GET(self) -> None:
        status, ctype, body = self.server.answer  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self) -> str:
        return "unix"

    def log_message(self, *args: Any) -> None:
        pass


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class Failures(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="reaperd-py-")
        self.path = os.path.join(self.dir, "s.sock")

    def tearDown(self) -> None:
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)

    def serve(self, status: int, ctype: str, body: bytes) -> None:
        srv = _UnixHTTPServer(self.path, _Handler)
        srv.answer = (status, ctype, body)  # type: ignore[attr-defined]
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        self.addCleanup(srv.server_close)
        self.addCleanup(srv.shutdown)

    def test_no_socket(self) -> None:
        c = reaperd.Client(socket=self.path)
        with self.assertRaises(ConnectionError) as cm:
            c.status()
        e = cm.exception
        self.assertIsInstance(e, reaperd.ReaperdConnectionError)
        self.assertIsInstance(e, reaperd.ReaperdError)
        self.assertEqual((e.status, e.code, e.socket), (None, None, self.path))
        self.assertIn("no socket at " + self.path, str(e))
        self.assertIn("reaperd serve", str(e))

    def test_stale_socket(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(self.path)
        s.close()  # the file stays, nothing listens
        with self.assertRaises(reaperd.ReaperdConnectionError) as cm:
            reaperd.Client(socket=self.path).register("e2b", "x", ttl="1h")
        self.assertIn("nothing is listening on " + self.path, str(cm.exception))
        self.assertIn("reaperd serve", str(cm.exception))

    def test_no_answer(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(self.path)
        s.listen(1)  # accepted by the kernel, never answered
        self.addCleanup(s.close)
        start = time.monotonic()
        with self.assertRaises(TimeoutError) as cm:
            reaperd.Client(socket=self.path, timeout=0.3).status()
        self.assertIsInstance(cm.exception, reaperd.ReaperdTimeoutError)
        self.assertLess(time.monotonic() - start, 5)
        self.assertIn("did not answer", str(cm.exception))

    def test_error_body(self) -> None:
        self.serve(409, "application/json", b'{"error":{"code":"conflict","message":"session s ended"}}')
        with self.assertRaises(reaperd.ReaperdError) as cm:
            reaperd.Client(socket=self.path).status()
        e = cm.exception
        self.assertEqual((e.status, e.code, e.message), (409, "conflict", "session s ended"))
        self.assertNotIsInstance(e, ConnectionError)

    def test_answer_that_is_not_the_api(self) -> None:
        self.serve(502, "text/html", b"<html>bad gateway</html>")
        with self.assertRaises(reaperd.ReaperdError) as cm:
            reaperd.Client(socket=self.path).status()
        self.assertEqual((cm.exception.status, cm.exception.code), (502, None))
        self.assertIn("502", str(cm.exception))

    def test_success_that_is_not_json(self) -> None:
        self.serve(200, "text/plain", b"hello")
        with self.assertRaises(reaperd.ReaperdError) as cm:
            reaperd.Client(socket=self.path).status()
        self.assertIn("not JSON", str(cm.exception))


class StubClient:
    """Records the session calls; heartbeat and end_session fail as told."""

    def __init__(self) -> None:
        self.calls: List[Any] = []
        self.heartbeat_errors: List[Exception] = []
        self.end_error: Any = None
        self.lock = threading.Lock()

    def register(self, provider: str, id: str, **kw: Any) -> Dict[str, Any]:
        self.calls.append(("register", provider, id, kw))
        return {"key": provider + "/" + id}

    def heartbeat(self, session: str, lease: Any = None) -> Dict[str, Any]:
        with self.lock:
            self.calls.append(("heartbeat", session))
            if self.heartbeat_errors:
                raise self.heartbeat_errors.pop(0)
        return {"id": session}

    def end_session(self, session: str) -> Dict[str, Any]:
        self.calls.append(("end", session))
        if self.end_error:
            raise self.end_error
        return {"session": {"id": session}, "items": []}

    def count(self, name: str) -> int:
        with self.lock:
            return sum(1 for c in self.calls if c[0] == name)


class SessionLogic(unittest.TestCase):
    def test_arguments(self) -> None:
        c = reaperd.Client(socket="/nonexistent.sock")
        self.assertEqual(c.session(lease="2m").heartbeat_every, 40)
        self.assertEqual(c.session(lease=datetime.timedelta(seconds=90)).heartbeat_every, 30)
        self.assertEqual(c.session(id="run-42").id, "run-42")
        with self.assertRaises(ValueError):
            c.session(lease="500ms")
        with self.assertRaises(ValueError):
            c.session(lease="1m", heartbeat_every="1m")
        with self.assertRaises(ValueError):
            c.session(lease="5x")
        s = c.session()
        for k in ("session", "lease", "pid"):
            with self.assertRaises(TypeError):
                s.register("e2b", "x", **{k: "v"})

    def test_register_fills_in_the_session(self) -> None:
        stub = StubClient()
        with reaperd.Session(stub, id="run-1", lease="1m", pid=1234) as s:
            s.register("e2b", "abc", ttl="2h", labels={"a": "b"})
        self.assertEqual(stub.calls[0], ("register", "e2b", "abc", {
            "session": "run-1", "lease": "1m", "pid": 1234, "ttl": "2h", "labels": {"a": "b"}}))
        self.assertEqual(stub.calls[-1], ("end", "run-1"))

    def test_transient_heartbeat_failures_are_retried(self) -> None:
        stub = StubClient()
        stub.heartbeat_errors = [reaperd.ReaperdConnectionError("down", "/s"),
                                 reaperd.ReaperdError("ledger full", status=503, code="unavailable")]
        with self.assertLogs("reaperd", "WARNING") as logs:
            with reaperd.Session(stub, lease="3s", heartbeat_every=0.05) as s:
                s.register("e2b", "abc")
                eventually(lambda: s.heartbeats >= 2, 5, "two accepted heartbeats")
                self.assertIsNone(s.last_error)
                self.assertTrue(s.heartbeating)
        self.assertGreaterEqual(stub.count("heartbeat"), 4)
        self.assertEqual(len(logs.records), 2)
        self.assertIn("retrying", logs.output[0])
        self.assertIsNone(s.heartbeat_failed)

    def test_refused_heartbeat_stops_the_thread(self) -> None:
        stub = StubClient()
        stub.heartbeat_errors = [reaperd.ReaperdError("lapsed", status=409, code="conflict")]
        with self.assertLogs("reaperd", "ERROR"):
            with reaperd.Session(stub, lease="3s", heartbeat_every=0.05) as s:
                s.register("e2b", "abc")
                eventually(lambda: not s.heartbeating, 5, "the heartbeat thread to stop")
                time.sleep(0.2)
        self.assertEqual(stub.count("heartbeat"), 1)
        self.assertEqual(s.heartbeat_failed.code, "conflict")

    def test_thread_is_joined_before_the_end(self) -> None:
        stub = StubClient()
        with reaperd.Session(stub, lease="3s", heartbeat_every=0.01) as s:
            s.register("e2b", "abc")
            eventually(lambda: s.heartbeats >= 3, 5, "heartbeats")
        self.assertFalse(s.heartbeating)
        self.assertEqual(stub.calls[-1][0], "end")
        n = stub.count("heartbeat")
        time.sleep(0.1)
        self.assertEqual(stub.count("heartbeat"), n, "heartbeats after the session ended")
        self.assertEqual(s.end(), s.ended)  # once only
        self.assertEqual(stub.count("end"), 1)

    def test_exception_is_not_masked_by_a_failed_end(self) -> None:
        stub = StubClient()
        stub.end_error = reaperd.ReaperdConnectionError("reaperd is not running", "/s")
        with self.assertLogs("reaperd", "ERROR") as logs:
            with self.assertRaises(KeyError):
                with reaperd.Session(stub, lease="1m") as s:
                    s.register("e2b", "abc")
                    raise KeyError("agent failed")
        self.assertIs(s.end_error, stub.end_error)
        self.assertIn("could not end session", logs.output[0])
        self.assertFalse(s.heartbeating)

    def test_failed_end_raises_after_a_normal_exit(self) -> None:
        stub = StubClient()
        stub.end_error = reaperd.ReaperdConnectionError("reaperd is not running", "/s")
        with self.assertRaises(reaperd.ReaperdConnectionError):
            with reaperd.Session(stub, lease="1m") as s:
                s.register("e2b", "abc")
        self.assertIsNone(s.ended)
        stub.end_error = None
        self.assertIsNotNone(s.end())  # may be retried


if __name__ == "__main__":
    unittest.main()
