"""The client against a real reaperd process, with the e2b provider pointed
at the fake E2B API of internal/cmd/fakeprovider."""

import datetime
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import uuid
from unittest import mock

import _harness
from _harness import Daemon, Fake, binaries, eventually, parse_time

import reaperd

_workdir = None
_fake = None
_daemon = None


def setUpModule() -> None:
    global _workdir, _fake, _daemon
    daemon_bin, fake_bin = binaries()
    _workdir = tempfile.mkdtemp(prefix="reaperd-py-")
    _fake = Fake(fake_bin, _workdir)
    try:
        _daemon = Daemon(daemon_bin, _workdir, _fake.url)
    except BaseException:
        _fake.stop()
        raise


def tearDownModule() -> None:
    code = _daemon.stop() if _daemon else 0
    log = _daemon.log() if _daemon else ""
    if _fake:
        _fake.stop()
    shutil.rmtree(_workdir, ignore_errors=True)
    if code != 0:
        raise AssertionError("reaperd exited with %s on SIGTERM:\n%s" % (code, log))


def new_session_id() -> str:
    return "py-" + uuid.uuid4().hex[:12]


class DaemonTest(unittest.TestCase):
    def setUp(self) -> None:
        self.client = reaperd.Client(socket=_daemon.socket, timeout=10)
        self.fake = _fake

    def wait_for(self, pred, timeout: float, what: str) -> float:
        try:
            return eventually(pred, timeout, what)
        except AssertionError as e:
            tail = "\n".join(_daemon.log().splitlines()[-40:])
            raise AssertionError("%s\n--- daemon log (tail):\n%s" % (e, tail)) from None

    def wait_deleted(self, sid: str, timeout: float = 15) -> float:
        return self.wait_for(lambda: sid in self.fake.deleted(), timeout, "e2b/%s to be deleted at the fake" % sid)

    def assertApiError(self, cm, status: int, code: str) -> None:
        e = cm.exception
        self.assertIsInstance(e, reaperd.ReaperdError)
        self.assertEqual((e.status, e.code), (status, code), "message: %s" % e.message)
        self.assertTrue(e.message, "an API error carries a message")


