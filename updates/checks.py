"""What a new slot must pass before the switch: its migrations on the live database, then
a health check (its web app answers /health and its recogniser transcribes a known clip).
Both run the new slot's own code in children that die with the flash."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

from device.libc import die_with_parent
from updates.box import Box, UpdateFailed, write_json

HEALTH_TIMEOUT = 120.0


MIGRATE = """
import sys
from pathlib import Path
try:
    from device.databases import migrate_main
except ImportError:  # firmware from before encryption at rest
    from device.store import Store
    s = Store(Path(sys.argv[1])); print(s.schema_version); s.close()
else:
    print(migrate_main(Path(sys.argv[1])))
"""
"""Run in the new slot: its migrations on the main database, in the form it is in."""


def run_migrations(box: Box, slot: str, journal: dict) -> None:
    """Run the new slot's migrations on the live database, in a child process recorded in
    the journal (so recovery can make sure it is gone before restoring the backup)."""
    box.data_dir.mkdir(parents=True, exist_ok=True)
    child = subprocess.Popen(
        [str(box.python(slot)), "-c", MIGRATE, str(box.database)],
        env=box.environment(slot), cwd=box.slots / slot / "code", stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, preexec_fn=die_with_parent(signal.SIGKILL))
    journal["child_pid"] = child.pid
    write_json(box.journal, journal)
    _, stderr = child.communicate(timeout=600)
    if child.returncode != 0:
        raise UpdateFailed(f"the database migration failed: {stderr.strip()[-500:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def install_default_models(box: Box, slot: str, journal: dict) -> None:
    """Install the new slot's default models into the box's model store when any is
    missing (the first flash into an empty TARGET), with the new slot's own installer:
    its packages are fetched and every file's sha256 checked, as `make models` does."""
    from models.store import load_manifest, status

    manifest = load_manifest(box.slots / slot / "code" / "models" / "manifest.toml")
    missing = [spec.id for spec in manifest.values()
               if spec.default and status(spec, box.models_dir, quick=True) != "installed"]
    if not missing:
        return
    box.models_dir.mkdir(parents=True, exist_ok=True)
    box.log(f"installing the default models into {box.models_dir}: {', '.join(missing)}")
    child = subprocess.Popen([str(box.python(slot)), "-m", "models", "install", *missing],
                             env=box.environment(slot), cwd=box.slots / slot / "code",
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True,
                             preexec_fn=die_with_parent(signal.SIGKILL))
    journal["child_pid"] = child.pid
    write_json(box.journal, journal)
    output, _ = child.communicate(timeout=3600)
    if child.returncode != 0:
        raise UpdateFailed(f"the default models could not be installed into "
                           f"{box.models_dir}: {output.strip()[-500:]}")


def check_health(box: Box, slot: str, journal: dict) -> None:
    """The new slot must serve /health (200, status ok) on a spare port and transcribe the
    bundled clip into the words of its reference.  The two run side by side (the
    transcription in a scratch data folder of its own): each is mostly a Python process
    starting and loading, on one core."""
    code = box.slots / slot / "code"
    port = _free_port()
    env = {**box.environment(slot), "TINGJI_HOST": "127.0.0.1", "TINGJI_PORT": str(port)}
    log = open(box.state_dir / "healthcheck.log", "wb")
    scratch = box.state_dir / "healthcheck-data"
    shutil.rmtree(scratch, ignore_errors=True)
    clip = code / "updates" / "healthcheck.wav"
    children = []
    # files, not pipes: nothing reads them until /health answered
    heard, errors = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    try:
        for command, environment, output in (
                (["serve"], env, {"stdout": log, "stderr": subprocess.STDOUT}),
                (["transcribe", str(clip), "--json"],
                 {**box.environment(slot, data_dir=scratch), "TINGJI_AUTO_SUMMARIZE": "0"},
                 {"stdout": heard, "stderr": errors})):
            children.append(subprocess.Popen(
                [str(box.python(slot)), "-m", "device", *command], env=environment, cwd=code,
                stdin=subprocess.DEVNULL, preexec_fn=die_with_parent(signal.SIGKILL), **output))
        server, transcriber = children
        journal.update(server_pid=server.pid, child_pid=transcriber.pid)
        write_json(box.journal, journal)
        deadline, status = time.monotonic() + HEALTH_TIMEOUT, None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    status = (r.status, json.loads(r.read()).get("status"))
                    break
            except urllib.error.HTTPError as exc:  # it answered, and not 200: a verdict
                status = exc.code, None
                break
            except OSError:
                time.sleep(0.1)  # not listening yet
        if status != (200, "ok"):
            raise UpdateFailed(f"the new version's /health did not answer 200 ok ({status}); "
                               f"see {box.state_dir / 'healthcheck.log'}")
        if transcriber.wait(600) != 0:
            errors.seek(0)
            raise UpdateFailed(f"the new version could not transcribe the health-check clip: "
                               f"{errors.read().strip()[-300:]}")
        from device.text import word_error_rate

        heard.seek(0)
        said = " ".join(s["text"] for s in json.load(heard)["segments"])
        reference = (code / "updates" / "healthcheck.txt").read_text()
        if word_error_rate(reference.replace("nine", "9"), said) > 0.34:
            raise UpdateFailed(f"the new version mis-heard the health-check clip: {said!r}")
    finally:
        for child in children:
            child.terminate()
        for child in children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
        for file in (log, heard, errors):
            file.close()
        shutil.rmtree(scratch, ignore_errors=True)
