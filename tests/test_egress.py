"""The outbound-connection watch: what counts as leaving the box, and that it is seen."""

from __future__ import annotations

import socket

from device import egress


def test_attempts_to_reach_other_machines_are_seen_and_loopback_is_not():
    egress.install()
    assert egress.installed()
    before, _ = egress.attempts()
    # the box talking to itself
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as own:
        own.connect(("127.0.0.1", 9))
        own.sendto(b"x", ("127.0.0.1", 9))
    socket.getaddrinfo("localhost", 80)
    socket.getaddrinfo("192.0.2.10", 80)  # numeric: no lookup leaves (a bind, say)
    assert egress.attempts()[0] == before
    # another machine: a UDP "connect" sends nothing, but it is an attempt all the same
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
        out.connect(("192.0.2.1", 53))
    try:
        socket.getaddrinfo("updates.example.invalid", 443)  # a name lookup would leave
    except OSError:
        pass
    count, recent = egress.attempts()
    assert count == before + 2
    assert [(a.event, a.address) for a in recent[-2:]] == [
        ("socket.connect", "192.0.2.1:53"), ("socket.getaddrinfo", "updates.example.invalid")]
    assert "test_egress.py" in recent[-1].where
    assert [a.address for a in egress.unreported()][-2:] == ["192.0.2.1:53",
                                                            "updates.example.invalid"]
    assert egress.unreported() == []