class RegisterAndList(DaemonTest):
    def test_register_then_list_shows_the_entry(self) -> None:
        sid, sess = self.fake.create(), new_session_id()
        ent = self.client.register("e2b", sid, session=sess, ttl="1h", lease="5m", labels={"team": "research"})
        self.assertEqual(ent["key"], "e2b/" + sid)
        self.assertEqual((ent["provider"], ent["id"], ent["session"]), ("e2b", sid, sess))
        self.assertEqual(ent["state"], "active")
        self.assertEqual(ent["labels"], {"team": "research"})
        self.assertFalse(ent["keep"])
        ttl = parse_time(ent["expires_at"]) - parse_time(ent["registered_at"])
        self.assertAlmostEqual(ttl.total_seconds(), 3600, delta=1)

        self.assertEqual([e["key"] for e in self.client.list(session=sess)], ["e2b/" + sid])
        self.assertIn("e2b/" + sid, [e["key"] for e in self.client.list(state="active", provider="e2b")])
        self.assertNotIn("e2b/" + sid, [e["key"] for e in self.client.list(state=["closed", "released"])])
        self.assertEqual(self.client.get("e2b", sid)["registered_at"], ent["registered_at"])
        self.assertEqual(self.client.get_session(sess)["lease"], "5m0s")

        # Registering again for the same session returns the same entry.
        again = self.client.register("e2b", sid, session=sess, ttl="1h", lease="5m")
        self.assertEqual(again["registered_at"], ent["registered_at"])
        self.assertEqual(len(self.client.list(session=sess)), 1)

    def test_durations_as_timedelta_and_seconds(self) -> None:
        a = self.client.register("e2b", self.fake.create(), ttl=datetime.timedelta(hours=2))
        ttl = parse_time(a["expires_at"]) - parse_time(a["registered_at"])
        self.assertAlmostEqual(ttl.total_seconds(), 7200, delta=1)
        b = self.client.register("e2b", self.fake.create(), ttl=90.5)
        ttl = parse_time(b["expires_at"]) - parse_time(b["registered_at"])
        self.assertAlmostEqual(ttl.total_seconds(), 90.5, delta=0.01)

        sess = new_session_id()
        self.client.register("e2b", self.fake.create(), session=sess, lease=60)
        self.assertEqual(self.client.get_session(sess)["lease"], "1m0s")
        hb = self.client.heartbeat(sess, lease=datetime.timedelta(seconds=45))
        self.assertEqual(hb["lease"], "45s")
        self.assertEqual(self.client.heartbeat(sess)["lease"], "45s")

    def test_tag(self) -> None:
        sid = self.fake.create()
        self.client.register("e2b", sid, ttl="1h", labels={"team": "x", "run": "7"})
        ent = self.client.tag("e2b", sid, keep=True)
        self.assertTrue(ent["keep"])
        self.assertFalse(ent["attached"])
        ent = self.client.tag("e2b", sid, ttl="10m", labels={"run": ""})
        self.assertEqual(ent["labels"], {"team": "x"})
        left = parse_time(ent["expires_at"]) - datetime.datetime.now(datetime.timezone.utc)
        self.assertAlmostEqual(left.total_seconds(), 600, delta=5)
        self.assertTrue(self.client.get("e2b", sid)["keep"])
        with self.assertRaises(reaperd.ReaperdError) as cm:
            self.client.tag("e2b", sid)
        self.assertApiError(cm, 400, "invalid")

    def test_status(self) -> None:
        st = self.client.status()
        self.assertEqual(st["socket"], _daemon.socket)
        self.assertIn("e2b", st["enabled_providers"])
        self.assertIn("daytona", st.get("disabled_providers", {}))

    def test_socket_from_environment(self) -> None:
        with mock.patch.dict(os.environ, {"REAPERD_SOCKET": _daemon.socket}):
            c = reaperd.Client()
        self.assertEqual(c.socket, _daemon.socket)
        self.assertEqual(c.status()["socket"], _daemon.socket)


class Errors(DaemonTest):
    def test_unknown_provider(self) -> None:
        with self.assertRaises(reaperd.ReaperdError) as cm:
            self.client.register("nosuchcloud", "abc", ttl="1h")
        self.assertApiError(cm, 400, "unknown_provider")
        self.assertIn("e2b", cm.exception.message)  # names the providers it knows
        self.assertIn("unknown_provider", str(cm.exception))

    def test_disabled_provider(self) -> None:
        with self.assertRaises(reaperd.ReaperdError) as cm:
            self.client.register("daytona", "abc", ttl="1h")
        self.assertApiError(cm, 422, "provider_disabled")
        self.assertIn("DAYTONA_API_KEY", cm.exception.message)

    def test_bad_ids(self) -> None:
        with self.assertRaises(reaperd.ReaperdError) as cm:
            self.client.register("e2b", "not valid", ttl="1h")
        self.assertApiError(cm, 400, "invalid")
        self.assertIn("sandbox id", cm.exception.message)
        # A slash in an id reaches the daemon as part of the id, not as a
        # path separator: invalid, not an unknown route.
        with self.assertRaises(reaperd.ReaperdError) as cm:
            self.client.release("e2b", "a/b")
        self.assertApiError(cm, 400, "invalid")
        with self.assertRaises(reaperd.ReaperdError) as cm:
            self.client.register("e2b", "abc", session="bad session", ttl="1h")
        self.assertApiError(cm, 400, "invalid")

    def test_bad_duration_names_the_field(self) -> None:
        with self.assertRaises(reaperd.ReaperdError) as cm:
            self.client.register("e2b", "abc", ttl="5x")
        self.assertApiError(cm, 400, "invalid")
        self.assertTrue(cm.exception.message.startswith("ttl:"), cm.exception.message)

    def test_registration_that_nothing_would_close(self) -> None:
        with self.assertRaises(reaperd.ReaperdError) as cm:
            self.client.register("e2b", self.fake.create())
        self.assertApiError(cm, 400, "invalid")

    def test_unknown_session_and_entry(self) -> None:
        for call in (lambda: self.client.heartbeat(new_session_id()),
                     lambda: self.client.end_session(new_session_id()),
                     lambda: self.client.get("e2b", "nosuchsandbox"),
                     lambda: self.client.release("e2b", "nosuchsandbox")):
            with self.assertRaises(reaperd.ReaperdError) as cm:
                call()
            self.assertApiError(cm, 404, "not_found")

    def test_registered_to_another_session(self) -> None:
        sid = self.fake.create()
        self.client.register("e2b", sid, session=new_session_id())
        with self.assertRaises(reaperd.ReaperdError) as cm:
            self.client.register("e2b", sid, session=new_session_id())
        self.assertApiError(cm, 409, "conflict")


