"""A session: one agent run, kept alive by a background heartbeat."""

import logging
import threading
import uuid
from typing import TYPE_CHECKING, Any, Dict, Optional

from .durations import Duration, to_seconds
from .errors import ReaperdError

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client

__all__ = ["Session"]

log = logging.getLogger("reaperd")

_RESERVED = ("session", "lease", "pid")


class Session:
    """One agent run, as a context manager. Create it with
    :meth:`Client.session`::

        with client.session(lease="2m") as s:
            s.register("e2b", sandbox_id, ttl="4h")
            ...  # the agent runs; a thread heartbeats every 40s

    The daemon creates a session with its first registration, so nothing is
    sent on entering the block: :meth:`register` registers sandboxes under
    this session, with its ``lease`` and ``pid``, and the first successful
    one starts a daemon thread that heartbeats every ``heartbeat_every``
    seconds. Leaving the block, normally or by an exception, stops and joins
    that thread, then ends the session: the daemon closes every sandbox of
    the session that was not released (:meth:`release`), tagged ``keep`` or
    ``attached`` (attached ones are released). A block that registered
    nothing ends nothing. An exception from the block is never masked: a
    failure to end the session then is logged (logger ``"reaperd"``) and
    kept in :attr:`end_error`.

    If the process dies without leaving the block, the heartbeats stop and
    the daemon closes the sandboxes once the lease lapses (or at once when
    ``pid`` was given and the daemon runs on this host).

    Attributes:
        id: the session id (a new UUID unless one was given).
        lease: the lease, as given.
        heartbeat_every: seconds between heartbeats.
        pid: the session's process, or ``None``.
        heartbeats: heartbeats the daemon accepted.
        last_error: the last heartbeat failure, ``None`` after a success.
        heartbeat_failed: the failure that stopped the heartbeats for good
            (the daemon refused them: the session ended or its lease lapsed,
            ``conflict``), or ``None``. Failures to reach the daemon are
            retried at the next interval.
        ended: what ending the session returned (see
            :meth:`Client.end_session`), ``None`` until then.
        end_error: the error that ending the session raised while an
            exception left the block, or ``None``.
    """

    def __init__(
        self,
        client: "Client",
        id: Optional[str] = None,
        lease: Duration = "2m",
        heartbeat_every: Optional[Duration] = None,
        pid: Optional[int] = None,
    ) -> None:
        lease_s = to_seconds(lease, "lease")
        if lease_s < 1:
            raise ValueError("lease: %r is too short: use at least 1s" % (lease,))
        if heartbeat_every is None:
            every = lease_s / 3
        else:
            every = to_seconds(heartbeat_every, "heartbeat_every")
            if every <= 0 or every >= lease_s:
                raise ValueError("heartbeat_every: %r must be more than 0 and shorter than the lease (%r)"
                                 % (heartbeat_every, lease))
        self.client = client
        self.id = id if id else str(uuid.uuid4())
        self.lease = lease
        self.heartbeat_every = every
        self.pid = pid
        self.heartbeats = 0
        self.last_error: Optional[BaseException] = None
        self.heartbeat_failed: Optional[ReaperdError] = None
        self.ended: Optional[Dict[str, Any]] = None
        self.end_error: Optional[BaseException] = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._registered = False

    def __repr__(self) -> str:
        return "Session(id=%r, lease=%r, registered=%r, ended=%r)" % (
            self.id, self.lease, self._registered, self.ended is not None)

    @property
    def heartbeating(self) -> bool:
        """Whether the heartbeat thread is running."""
        t = self._thread
        return t is not None and t.is_alive()

    def register(self, provider: str, id: str, **kw: Any) -> Dict[str, Any]:
        """Register a sandbox under this session and return its entry.

        Takes the keyword arguments of :meth:`Client.register` (``ttl``,
        ``labels``, ``keep``, ``attached``) except ``session``, ``lease`` and
        ``pid``, which are the session's. The first successful registration
        starts the heartbeats.
        """
        for k in _RESERVED:
            if k in kw:
                raise TypeError("Session.register() sets %r itself: give it to Client.session()" % k)
        ent = self.client.register(provider, id, session=self.id, lease=self.lease, pid=self.pid, **kw)
        with self._lock:
            self._registered = True
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="reaperd-heartbeat-%s" % self.id, daemon=True)
                self._thread.start()
        return ent

    def release(self, provider: str, id: str) -> Dict[str, Any]:
        """Release a sandbox (see :meth:`Client.release`): the session closed
        it itself, and ending the session leaves it alone."""
        return self.client.release(provider, id)

    def heartbeat(self) -> Dict[str, Any]:
        """Send one heartbeat now and return the session."""
        sess = self.client.heartbeat(self.id)
        with self._lock:
            self.heartbeats += 1
        return sess

    def end(self) -> Optional[Dict[str, Any]]:
        """Stop the heartbeats, then end the session (once) and return what
        :meth:`Client.end_session` returned; ``None`` when nothing was
        registered. Leaving the ``with`` block calls it."""
        self._stop.set()
        with self._lock:
            t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join()
        with self._lock:
            if not self._registered or self.ended is not None:
                return self.ended
        res = self.client.end_session(self.id)
        with self._lock:
            self.ended = res
        return res

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc_type is None:
            self.end()
            return False
        try:
            self.end()
        except Exception as e:  # the block's exception matters more
            self.end_error = e
            log.error("could not end session %s after %s: %s "
                      "(its sandboxes are closed when its lease lapses)", self.id, exc_type.__name__, e)
        return False

    def _run(self) -> None:
        while not self._stop.wait(self.heartbeat_every):
            try:
                self.client.heartbeat(self.id)
            except ReaperdError as e:
                self.last_error = e
                if e.status is not None and 400 <= e.status < 500:
                    self.heartbeat_failed = e
                    log.error("heartbeats of session %s stopped: %s", self.id, e)
                    return
                log.warning("heartbeat of session %s failed, retrying in %.3gs: %s",
                            self.id, self.heartbeat_every, e)
            except Exception as e:  # keep heartbeating whatever happens
                self.last_error = e
                log.warning("heartbeat of session %s failed, retrying in %.3gs: %r",
                            self.id, self.heartbeat_every, e)
            else:
                with self._lock:
                    self.heartbeats += 1
                self.last_error = None
