"""Durations as the reaperd API reads them.

The API accepts a duration as a string in Go syntax plus days (``"90s"``,
``"30m"``, ``"1h30m"``, ``"7d"``) or as a JSON number of seconds. This
module turns what Python callers have at hand (such strings, numbers of
seconds, :class:`datetime.timedelta`) into one of those, and parses strings
into seconds where the client itself needs the value (the heartbeat
interval of a session).
"""

import datetime
import re
from typing import Union

__all__ = ["Duration", "to_json", "to_seconds"]

#: What the client accepts wherever the API takes a duration.
Duration = Union[str, int, float, datetime.timedelta]

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,  # micro sign
    "\u03bcs": 1e-6,  # Greek mu
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_DAYS = re.compile(r"(\d+(?:\.\d*)?|\.\d+)d")


def _bad(value: object, what: str) -> ValueError:
    return ValueError('%s: invalid duration %r: use a value such as "30m", "2h" or "7d", '
                      "a number of seconds or a datetime.timedelta" % (what, value))


def to_seconds(value: Duration, what: str = "duration") -> float:
    """Return ``value`` in seconds.

    Strings are parsed as the daemon parses them: Go duration syntax
    (``"1h30m"``, ``"90s"``, ``"250ms"``) or a number of days (``"7d"``).
    Raises :class:`ValueError` for a malformed or negative value and
    :class:`TypeError` for a value of another type.
    """
    if isinstance(value, bool):
        raise TypeError("%s: expected a duration, not a bool" % what)
    if isinstance(value, datetime.timedelta):
        secs = value.total_seconds()
    elif isinstance(value, (int, float)):
        secs = float(value)
    elif isinstance(value, str):
        s = value.strip()
        m = _DAYS.fullmatch(s)
        if m:
            secs = float(m.group(1)) * 86400.0
        elif s == "0":
            secs = 0.0
        else:
            pos, secs = 0, 0.0
            for part in _PART.finditer(s):
                if part.start() != pos:
                    raise _bad(value, what)
                secs += float(part.group(1)) * _UNITS[part.group(2)]
                pos = part.end()
            if pos == 0 or pos != len(s):
                raise _bad(value, what)
    else:
        raise TypeError("%s: expected a duration (str, number of seconds or datetime.timedelta), not %s"
                        % (what, type(value).__name__))
    if secs != secs or secs < 0:  # NaN or negative
        raise ValueError("%s: invalid duration %r: must not be negative" % (what, value))
    return secs


def to_json(value: Duration, what: str = "duration") -> Union[str, int, float]:
    """Return ``value`` as the API's JSON takes it.

    A string is sent as it is, so that the daemon parses it and its errors
    name the field; a :class:`datetime.timedelta` becomes a number of
    seconds; numbers are sent as seconds. Raises :class:`TypeError` for
    other types and :class:`ValueError` for negative numbers.
    """
    if isinstance(value, str):
        return value
    secs = to_seconds(value, what)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if secs.is_integer():
        return int(secs)
    return secs