class Closing(DaemonTest):
    def test_expired_sandbox_is_closed_at_the_fake(self) -> None:
        sid = self.fake.create()
        self.client.register("e2b", sid, ttl=datetime.timedelta(seconds=1))
        self.wait_deleted(sid)
        self.wait_for(lambda: self.client.get("e2b", sid)["state"] == "closed", 5, "the entry to be closed")
        self.assertEqual(self.client.get("e2b", sid)["close_reason"], "expired")

    def test_process_exit_ends_the_session(self) -> None:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            sid = self.fake.create()
            with self.client.session(lease="1m", pid=child.pid) as s:
                s.register("e2b", sid)
                self.assertEqual(self.client.get_session(s.id)["pid"], child.pid)
                time.sleep(0.5)
                self.assertIn(sid, self.fake.alive(), "closed while its process runs")
                child.kill()
                child.wait()
                self.wait_deleted(sid)
            self.assertEqual(self.client.get("e2b", sid)["close_reason"], "orphaned-process")
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()

    def test_release_leaves_the_sandbox_alone(self) -> None:
        released, closed = self.fake.create(), self.fake.create()
        with self.client.session(lease="30s") as s:
            s.register("e2b", released)
            s.register("e2b", closed)
            ent = s.release("e2b", released)
            self.assertEqual(ent["state"], "released")
        # The session's other sandbox is closed: the daemon acted on the end.
        self.wait_deleted(closed)
        self.assertIn(released, self.fake.alive())
        self.assertNotIn(released, self.fake.deleted())
        self.assertEqual(self.client.get("e2b", released)["state"], "released")


