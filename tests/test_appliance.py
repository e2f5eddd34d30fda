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

from device.databases import open_store
from device.pipeline import import_audio
from device.settings import PROJECT_ROOT
from tests.conftest import wait_until

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
    return wait_until(condition, timeout, what, interval=0.2, ignore=(OSError,))


def test_the_appliance_serves_health_runs_jobs_and_stops_cleanly(settings, speech_wav, tmp_path):
    port = _free_port()
    env = {**os.environ, "TINGJI_DATA_DIR": str(settings.data_dir),
           "TINGJI_MODELS_DIR": str(settings.models_dir), "TINGJI_PORT": str(port),
           "TINGJI_HOST": "127.0.0.1"}
    appliance = subprocess.Popen([sys.executable, "-m", "device", "run"], cwd=PROJECT_ROOT,
                                 env=env, stdin=subprocess.DEVNULL,
                                 stdout=open(tmp_path / "run.log", "wb"), stderr=subprocess.STDOUT)
    def health():
        if appliance.poll() is not None:  # it stopped: say why at once
            raise AssertionError((tmp_path / "run.log").read_text()[-2000:])
        return _get(f"http://127.0.0.1:{port}/health")

    try:
        status, body = _until(health, 60, "/health")
        assert status == 200 and body == {"status": "ok"}  # no version for strangers
        head = urllib.request.Request(f"http://127.0.0.1:{port}/setup", method="HEAD")
        with urllib.request.urlopen(head, timeout=5) as response:
            assert response.status == 200 and response.read() == b""
            assert response.headers.get("Server") is None  # was "uvicorn"
        with open_store(settings) as store:
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


def test_recording_over_http_with_live_events(settings, tmp_path):
    """Start, markers, pause/resume, 409s and the SSE stream, against the running appliance."""
    import shutil

    import httpx

    from tests.conftest import long_speech
    from tests.webutil import create_account, sign_in

    create_account(settings, "ivan", "interviewer")
    demo = settings.data_dir / "demo"
    demo.mkdir(parents=True)
    shutil.copy(long_speech(tmp_path, 25), demo / "clip.wav")  # utterances with pauses
    port = _free_port()
    env = {**os.environ, "TINGJI_DATA_DIR": str(settings.data_dir),
           "TINGJI_MODELS_DIR": str(settings.models_dir), "TINGJI_PORT": str(port)}
    appliance = subprocess.Popen([sys.executable, "-m", "device", "run"], cwd=PROJECT_ROOT,
                                 env=env, stdin=subprocess.DEVNULL,
                                 stdout=open(tmp_path / "run.log", "wb"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        _until(lambda: _get(f"{base}/health")[0] == 200, 60, "/health")
        with httpx.Client(base_url=base, timeout=60) as client:
            assert client.post("/api/record/stop").status_code == 401
            client.headers["X-CSRF-Token"] = sign_in(client, "ivan")
            assert client.post("/api/record/stop").status_code == 409
            bad = client.post("/api/record/start", json={"source": "demo:../../etc/passwd"})
            assert bad.status_code == 400 and "no demo file" in bad.json()["detail"]
            started = client.post("/api/record/start",
                                  json={"source": "demo:clip.wav", "title": "HTTP"})
            assert started.status_code == 200, started.text
            recording_id = started.json()["recording_id"]
            again = client.post("/api/record/start", json={"source": "demo:clip.wav"})
            assert again.status_code == 409
            events = []
            with client.stream("GET", "/api/record/events") as stream:
                deadline = time.monotonic() + 30
                for line in stream.iter_lines():
                    if line.startswith("data: "):
                        events.append(json.loads(line[6:]))
                        if any(e.get("type") == "segment" for e in events) and any(
                                e.get("type") == "level" for e in events):
                            break
                    if time.monotonic() > deadline:
                        break
            assert any(e.get("type") == "level" for e in events), events[:5]
            assert any(e.get("type") == "segment" and e["text"] for e in events), events[:5]
            marker = client.post("/api/record/marker", json={"note": "要点"}).json()
            assert marker["note"] == "要点" and marker["recording_id"] == recording_id
            assert client.post("/api/record/pause").json()["state"] == "paused"
            assert client.post("/api/record/resume").json()["state"] == "recording"
            stopped = client.post("/api/record/stop").json()
            assert stopped["recording_id"] == recording_id and stopped["status"] == "queued"
        with open_store(settings) as store:
            _until(lambda: store.get_recording(recording_id).status == "done", 120,
                   "the worker's final transcript")
            assert store.markers(recording_id)[0].note == "要点"
            assert store.segments(recording_id)
    finally:
        appliance.send_signal(signal.SIGTERM)
        appliance.wait(30)
