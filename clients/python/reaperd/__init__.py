"""Python client of reaperd, the daemon that closes leaked cloud sandboxes.

Standard library only. Talks HTTP/JSON to the daemon over its Unix socket::

    import reaperd

    client = reaperd.Client()                # REAPERD_SOCKET, else the CLI's defaults
    client.register("e2b", sandbox_id, ttl="2h")
    ...
    client.release("e2b", sandbox_id)        # closed it ourselves

    with client.session(lease="2m") as s:    # heartbeats in the background
        s.register("daytona", sandbox_id)
        ...                                  # on exit, the session ends: the daemon closes the rest

Errors are :class:`ReaperdError` (``status``, ``code``, ``message``); when
no daemon answers, :class:`ReaperdConnectionError`, also a
:class:`ConnectionError`.
"""

from .client import SYSTEM_SOCKET, Client, default_socket
from .durations import Duration, to_seconds
from .errors import ReaperdConnectionError, ReaperdError, ReaperdTimeoutError
from .session import Session

__version__ = "0.1.0"

__all__ = [
    "Client",
    "Session",
    "ReaperdError",
    "ReaperdConnectionError",
    "ReaperdTimeoutError",
    "Duration",
    "default_socket",
    "to_seconds",
    "SYSTEM_SOCKET",
]
