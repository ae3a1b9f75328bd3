"""The reaperd client: HTTP/1.1 over the daemon's Unix socket."""

import errno
import http.client
import json
import os
import socket as _socket
import ssl
import urllib.parse
from typing import Any, Dict, Iterable, List, Mapping, Optional, Union
from urllib.parse import quote, urlencode

from .durations import Duration, to_json
from .errors import ReaperdConnectionError, ReaperdError, ReaperdTimeoutError
from .session import Session

__all__ = ["Client", "default_socket", "SYSTEM_SOCKET"]

#: The daemon's socket when it runs as root outside systemd.
SYSTEM_SOCKET = "/run/reaperd/reaperd.sock"
_LOCAL_SOCKET = os.path.join("reaperd-data", "reaperd.sock")
_SOCKET_NAME = "reaperd.sock"


def default_socket(environ: Optional[Mapping[str, str]] = None) -> str:
    """Return the socket the ``reaperd`` CLI would use.

    ``$REAPERD_SOCKET`` when set; otherwise the first of these that exists
    (a path that cannot be examined, for lack of permission, counts as
    existing, so that the error says "permission denied"):

    1. ``$RUNTIME_DIRECTORY/reaperd.sock`` (the first directory, when systemd
       gives several), else ``/run/reaperd/reaperd.sock`` as root, else
       ``./reaperd-data/reaperd.sock``: where the daemon puts it by default;
    2. ``/run/reaperd/reaperd.sock``;
    3. ``./reaperd-data/reaperd.sock``.

    When none exists, the first.
    """
    env = os.environ if environ is None else environ
    explicit = env.get("REAPERD_SOCKET", "")
    if explicit:
        return explicit
    runtime_dir = env.get("RUNTIME_DIRECTORY", "")
    if runtime_dir:
        first = os.path.join(runtime_dir.split(":", 1)[0], _SOCKET_NAME)
    elif hasattr(os, "geteuid") and os.geteuid() == 0:
        first = SYSTEM_SOCKET
    else:
        first = _LOCAL_SOCKET
    for candidate in (first, SYSTEM_SOCKET, _LOCAL_SOCKET):
        try:
            os.stat(candidate)
            return candidate
        except FileNotFoundError:
            continue
        except OSError:
            return candidate
    return first


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: Optional[float]) -> None:
        super().__init__("reaperd", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.unix_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _path_segment(value: str) -> str:
    return quote(value, safe="")


def _labels(labels: Optional[Mapping[str, str]]) -> Optional[Dict[str, str]]:
    if labels is None:
        return None
    if not isinstance(labels, Mapping):
        raise TypeError("labels: expected a mapping of str to str, not %s" % type(labels).__name__)
    return dict(labels)


class Client:
    """A client of the reaperd daemon's HTTP/JSON API on its Unix socket.

    ``socket`` is the daemon's socket path; ``None`` finds it as the CLI does
    (see :func:`default_socket`). ``timeout`` bounds connecting and each
    answer, in seconds.

    Every method returns the API's JSON answer, parsed: entries and sessions
    are dicts with the fields of the README's API section (``key``,
    ``provider``, ``id``, ``session``, ``state``, ``expires_at``, ...).
    Failures raise :class:`~reaperd.ReaperdError`, with the API's ``status``,
    ``code`` and ``message``; :class:`~reaperd.ReaperdConnectionError` (also a
    :class:`ConnectionError`) when no daemon answers on the socket.

    A client holds no connection between calls, and may be shared by
    threads.
    """

    def __init__(self, socket: Optional[str] = None, timeout: float = 10.0,
                 url: Optional[str] = None, token: Optional[str] = None,
                 cafile: Optional[str] = None) -> None:
        """``url`` reaches the daemon's TCP listener instead of its socket
        (``https://host:port``; default ``$REAPERD_URL`` when no ``socket``
        is given), with the API ``token`` (default ``$REAPERD_TOKEN``) and,
        for a private CA, ``cafile`` (default ``$REAPERD_CA_FILE``)."""
        if url is None and socket is None:
            url = os.environ.get("REAPERD_URL") or None
        self.timeout = timeout
        self.url = None
        self.token = None
        self._ssl = None
        if url:
            parts = urllib.parse.urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
                raise ValueError("url %r: use https://host:port (or http:// on loopback)" % url)
            self.url = "%s://%s" % (parts.scheme, parts.netloc)
            self.token = token if token is not None else os.environ.get("REAPERD_TOKEN")
            if not self.token:
                raise ValueError("no API token for %s: pass token= or set REAPERD_TOKEN" % self.url)
            if parts.scheme == "https":
                self._ssl = ssl.create_default_context(cafile=cafile or os.environ.get("REAPERD_CA_FILE") or None)
            self.socket = None
        else:
            self.socket = socket if socket else default_socket()

    def __repr__(self) -> str:
        if self.url:
            return "Client(url=%r, timeout=%r)" % (self.url, self.timeout)
        return "Client(socket=%r, timeout=%r)" % (self.socket, self.timeout)

    @property
    def _where(self) -> str:
        return self.url or self.socket or ""

    def _connection(self) -> http.client.HTTPConnection:
        if not self.url:
            return _UnixHTTPConnection(self.socket, self.timeout)
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme == "https":
            return http.client.HTTPSConnection(parts.netloc, timeout=self.timeout, context=self._ssl)
        return http.client.HTTPConnection(parts.netloc, timeout=self.timeout)

    # -- sandboxes ---------------------------------------------------------

    def register(
        self,
        provider: str,
        id: str,
        session: Optional[str] = None,
        ttl: Optional[Duration] = None,
        lease: Optional[Duration] = None,
        labels: Optional[Mapping[str, str]] = None,
        keep: bool = False,
        attached: bool = False,
        pid: Optional[int] = None,
        resources: Optional[Mapping[str, Any]] = None,
    ) -> Dict[str, Any]:
        """Register a sandbox and return its entry.

        Args:
            provider: ``daytona``, ``e2b``, ``modal`` or ``runloop``.
            id: the provider's sandbox id.
            session: ties the entry to a session: it is closed when the
                session ends, its lease lapses or its process exits. The
                session is created by its first registration.
            ttl: the entry is closed this long after registration:
                ``"30m"``, ``"2h"``, ``"7d"``, a number of seconds or a
                :class:`datetime.timedelta`. A registration needs a ``ttl``
                or a ``session`` unless the daemon has a ``default_ttl``.
            lease: with ``session``, how long the session may go without a
                heartbeat (at least one second).
            labels: ``{"key": "value"}`` labels kept with the entry.
            keep: never close this sandbox.
            attached: the session did not create this sandbox: never close
                it; it is released when its session ends.
            pid: with ``session``, the session's process on the daemon's
                host: when it exits, the session ends.
            resources: the sandbox's size, for cost reports:
                ``{"vcpu": 2, "memory_gib": 4, "disk_gib": 10, "gpu": "A100",
                "gpu_count": 1}`` (any subset).

        Registering again an active entry for the same session returns the
        existing entry, so a registration may be retried.
        """
        body: Dict[str, Any] = {"provider": provider, "id": id}
        if session is not None:
            body["session"] = session
        if ttl is not None:
            body["ttl"] = to_json(ttl, "ttl")
        if lease is not None:
            body["lease"] = to_json(lease, "lease")
        if labels is not None:
            body["labels"] = _labels(labels)
        if keep:
            body["keep"] = True
        if attached:
            body["attached"] = True
        if pid is not None:
            if isinstance(pid, bool) or not isinstance(pid, int):
                raise TypeError("pid: expected an int, not %s" % type(pid).__name__)
            body["pid"] = pid
        if resources is not None:
            body["resources"] = dict(resources)
        return self._call("POST", "/v1/sandboxes", body)

    def release(self, provider: str, id: str) -> Dict[str, Any]:
        """Stop tracking a sandbox without closing it (the session closed it
        itself, or hands it on) and return its entry, now ``released``."""
        return self._call("POST", self._entry_path(provider, id) + "/release")

    def tag(
        self,
        provider: str,
        id: str,
        keep: Optional[bool] = None,
        attached: Optional[bool] = None,
        ttl: Optional[Duration] = None,
        labels: Optional[Mapping[str, str]] = None,
    ) -> Dict[str, Any]:
        """Change an active entry's tags, expiry or labels and return it.

        Arguments left ``None`` are left alone. ``ttl`` makes the entry expire
        that long from now. ``labels`` are merged into the entry's; an empty
        value deletes that label.
        """
        body: Dict[str, Any] = {}
        if keep is not None:
            body["keep"] = bool(keep)
        if attached is not None:
            body["attached"] = bool(attached)
        if ttl is not None:
            body["ttl"] = to_json(ttl, "ttl")
        if labels is not None:
            body["labels"] = _labels(labels)
        return self._call("PATCH", self._entry_path(provider, id), body)

    def get(self, provider: str, id: str) -> Dict[str, Any]:
        """Return one entry; a :class:`ReaperdError` with code ``not_found``
        when the daemon does not know it."""
        return self._call("GET", self._entry_path(provider, id))

    def list(
        self,
        state: Union[None, str, Iterable[str]] = None,
        session: Optional[str] = None,
        provider: Optional[str] = None,
        limit: Optional[int] = None,
    ) -> List[Dict[str, Any]]:
        """Return the entries matching every filter given, in key order.

        ``state`` is one of ``active``, ``closing``, ``closed``,
        ``released``, or several (a list, or a comma-separated string).
        Without it, entries in every state are returned.
        """
        query: List[Any] = []
        if state is not None:
            states = [state] if isinstance(state, str) else list(state)
            query.append(("state", ",".join(states)))
        if provider is not None:
            query.append(("provider", provider))
        if session is not None:
            query.append(("session", session))
        # The daemon answers in pages (1,000 entries by default), each with
        # the cursor of the next: follow them up to limit.
        if limit is not None and int(limit) <= 0:
            limit = None  # as the API's limit=0: no limit
        out: List[Dict[str, Any]] = []
        after = None
        while True:
            size = 1000 if limit is None else min(1000, int(limit) - len(out))
            page_query = query + [("limit", str(size))]
            if after:
                page_query.append(("after", after))
            page = self._call("GET", "/v1/sandboxes?" + urlencode(page_query))
            out.extend(page["sandboxes"])
            after = page.get("next")
            if not after or (limit is not None and len(out) >= int(limit)):
                return out

    # -- sessions ----------------------------------------------------------

    def heartbeat(self, session: str, lease: Optional[Duration] = None) -> Dict[str, Any]:
        """Renew a session's lease, optionally changing it, and return the
        session. A session is created by its first registration: a
        heartbeat for an unknown one is ``not_found``, and one whose lease
        has already lapsed is a ``conflict`` (start a new session id)."""
        body = None
        if lease is not None:
            body = {"lease": to_json(lease, "lease")}
        return self._call("POST", "/v1/sessions/%s/heartbeat" % _path_segment(session), body)

    def end_session(self, session: str) -> Dict[str, Any]:
        """End a session: its active entries are closed (unless ``keep``),
        attached ones released. Returns ``{"session": {...}, "items":
        [...]}``, one item per entry acted on. Ending an ended session is
        allowed."""
        return self._call("POST", "/v1/sessions/%s/end" % _path_segment(session))

    def get_session(self, session: str) -> Dict[str, Any]:
        """Return one session (``lease``, ``last_heartbeat``, ``ended_at``,
        ``end_reason``, ...)."""
        return self._call("GET", "/v1/sessions/%s" % _path_segment(session))

    def session(
        self,
        id: Optional[str] = None,
        lease: Duration = "2m",
        heartbeat_every: Optional[Duration] = None,
        pid: Optional[int] = None,
    ) -> Session:
        """Return a :class:`~reaperd.Session`, a context manager for one
        agent run: ``with client.session() as s: s.register("e2b", sid)``.

        ``id`` defaults to a new UUID. ``lease`` is the session's lease;
        ``heartbeat_every`` (default: a third of the lease) how often a
        background thread renews it. ``pid`` names the session's process
        (``os.getpid()``), when the daemon runs on the same host.
        """
        return Session(self, id=id, lease=lease, heartbeat_every=heartbeat_every, pid=pid)

    # -- daemon ------------------------------------------------------------

    def status(self) -> Dict[str, Any]:
        """Return the daemon's status: version, paths, schedule, enabled and
        disabled providers, and the engine's state."""
        return self._call("GET", "/v1/status")

    def report(
        self,
        since: Optional[str] = None,
        until: Optional[str] = None,
        provider: Optional[str] = None,
        group_by: Optional[str] = None,
    ) -> Dict[str, Any]:
        """Return a cost report from the daemon's audit log (as
        ``reaperd audit report -o json``).

        ``since`` and ``until`` are a duration before now (``"7d"``), a
        date (``"2026-11-23"``) or an RFC 3339 time; the defaults are the
        last 7 days to now. ``group_by`` is ``provider`` (the default),
        ``session``, ``owner``, ``reason``, ``day`` or ``label:KEY``.
        Costs are in US dollars, estimates from list prices: see
        ``report["groups"]``, ``report["total"]``, ``report["saved_rule"]``.
        """
        query = [(k, v) for k, v in (("since", since), ("until", until), ("provider", provider), ("group_by", group_by)) if v]
        path = "/v1/audit/report"
        if query:
            path += "?" + urlencode(query)
        return self._call("GET", path)

    # -- plumbing ----------------------------------------------------------

    @staticmethod
    def _entry_path(provider: str, id: str) -> str:
        return "/v1/sandboxes/%s/%s" % (_path_segment(provider), _path_segment(id))

    def _call(self, method: str, path: str, body: Optional[Dict[str, Any]] = None) -> Any:
        data = None
        headers = {"Accept": "application/json"}
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        conn = self._connection()
        try:
            try:
                conn.connect()
            except _socket.timeout as e:
                raise ReaperdTimeoutError(
                    "reaperd at %s did not accept a connection within %ss" % (self._where, self.timeout),
                    self._where) from e
            except OSError as e:
                raise self._not_running(e) from e
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
            except _socket.timeout as e:
                raise ReaperdTimeoutError(
                    "reaperd at %s did not answer %s %s within %ss" % (self._where, method, path, self.timeout),
                    self._where) from e
            except (OSError, http.client.HTTPException) as e:
                raise ReaperdConnectionError(
                    "reaperd at %s closed the connection during %s %s (%s): is it stopping?"
                    % (self._where, method, path, e), self._where) from e
        finally:
            conn.close()
        return self._decode(resp, raw)

    def _decode(self, resp: http.client.HTTPResponse, raw: bytes) -> Any:
        try:
            payload = json.loads(raw.decode("utf-8")) if raw.strip() else None
        except ValueError:
            payload = None
            if resp.status < 400:
                raise ReaperdError("reaperd answered %d %s with a body that is not JSON"
                                   % (resp.status, resp.reason), status=resp.status)
        if resp.status >= 400:
            err = payload.get("error") if isinstance(payload, dict) else None
            if isinstance(err, dict) and err.get("code"):
                raise ReaperdError(str(err.get("message", "")), status=resp.status, code=str(err["code"]))
            raise ReaperdError("reaperd answered %d %s" % (resp.status, resp.reason), status=resp.status)
        return payload

    def _not_running(self, e: OSError) -> ReaperdConnectionError:
        path = self._where
        if self.url:
            return ReaperdConnectionError(
                "cannot reach reaperd at %s: %s (is its [http] listen set, and the address reachable?)" % (path, e), path)
        if isinstance(e, PermissionError) or e.errno in (errno.EACCES, errno.EPERM):
            msg = ("cannot connect to reaperd at %s: permission denied (the socket is mode 0660: "
                   "add your user to its group, or use sudo)" % path)
        elif isinstance(e, ConnectionRefusedError) or e.errno == errno.ECONNREFUSED:
            msg = ("reaperd is not running: nothing is listening on %s (a stale socket?); "
                   "start it with `reaperd serve`" % path)
        elif isinstance(e, FileNotFoundError) or e.errno == errno.ENOENT:
            msg = ("reaperd is not running: no socket at %s; start it with `reaperd serve`, "
                   "or pass socket= or set REAPERD_SOCKET to its socket" % path)
        else:
            msg = "cannot connect to reaperd at %s: %s; is it running? start it with `reaperd serve`" % (path, e)
        return ReaperdConnectionError(msg, path)
