"""Proof that nothing leaves the box: a Python audit hook (PEP 578) that sees every attempt
to reach another machine — ``socket.connect``, ``socket.sendto``/``sendmsg``, and name
lookups (``socket.getaddrinfo``, ``gethostbyname``) of anything but a loopback name or a
numeric address — and keeps them.  Loopback and Unix sockets are the box talking to itself.

The appliance installs it first thing; the System page shows the count since start (0
expected) with the last attempts, and each attempt enters the audit trail.  The tests run
the whole flow with it, inside a network namespace with only loopback; with
``TINGJI_EGRESS_LOG`` set, every process that installs the watch appends a line saying so
to that file, and a line for each attempt (so a test sees its children too).

    >>> is_loopback("127.0.0.2"), is_loopback("::1"), is_loopback("192.0.2.1")
    (True, True, False)
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}
WATCHED = {"socket.connect", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
           "socket.gethostbyname", "socket.gethostbyname_ex", "socket.gethostbyaddr"}


@dataclass(frozen=True)
class Attempt:
    at: float
    event: str
    address: str
    where: str
    """The innermost frames of the code that tried."""


_lock = threading.Lock()
_attempts: deque[Attempt] = deque(maxlen=50)
_count = 0
_reported = 0
_installed = False


def _address(host: object):
    """The IP address ``host`` is written as (an IPv6 zone dropped), else None."""
    text = host.decode() if isinstance(host, bytes) else str(host)
    try:
        return ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return None


def is_loopback(host: object) -> bool:
    if host is None or host == "":
        return True  # a passive lookup (bind to any address), not a destination
    text = host.decode() if isinstance(host, bytes) else str(host)
    if text.lower() in LOOPBACK_NAMES:
        return True
    address = _address(text)
    return address is not None and address.is_loopback


def _numeric(host: object) -> bool:
    return _address(host) is not None


def _destination(event: str, args: tuple) -> str | None:
    """The non-loopback place an event tries to reach, or None."""
    if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
        sock, address = args[0], args[-1]
        if getattr(sock, "family", None) not in (socket.AF_INET, socket.AF_INET6):
            return None
        if not isinstance(address, tuple) or not address:
            return None
        return None if is_loopback(address[0]) else f"{address[0]}:{address[1]}"
    host = args[0] if args else None
    if event == "socket.getaddrinfo" and (_numeric(host) or is_loopback(host)):
        return None  # no lookup leaves the box for these (a bind to a LAN address, say)
    if event == "socket.gethostbyaddr":
        return None if is_loopback(host) else str(host)
    return None if is_loopback(host) or _numeric(host) else str(host)


def _hook(event: str, args: tuple) -> None:
    global _count
    if event not in WATCHED:
        return
    try:
        destination = _destination(event, args)
    except Exception:  # noqa: BLE001 - the hook must never break the call it watches
        return
    if destination is None:
        return
    frames = traceback.extract_stack(limit=8)[:-1]  # without this hook's own frame
    where = " < ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in frames[::-1][:4])
    with _lock:
        _count += 1
        _attempts.append(Attempt(time.time(), event, destination, where))
    _log(f"attempt {os.getpid()} {event} {destination} {where}")


def _log(line: str) -> None:
    path = os.environ.get("TINGJI_EGRESS_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:  # one short write: lines stay whole
            f.write(line.replace("\n", " ") + "\n")


def install() -> None:
    """Start watching (once per process; an audit hook cannot be removed)."""
    global _installed
    with _lock:
        if _installed:
            return
        sys.addaudithook(_hook)
        _installed = True
    _log(f"installed {os.getpid()} {' '.join(sys.orig_argv)}")


def installed() -> bool:
    return _installed


def attempts() -> tuple[int, list[Attempt]]:
    """How many attempts since start, and the last ones (newest last)."""
    with _lock:
        return _count, list(_attempts)


def unreported() -> list[Attempt]:
    """Attempts not yet handed out by this function (for the audit trail)."""
    global _reported
    with _lock:
        fresh = min(_count - _reported, len(_attempts))
        _reported = _count
        return list(_attempts)[len(_attempts) - fresh:] if fresh else []