class SessionContext(DaemonTest):
    def test_exception_ends_the_session_and_the_sandbox_is_closed(self) -> None:
        sid, kept = self.fake.create(), self.fake.create()
        with self.assertRaises(RuntimeError) as cm:
            with self.client.session(lease="30s") as s:
                s.register("e2b", sid, ttl="4h")
                s.register("e2b", kept, keep=True)
                self.assertTrue(s.heartbeating)
                raise RuntimeError("agent crashed")
        self.assertEqual(str(cm.exception), "agent crashed")
        self.assertFalse(s.heartbeating, "heartbeat thread still running after the block")
        self.assertIsNone(s.end_error)
        self.assertEqual(uuid.UUID(s.id).version, 4)
        items = {i["key"]: i for i in s.ended["items"]}
        self.assertEqual(items["e2b/" + sid]["action"], "close")
        sess = self.client.get_session(s.id)
        self.assertTrue(sess.get("ended_at"), sess)
        self.assertEqual(sess["end_reason"], "session-ended")

        self.wait_deleted(sid)
        self.wait_for(lambda: self.client.get("e2b", sid)["state"] == "closed", 5, "the entry to be closed")
        self.assertEqual(self.client.get("e2b", sid)["close_reason"], "session-ended")
        self.assertIn(kept, self.fake.alive(), "a keep sandbox was closed")
        self.assertEqual(self.client.get("e2b", kept)["state"], "active")

    def test_block_without_registration_ends_nothing(self) -> None:
        with self.client.session() as s:
            pass
        self.assertIsNone(s.ended)
        self.assertFalse(s.heartbeating)
        with self.assertRaises(reaperd.ReaperdError) as cm:
            self.client.get_session(s.id)
        self.assertApiError(cm, 404, "not_found")

    def test_heartbeats_keep_a_short_lease_alive(self) -> None:
        lease = 2.0
        live, control = self.fake.create(), self.fake.create()
        control_session = new_session_id()
        with self.client.session(lease="2s") as s:
            start = time.monotonic()
            s.register("e2b", live)
            # The same lease without heartbeats lapses, and its sandbox is closed.
            self.client.register("e2b", control, session=control_session, lease="2s")
            self.wait_deleted(control)
            self.assertEqual(self.client.get("e2b", control)["close_reason"], "orphaned-lease")
            with self.assertRaises(reaperd.ReaperdError) as cm:
                self.client.heartbeat(control_session)
            self.assertApiError(cm, 409, "conflict")

            time.sleep(max(0.0, start + 3 * lease + 0.5 - time.monotonic()))
            self.assertIn(live, self.fake.alive(), "sandbox closed although its session heartbeats")
            self.assertEqual(self.client.get("e2b", live)["state"], "active")
            self.assertFalse(self.client.get_session(s.id).get("ended_at"))
            self.assertGreaterEqual(s.heartbeats, 6)
            self.assertIsNone(s.heartbeat_failed)
        self.wait_deleted(live)

    def test_heartbeats_stop_when_the_daemon_refuses_them(self) -> None:
        sid = self.fake.create()
        with self.client.session(lease="5s", heartbeat_every=0.1) as s:
            s.register("e2b", sid)
            self.wait_for(lambda: s.heartbeats >= 2, 5, "two heartbeats")
            with self.assertLogs("reaperd", "ERROR"):
                self.client.end_session(s.id)  # ended elsewhere, e.g. by an operator
                self.wait_for(lambda: not s.heartbeating, 5, "the heartbeat thread to stop")
            self.assertIsNotNone(s.heartbeat_failed)
            self.assertEqual((s.heartbeat_failed.status, s.heartbeat_failed.code), (409, "conflict"))
        # Ending an ended session on exit is not an error.
        self.assertIsNotNone(s.ended)
        self.wait_deleted(sid)


class Runtime(DaemonTest):
    """The pattern of the README: a runtime registers in connect() and
    releases in close(), with a session outside any with block."""

    def test_connect_and_close(self) -> None:
        sid = self.fake.create()
        reaper = self.client.session(lease="2m")  # connect()
        reaper.register("e2b", sid, ttl="24h", labels={"openhands.sid": "conv-1"})
        self.assertTrue(reaper.heartbeating)
        try:  # close(): the runtime killed the sandbox itself
            self.client.release("e2b", sid)
        finally:
            reaper.end()
        self.assertFalse(reaper.heartbeating)
        self.assertTrue(self.client.get_session(reaper.id).get("ended_at"))
        self.assertEqual(self.client.get("e2b", sid)["state"], "released")
        self.assertEqual(reaper.ended["items"], [])

    def test_crash_before_close(self) -> None:
        sid = self.fake.create()
        code = (
            "import sys, time\n"
            "sys.path.insert(0, sys.argv[1])\n"
            "import reaperd\n"
            "s = reaperd.Client(socket=sys.argv[2]).session(id=sys.argv[3], lease='1s')\n"
            "s.register('e2b', sys.argv[4], ttl='24h')\n"
            "print('registered', flush=True)\n"
            "time.sleep(60)\n"
        )
        sess = new_session_id()
        child = subprocess.Popen([sys.executable, "-c", code, str(_harness.CLIENT_DIR), _daemon.socket, sess, sid],
                                 stdout=subprocess.PIPE)
        try:
            self.assertEqual(child.stdout.readline().strip(), b"registered")
            time.sleep(1.5)  # longer than the lease: the child's heartbeats keep it
            self.assertIn(sid, self.fake.alive(), "closed while the agent heartbeats")
            child.kill()
            child.wait()
            self.wait_deleted(sid)
            self.assertEqual(self.client.get_session(sess)["end_reason"], "orphaned-lease")
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            child.stdout.close()


