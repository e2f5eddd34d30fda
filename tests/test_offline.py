"""Proof that nothing leaves the box: the appliance's flows run again inside a network
namespace that has only loopback (``unshare --net``), with the outbound-connection watch
(``device.egress``) active in the test process and in every ``python -m device`` process it
starts; not one attempt to reach another machine is allowed, and a process that did not
install the watch fails the proof."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from device.settings import PROJECT_ROOT

pytestmark = pytest.mark.slow

FLOWS = [  # first start, recording from a file, live and final transcription by the worker,
    # summaries, edits, exports, an update's health check, and HTTPS on a LAN address
    "tests/test_web.py::test_first_boot_needs_the_console_setup_code",
    "tests/test_appliance.py",
    "tests/test_summarize.py::test_a_chinese_transcript_gets_a_grounded_chinese_summary",
    "tests/test_web.py::test_state_changing_requests_need_the_csrf_token",
    "tests/test_editing.py",
    "tests/test_updates.py::test_update_installs_into_the_other_slot_after_its_health_check",
    "tests/test_tls.py::test_the_appliance_serves_the_lan_over_https_only",
]


def test_the_whole_flow_reaches_no_other_machine(tmp_path):
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a network namespace (CI runs as root)")
    log = tmp_path / "egress.log"
    env = {**os.environ, "TINGJI_EGRESS_LOG": str(log)}
    inside = subprocess.run(
        ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$0" "$@"',
         sys.executable, "-m", "pytest", "-q", "-p", "tests.egress_plugin",
         "-p", "no:cacheprovider", *FLOWS],
        cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=900)
    assert inside.returncode == 0, inside.stdout[-3000:] + inside.stderr[-2000:]
    lines = log.read_text().splitlines()
    attempts = [line for line in lines if line.startswith("attempt ")]
    assert attempts == []
    watched = [line for line in lines if line.startswith("installed ")]
    # the test process, the appliance (web and worker) of each appliance test, and the
    # update's health check of the new slot: every one of them watched
    assert any("pytest" in line for line in watched)
    assert sum(line.endswith("-m device run") for line in watched) >= 2
    assert sum(line.endswith("-m device worker") for line in watched) >= 2
    assert any("-m device serve" in line for line in watched), watched
    # and the namespace really had no way out
    probe = subprocess.run(
        ["unshare", "--net", "--", sys.executable, "-c",
         "import socket; s = socket.socket(); s.settimeout(2); s.connect(('192.0.2.1', 80))"],
        capture_output=True, text=True, timeout=30)
    assert probe.returncode != 0 and "unreachable" in probe.stderr.lower()
