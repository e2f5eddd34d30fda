"""`python -m device run`: the web UI and the worker together, as `make run` starts them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest

from device.pipeline import import_audio
from device.settings import PROJECT_ROOT
from device.store import Store

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if value := condition():
                return value
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_the_appliance_serves_health_runs_jobs_and_stops_cleanly(settings, speech_wav, tmp_path):
    port = _free_port()
    env = {**os.environ, "TINGJI_DATA_DIR": str(settings.data_dir),
           "TINGJI_MODELS_DIR": str(settings.models_dir), "TINGJI_PORT": str(port),
           "TINGJI_HOST": "127.0.0.1"}
    appliance = subprocess.Popen([sys.executable, "-m", "device", "run"], cwd=PROJECT_ROOT,
                                 env=env, stdin=subprocess.DEVNULL,
                                 stdout=open(tmp_path / "run.log", "wb"), stderr=subprocess.STDOUT)
    try:
        status, body = _until(lambda: _get(f"http://127.0.0.1:{port}/health"), 60, "/health")
        assert status == 200 and body["status"] == "ok"
        with Store(settings.database_path) as store:
            recording, job = import_audio(store, settings, speech_wav)
            _until(lambda: store.get_job(job.id).status == "done", 120, "the worker to run the job")
            assert store.segments(recording.id)
        worker_pid = int((settings.data_dir / "worker.lock").read_text())
        assert psutil.pid_exists(worker_pid)
    finally:
        appliance.send_signal(signal.SIGTERM)
        appliance.wait(30)
    _until(lambda: not psutil.pid_exists(worker_pid)
           or psutil.Process(worker_pid).status() == psutil.STATUS_ZOMBIE, 30,
           "the worker to stop with the appliance")
