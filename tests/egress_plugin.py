"""A pytest plugin (``-p tests.egress_plugin``): the outbound-connection watch is active in
the test process from the start, as ``python -m device`` makes it in the appliance's."""

from __future__ import annotations

from device import egress


def pytest_configure(config):
    egress.install()


def pytest_sessionfinish(session, exitstatus):
    count, recent = egress.attempts()
    if count:
        print(f"\nOUTBOUND ATTEMPTS: {count}: " + "; ".join(
            f"{a.event} {a.address} ({a.where})" for a in recent))
        session.exitstatus = 1
