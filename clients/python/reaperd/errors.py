"""Exceptions raised by the reaperd client."""

from typing import Optional

__all__ = [
    "ReaperdError",
    "ReaperdConnectionError",
    "ReaperdTimeoutError",
]


class ReaperdError(Exception):
    """An error answered by the daemon, or a failure to reach it.

    Attributes:
        status: the HTTP status of the answer (``400``, ``404``, ``409``, ...),
            or ``None`` when no answer came (see the subclasses).
        code: the API's stable error code: ``invalid``, ``unknown_provider``,
            ``forbidden``, ``not_found``, ``method_not_allowed``, ``conflict``,
            ``too_large``, ``provider_disabled``, ``unavailable`` or
            ``internal``; ``None`` when the answer carried no code.
        message: what went wrong and what to do, as the daemon says it.
    """

    def __init__(self, message: str, status: Optional[int] = None, code: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code

    def __str__(self) -> str:
        if self.code:
            return "reaperd: %s (%s, HTTP %s)" % (self.message, self.code, self.status)
        return self.message


class ReaperdConnectionError(ReaperdError, ConnectionError):
    """No daemon answers on the socket: it is missing, nothing listens on it,
    or the caller may not open it. ``status`` and ``code`` are ``None``;
    ``socket`` is the path that was tried."""

    def __init__(self, message: str, socket: str) -> None:
        super().__init__(message)
        self.socket = socket


class ReaperdTimeoutError(ReaperdError, TimeoutError):
    """The daemon did not answer within the client's timeout. ``status`` and
    ``code`` are ``None``; ``socket`` is the daemon's socket."""

    def __init__(self, message: str, socket: str) -> None:
        super().__init__(message)
        self.socket = socket
