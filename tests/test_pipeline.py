"""Import and transcription end to end, bad input, crash-resume, and no network at all."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from device import audio
from device.databases import open_store
from device.errors import AudioDecodeError, AudioTooLargeError
from device.jobs import Runner, is_draft
from device.pipeline import import_audio, requeue_recording
from device.settings import PROJECT_ROOT, Settings
from tests.conftest import long_speech, long_speech_with_texts, wait_until


def _transcribe(store, settings, engines, path, **kwargs):
    recording, job = import_audio(store, settings, path, **kwargs)
    runner = Runner(settings, engines)
    assert runner.run(store, runner.claim(store, job.id))
    return store.get_recording(recording.id)


@pytest.mark.slow
def test_import_and_transcribe_stores_a_searchable_transcript(store, settings, engines, speech_wav):
    recording = _transcribe(store, settings, engines, speech_wav, title="Speech")
    assert recording.status == "done" and recording.language == "en"
    assert recording.model_id == "whisper-base"
    assert recording.duration == pytest.approx(audio.decode(speech_wav).size / 16000, abs=0.01)
    stored = settings.audio_dir / recording.audio_file
    assert stored.read_bytes() == Path(speech_wav).read_bytes()
    segments = store.segments(recording.id)
    assert segments and all(s.words for s in segments)
    word = next(w.text.strip(" ,.") for s in segments for w in s.words if len(w.text.strip()) > 4)
    assert any(h.recording_id == recording.id for h in store.search(word))


@pytest.mark.slow
def test_the_beam_setting_reaches_the_recogniser(store, settings, engines, speech_wav):
    whisper = engines.recognizer(settings.asr_model)
    greedy = _transcribe(store, settings.replace(beam_size=1), engines, speech_wav)
    assert greedy.status == "done" and store.segments(greedy.id)
    assert whisper.report.beam_size == 1
    assert _transcribe(store, settings, engines, speech_wav).status == "done"
    assert whisper.report.beam_size == 5


@pytest.mark.slow
def test_a_quick_draft_is_one_greedy_pass_and_the_accurate_transcript_follows(
        store, settings, engines, tmp_path):
    wav, _ = long_speech_with_texts(tmp_path, 40, language="zh")
    whisper = engines.recognizer(settings.asr_model)
    draft = _transcribe(store, settings, engines, wav, fast=True)
    assert draft.status == "done" and store.segments(draft.id)
    assert is_draft(store.jobs_for(draft.id))
    passes = whisper.report.passes
    assert passes and {p.kind for p in passes} == {"first"}  # nothing lost looked at again
    assert whisper.report.beam_size == 1 and whisper.report.retries == 0
    # auto mode detected and tried nothing: each segment its language's plain profile
    assert draft.profile in ("mandarin", "english") and draft.auto_decision["varieties"] == {}
    _, job = requeue_recording(store, settings, draft.id)
    runner = Runner(settings, engines)
    assert runner.run(store, runner.claim(store, job.id))
    assert not is_draft(store.jobs_for(draft.id)) and whisper.report.beam_size == 5
    assert store.get_recording(draft.id).status == "done" and store.segments(draft.id)


@pytest.mark.slow
def test_a_bad_file_fails_its_job_and_touches_nothing_else(store, settings, engines, speech_wav,
                                                          tmp_path):
    good = _transcribe(store, settings, engines, speech_wav)
    before = store.segments(good.id)
    bad = tmp_path / "notes.wav"
    bad.write_text("meeting notes, not audio\n" * 100)
    recording, job = import_audio(store, settings, bad)
    runner = Runner(settings, engines)
    assert not runner.run(store, runner.claim(store, job.id))
    job = store.get_job(job.id)
    assert job.status == "failed" and job.error.startswith("notes.wav: not a readable audio file")
    assert store.get_recording(recording.id).status == "failed"
    assert store.segments(good.id) == before
    assert store.get_recording(good.id).status == "done"


def test_empty_and_oversized_files_are_refused_at_import(store, settings, tmp_path):
    empty = tmp_path / "empty.wav"
    empty.touch()
    with pytest.raises(AudioDecodeError, match="empty file"):
        import_audio(store, settings, empty)
    huge = tmp_path / "huge.flac"
    with open(huge, "wb") as f:
        f.truncate(settings.max_upload_bytes + 1)
    with pytest.raises(AudioTooLargeError):
        import_audio(store, settings, huge)
    jobs = store.list_jobs()
    assert [j.status for j in jobs] == ["failed", "failed"]
    assert not settings.audio_dir.exists() or not any(settings.audio_dir.iterdir())


@pytest.mark.slow
def test_a_failed_job_does_not_block_the_queue(store, settings, engines, speech_wav, tmp_path):
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"\xff\xfb" + os.urandom(5000))
    _, bad_job = import_audio(store, settings, bad)
    _, good_job = import_audio(store, settings, speech_wav)
    runner = Runner(settings, engines)
    while (job := runner.claim(store)) is not None:
        runner.run(store, job)
    assert store.get_job(bad_job.id).status == "failed"
    assert store.get_job(good_job.id).status == "done"


def _start_worker(settings: Settings, log: Path) -> subprocess.Popen:
    env = {**os.environ, "TINGJI_DATA_DIR": str(settings.data_dir),
           "TINGJI_MODELS_DIR": str(settings.models_dir), "TINGJI_BATCH_SIZE": "2"}
    return subprocess.Popen([sys.executable, "-m", "device", "worker"], cwd=PROJECT_ROOT,
                            env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)


@pytest.mark.slow
def test_a_killed_worker_resumes_the_job_which_completes_exactly_once(settings, tmp_path):
    long = long_speech(tmp_path, 120)
    with open_store(settings) as store:
        recording, job = import_audio(store, settings, long)
    log = tmp_path / "worker.log"
    worker = _start_worker(settings, log)
    try:
        with open_store(settings) as store:
            wait_until(lambda: store.get_job(job.id).progress > 5, 120, "the job to make progress")
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
            interrupted = store.get_job(job.id)
            assert interrupted.status == "running" and interrupted.attempts == 1
            assert store.segments(recording.id) == []  # nothing partial was written
        worker = _start_worker(settings, log)
        with open_store(settings) as store:
            done = wait_until(lambda: (j := store.get_job(job.id)).status == "done" and j, 180,
                             "the resumed job to finish")
            assert done.attempts == 2
            segments = store.segments(recording.id)
            indexes = [r[0] for r in store.db.execute(
                "SELECT idx FROM segments WHERE recording_id = ?", [recording.id])]
            assert len(indexes) == len(set(indexes)) == len(segments) > 5
            fts = store.db.execute("SELECT count(*) FROM segments_fts").fetchone()[0]
            assert fts == len(segments)
    finally:
        worker.terminate()
        worker.wait(30)
    assert "was interrupted; now queued" in log.read_text()


class _NetworkAttempt(AssertionError):
    pass


@pytest.mark.slow
def test_transcription_never_opens_a_network_connection(monkeypatch, settings, speech_wav):
    """Load the models and transcribe with every non-loopback connection refused."""
    attempts = []
    real_connect = socket.socket.connect

    def guarded_connect(sock, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and (host.startswith("127.") or host in ("::1", "localhost")
                                      or sock.family == socket.AF_UNIX):
            return real_connect(sock, address)
        attempts.append(address)
        raise _NetworkAttempt(f"network connection attempted to {address}")

    def guarded_getaddrinfo(host, *args, **kwargs):
        attempts.append(host)
        raise _NetworkAttempt(f"name lookup attempted for {host}")

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    from device.jobs import load_engines

    fresh = load_engines(settings)  # a fresh model load, inside the guard
    with open_store(settings) as store:
        recording = _transcribe(store, settings, fresh, speech_wav)
        assert recording.status == "done"
    assert attempts == []


def test_only_one_worker_runs_per_data_directory(settings):
    import threading

    from device.jobs import Worker, WorkerBusy

    stop = threading.Event()
    first = threading.Thread(target=Worker(settings).serve, args=(stop,))
    first.start()
    try:
        wait_until(lambda: (settings.data_dir / "worker.lock").stat().st_size > 0
                  if (settings.data_dir / "worker.lock").exists() else False, 30, "the lock")
        with pytest.raises(WorkerBusy, match="another worker"):
            Worker(settings).serve(threading.Event())
        assert (settings.data_dir / "worker.lock").read_text() == str(os.getpid())
    finally:
        stop.set()
        first.join(30)


@pytest.mark.slow
def test_the_job_is_queued_only_once_the_audio_is_stored(store, settings, tmp_path):
    """The job was queued before the audio had been copied: a worker that took it at once
    failed with "the recording has no stored audio"."""
    import threading

    big = tmp_path / "long.wav"
    audio.write_wav(big, np.zeros(16000 * 60 * 60 * 2, dtype=np.float32))  # 2 h, 230 MB
    done = threading.Event()
    def copy_in() -> None:
        with open_store(settings) as own:
            import_audio(own, settings, big)
        done.set()

    worker = threading.Thread(target=copy_in)
    worker.start()
    seen = None
    deadline = time.monotonic() + 120
    while seen is None and time.monotonic() < deadline:
        queued = store.list_jobs(status="queued")
        if queued:  # what a worker would find: the job and its recording
            seen = store.get_recording(queued[0].recording_id)
    worker.join(120)
    assert done.is_set() and seen is not None
    assert seen.audio_file and (settings.audio_dir / seen.audio_file).stat().st_size == \
        big.stat().st_size
