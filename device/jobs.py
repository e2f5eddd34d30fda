"""The job queue's worker: runs queued jobs one at a time, survives crashes of its own jobs.

Jobs live in SQLite (see store.py).  On start the worker puts back in the queue any job
whose worker died mid-run (kill -9, power cut), so unfinished work resumes; a job that has
killed its worker ``MAX_ATTEMPTS`` times is failed instead, so it cannot block the queue.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import psutil

from device import databases, encryption
from device.encryption import BoxLocked
from device.errors import N_, JobCancelled, TingjiError
from device.pipeline import Engines, transcribe_recording
from device.records import Job
from device.said import Said, of_error
from device.settings import Settings, hardware_profile
from device.store import Store
from models.store import ModelError

log = logging.getLogger("tingji.jobs")
MAX_ATTEMPTS = 3
PROGRESS_INTERVAL_S = 0.5
PURGE_CHECK_SECONDS = 600
"""How often the worker asks whether the daily retention purge is due."""


class WorkerBusy(TingjiError):
    pass


def process_identity() -> tuple[int, float]:
    """(pid, start time): together they name this process even after pid reuse."""
    me = psutil.Process()
    return me.pid, me.create_time()


def process_alive(pid: int | None, started: float | None) -> bool:
    if pid is None:
        return False
    try:
        return abs(psutil.Process(pid).create_time() - (started or 0.0)) < 0.01
    except psutil.Error:
        return False


SPEAKER_MODEL = "ge2e-speaker-encoder"


def load_engines(settings: Settings, live: bool = False) -> Engines:
    """The VAD, and the default recogniser loaded now so a missing model fails early;
    other models load when a profile first asks for them.  Never from the network.
    ``live``: recognisers for the live transcript, one utterance at a time."""
    from device.recognize import RECOGNIZERS
    from device.vad import SpeechDetector
    from models.store import ModelError, get_spec, load_manifest, verify

    hardware = hardware_profile(settings)

    def load(model_id: str):
        spec = get_spec(model_id, load_manifest(models_dir=settings.models_dir))
        if spec.kind != "asr" or spec.engine not in RECOGNIZERS:
            raise ModelError(f"model {model_id} ({spec.kind}, {spec.engine}) cannot recognise "
                             f"speech; speech engines: {', '.join(RECOGNIZERS)}")
        model_dir = verify(spec, settings.models_dir)
        return RECOGNIZERS[spec.engine](
            model_dir, model_id, hardware.cpu_threads, hardware.compute_type, live=live)

    def load_speaker_encoder():
        from device.speakers.encoder import ONNX_FILE, OnnxEncoder

        spec = get_spec(SPEAKER_MODEL, load_manifest(models_dir=settings.models_dir))
        return OnnxEncoder(verify(spec, settings.models_dir) / ONNX_FILE,
                           providers=hardware.onnx_providers)

    engines = Engines(SpeechDetector(providers=hardware.onnx_providers), load,
                      load_speaker_encoder)
    engines.recognizer(settings.asr_model)
    return engines


def _summariser_installed(settings: Settings) -> bool:
    from models.store import load_manifest, status

    # Sizes only: hashing the 1.1 GB model took 1.5 s after every transcription, and the
    # summary job checks every byte when it loads the model.
    spec = load_manifest(models_dir=settings.models_dir).get(settings.summary_model)
    return spec is not None and status(spec, settings.models_dir, quick=True) == "installed"


def is_draft(jobs: Sequence[Job]) -> bool:
    """Whether the recording's transcript is a quick draft: its last finished
    transcription was one."""
    done = [j for j in jobs if j.kind == "transcribe" and j.status == "done"]
    return bool(done and done[-1].params.get("fast"))


class Runner:
    """Runs claimed jobs with models loaded once, on first need."""

    def __init__(self, settings: Settings, engines: Engines | None = None):
        self.settings = settings
        self._engines = engines
        self.pid, self.started = process_identity()

    @property
    def engines(self) -> Engines:
        if self._engines is None:
            self._engines = load_engines(self.settings)
        return self._engines

    def prepare(self) -> Engines:
        """Load (and verify) the models now rather than at the first job."""
        return self.engines

    def claim(self, store: Store, job_id: int | None = None) -> Job | None:
        return store.claim(self.pid, self.started, job_id)

    def run(
        self, store: Store, job: Job, on_progress: Callable[[float], None] = lambda p: None
    ) -> bool:
        """Run one claimed job; True if it finished, False if it failed (reason stored)."""
        last, said = 0.0, None

        def progress(percent: float, stage: str | None = None) -> None:
            nonlocal last, said
            on_progress(percent)
            if time.monotonic() - last >= PROGRESS_INTERVAL_S or stage != said:
                last, said = time.monotonic(), stage
                store.set_progress(job.id, percent, stage)

        def checkpoint(percent: float, stage: str | None = None) -> None:
            progress(percent, stage)
            if store.get_job(job.id).status == "cancelled":
                raise JobCancelled(f"job {job.id} was cancelled")

        try:
            if job.kind == "transcribe":
                transcribe_recording(store, self.settings, self.engines, job, progress)
                if self.settings.auto_summarize and _summariser_installed(self.settings):
                    store.enqueue("summarize", job.recording_id, {})
            elif job.kind == "summarize":
                from device.summary_job import summarize_recording

                summarize_recording(store, self.settings, job, checkpoint)
                store.finish_job(job.id)
            elif job.kind == "diarize":
                from device.speakers.stage import diarize_recording

                user_id = job.params.get("user_id")
                diarize_recording(store, self.settings, self.engines, job.recording_id,
                                  job.params.get("speakers"), bool(job.params.get("overwrite")),
                                  store.get_user(user_id) if user_id else None)
                store.finish_job(job.id)
            elif job.kind == "remember_voice":
                from device.speakers.stage import remember_voice

                user_id = job.params.get("user_id")
                remember_voice(store, self.settings, self.engines, job.recording_id,
                               job.params["speaker"], job.params["name"],
                               job.params.get("consent") or "",
                               store.get_user(user_id) if user_id else None)
                store.finish_job(job.id)
            else:
                raise TingjiError(f"unknown job kind {job.kind!r}")
            return True
        except JobCancelled:
            log.info("job %s cancelled", job.id)
        except BoxLocked:  # locked between the claim and the start: it waits in the queue
            store.release_job(job.id, Said(N_("waiting for the box to be unlocked")))
            log.info("job %s waits: the box is locked", job.id)
        except (TingjiError, ModelError) as exc:
            store.fail_job(job.id, of_error(exc))
            log.warning("job %s failed: %s", job.id, exc)
        except Exception as exc:  # a bug must not stop the queue: record it and go on
            store.fail_job(job.id, Said(N_("internal error: %(error)s"),
                                        error=f"{type(exc).__name__}: {exc}"))
            log.error("job %s crashed:\n%s", job.id, traceback.format_exc())
        return False


class Worker:
    """The long-running job worker of one data directory (one at a time, by file lock)."""

    def __init__(self, settings: Settings, engines: Engines | None = None):
        self.settings = settings
        self.runner = Runner(settings, engines)
        self._lock_file = None

    def _take_lock(self) -> None:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        # "a": opening must not truncate the pid of a worker that holds the lock.
        self._lock_file = open(Path(self.settings.data_dir) / "worker.lock", "a")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise WorkerBusy(
                f"another worker is already running on {self.settings.data_dir}"
            ) from None
        self._lock_file.truncate(0)
        self._lock_file.write(str(os.getpid()))
        self._lock_file.flush()

    def _seal_main(self) -> None:
        """The database and audio a box stored in the clear before its key existed, sealed
        (a cheap look at two files' first bytes once they are)."""
        try:
            sealed = databases.seal_main(self.settings)
        except Exception:  # the jobs go on; the next turn tries again
            log.exception("sealing the database kept in the clear failed")
            return
        if sealed is not None:
            log.info("sealed the database kept in the clear and the audio of %d recording(s)",
                     len(sealed))
            from device.audit import Auditor

            with databases.open_store(self.settings) as store:  # locked: entered at unlock
                Auditor(self.settings).record(store, "database_sealed", details={
                    "recordings": sealed, "where": "worker"})

    def _open(self) -> Store:
        """The main database, with what a crash or a power cut left repaired: recordings cut
        off, audio in the clear, jobs interrupted."""
        from device.recorder import recover_interrupted

        store = databases.open_store(self.settings)
        for recording_id in recover_interrupted(self.settings):
            log.info("recording %s was cut off; repaired and queued", recording_id)
        self._seal_existing(store)
        for job in store.requeue_interrupted(process_alive, MAX_ATTEMPTS):
            log.info("job %s was interrupted; now %s", job.id, job.status)
        return store

    def _seal_existing(self, store: Store) -> None:
        """Audio stored in the clear before encryption was on is sealed (and a sealing a
        power cut interrupted is finished)."""
        from device.audit import Auditor

        try:
            sealed = encryption.seal_existing(self.settings, store)
        except Exception:  # the jobs go on; the next start tries again
            log.exception("sealing the audio stored in the clear failed")
            return
        if sealed:
            log.info("sealed the audio of %d recording(s) stored in the clear", len(sealed))
            Auditor(self.settings).record(store, "audio_sealed",
                                          details={"recordings": sealed, "where": "worker"})

    def _purge_if_due(self, store: Store) -> None:
        from device import retention

        try:
            erased = retention.purge_if_due(store, self.settings, datetime.now(UTC))
        except Exception:  # the jobs go on; the next check tries again
            log.exception("retention purge failed")
            return
        if erased is not None:
            log.info("retention purge: %d erased", len(erased))

    def serve(self, stop: threading.Event, idle_wait: float = 0.5) -> None:
        """Run jobs until ``stop`` is set.  While the box is locked nothing is read (the
        database and the jobs need its key); after each unlock, recordings made while
        locked are moved into the main database and what a crash left is repaired."""
        self._take_lock()
        store: Store | None = None
        try:
            next_purge = 0.0
            while not stop.is_set():
                self._seal_main()  # a database kept in the clear: no secret needed
                if encryption.locked(self.settings):
                    if store is not None:  # locked meanwhile: its key is let go of
                        store.close()
                        store = None
                    stop.wait(idle_wait)
                    continue
                if store is None or store.stale():
                    if store is not None:
                        store.close()
                    store = self._open()
                else:  # a recording begun while locked and stopped since
                    databases.move_waiting(self.settings, store)
                if time.monotonic() >= next_purge:  # the daily retention purge, when due
                    next_purge = time.monotonic() + PURGE_CHECK_SECONDS
                    self._purge_if_due(store)
                job = self.runner.claim(store)
                if job is None:
                    stop.wait(idle_wait)
                    continue
                log.info("job %s (%s, recording %s) started", job.id, job.kind, job.recording_id)
                ok = self.runner.run(store, job)
                log.info("job %s %s", job.id, "done" if ok else "failed")
        finally:
            if store is not None:
                store.close()
            if self._lock_file is not None:
                self._lock_file.close()
