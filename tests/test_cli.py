"""The command line, run as a user would: real processes, real model, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from device.settings import PROJECT_ROOT, Settings

pytestmark = pytest.mark.slow


def run(settings: Settings, *args: str, stdin: str | None = None
        ) -> subprocess.CompletedProcess:
    env = {**os.environ, "TINGJI_DATA_DIR": str(settings.data_dir),
           "TINGJI_MODELS_DIR": str(settings.models_dir)}
    return subprocess.run([sys.executable, "-m", "device", *args], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=300, input=stdin,
                          stdin=subprocess.DEVNULL if stdin is None else None)


def test_users_cli_creates_accounts_and_resets_a_lost_password(settings):
    from tests.webutil import login, sign_in
    from web.app import create_app

    assert run(settings, "users", "add", "boss", "--role", "admin",
               stdin="first password\n").returncode == 0
    short = run(settings, "users", "add", "tiny", stdin="short\n")
    assert short.returncode == 1 and "10 characters" in short.stderr
    app = create_app(settings)
    assert app.state.setup_code is None  # an account exists: no first-boot setup
    session = login(app, "boss", "first password")
    assert run(settings, "users", "passwd", "boss", stdin="second password\n").returncode == 0
    assert session.client.get("/api/recordings/1").status_code == 401  # sessions ended
    sign_in(session.client, "boss", "second password")
    listing = run(settings, "users").stdout
    assert "boss" in listing and "admin" in listing and "tiny" not in listing
    assert run(settings, "users", "passwd", "nobody", stdin="x" * 10 + "\n").returncode == 1


def test_transcribe_json_then_search_and_jobs(settings, speech_wav):
    result = run(settings, "transcribe", str(speech_wav), "--json")
    assert result.returncode == 0, result.stderr
    transcript = json.loads(result.stdout)
    recording = transcript["recording"]
    assert recording["id"] == 1 and recording["language"] == "en" and recording["duration"] > 1
    segment = transcript["segments"][0]
    expected = {"start", "end", "text", "avg_logprob", "no_speech_prob", "language", "words"}
    assert expected <= set(segment)
    assert segment["words"][0]["start"] <= segment["words"][-1]["end"]
    word = segment["words"][1]["text"].strip(" ,.")
    found = run(settings, "search", word)
    assert found.returncode == 0 and f"#1 {speech_wav.stem}" in found.stdout
    assert run(settings, "search", "zzzqqq").returncode == 1
    jobs = run(settings, "jobs")
    assert "done" in jobs.stdout and "100.0%" in jobs.stdout


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("empty.wav", b"", "empty file"),
        ("renamed.wav", b"just some text\n" * 50, "not a readable audio file"),
        ("missing.wav", None, "no such file"),
    ],
)
def test_bad_input_is_one_line_and_a_nonzero_exit(settings, tmp_path, name, content, reason):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    result = run(settings, "transcribe", str(path))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and name in lines[0] and reason in lines[0]
    assert result.stdout == ""


def test_a_missing_model_names_the_install_command(settings, tmp_path, speech_wav):
    settings = settings.replace(models_dir=tmp_path / "no-models")
    result = run(settings, "transcribe", str(speech_wav))
    assert result.returncode == 1
    assert "python -m models install whisper-base" in result.stderr
    assert not settings.database_path.exists()  # nothing was imported


def test_a_signal_arriving_while_the_stop_event_is_busy_still_stops(tmp_path):
    """A second SIGTERM can reach the worker while the main thread is inside ``stop.set()``
    for the first (the appliance terminates it, and the kernel signals it as the appliance
    dies): the handler runs right there, holding the event's lock.  Here the main thread
    holds that lock when the signal comes; before, the worker waited on it for ever."""
    script = (
        "import os, signal, sys\n"
        "from device.cli.appliance import stop_on_signals\n"
        "stop = stop_on_signals()\n"
        "with stop._cond:\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    for _ in range(1000):\n"
        "        pass  # the handler runs between these bytecodes\n"
        "sys.exit(0 if stop.wait(10) else 1)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, timeout=60,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