if __name__ == "__main__":
    unittest.main()


class TcpTest(unittest.TestCase):
    """The same API over the daemon's TCP listener, with a token."""

    def test_register_over_tcp_is_owned_by_the_token(self):
        c = reaperd.Client(url=_daemon.url, token=_daemon.token, timeout=10)
        sid = _fake.create()
        ent = c.register("e2b", sid, ttl="1h")
        self.assertEqual(ent.get("owner_token"), "py")
        keys = [e["key"] for e in c.list(provider="e2b")]
        self.assertIn("e2b/" + sid, keys)

    def test_wrong_token_is_refused(self):
        c = reaperd.Client(url=_daemon.url, token="not-the-token-0123456789", timeout=10)
        with self.assertRaises(reaperd.ReaperdError) as cm:
            c.status()
        self.assertEqual(cm.exception.status, 401)
        self.assertEqual(cm.exception.code, "unauthorized")

    def test_url_needs_a_token(self):
        with self.assertRaises(ValueError):
            reaperd.Client(url=_daemon.url, token="")

    def test_environment_selects_tcp(self):
        old = {k: os.environ.get(k) for k in ("REAPERD_URL", "REAPERD_TOKEN")}
        os.environ["REAPERD_URL"], os.environ["REAPERD_TOKEN"] = _daemon.url, _daemon.token
        try:
            c = reaperd.Client(timeout=10)
            self.assertEqual(c.url, _daemon.url)
            self.assertIn("engine", c.status())
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


class ResourcesTest(unittest.TestCase):
    def test_resources_are_kept_and_checked(self):
        c = _daemon.client
        sid = _fake.create()
        ent = c.register("e2b", sid, ttl="1h", resources={"vcpu": 2, "memory_gib": 4, "gpu": "A100", "gpu_count": 1})
        self.assertEqual(ent["resources"], {"vcpu": 2, "memory_gib": 4, "gpu": "A100", "gpu_count": 1})
        with self.assertRaises(reaperd.ReaperdError) as cm:
            c.register("e2b", _fake.create(), ttl="1h", resources={"vcpu": -1})
        self.assertEqual(cm.exception.code, "invalid")


class ReportTest(unittest.TestCase):
    def test_report_prices_a_registered_sandbox(self):
        c = _daemon.client
        sid = _fake.create()
        c.register("e2b", sid, ttl="1h", resources={"vcpu": 2, "memory_gib": 1})
        rep = c.report(since="1h", group_by="provider")
        self.assertEqual(rep["currency"], "USD")
        groups = {g["key"]: g for g in rep["groups"]}
        self.assertIn("e2b", groups)
        self.assertGreaterEqual(groups["e2b"]["sandboxes"], 1)
        self.assertIn("e2b", rep["saved_rule"])
        with self.assertRaises(reaperd.ReaperdError) as cm:
            c.report(group_by="colour")
        self.assertEqual(cm.exception.code, "invalid")
        self.assertIn("label:KEY", str(cm.exception))


class ListPagesTest(unittest.TestCase):
    def test_list_follows_the_pages(self):
        c = _daemon.client
        session = "pages-%d" % os.getpid()
        ids = [_fake.create() for _ in range(1005)]
        for sid in ids:
            c.register("e2b", sid, session=session, ttl="1h")
        got = c.list(session=session)
        self.assertEqual(sorted(e["id"] for e in got), sorted(ids))
        self.assertEqual(len(c.list(session=session, limit=1002)), 1002)
        self.assertEqual(len(c.list(session=session, limit=3)), 3)
