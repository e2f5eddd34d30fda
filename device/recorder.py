"""Recording on the device: one recording at a time, crash-safe, with a live transcript.

    recorder = Recorder(settings, engines)
    recording = recorder.start(FileSource(path), title="Interview")
    recorder.marker("key quote")
    recording = recorder.stop()      # joined audio, queued for the final batch transcript

The source's blocks go to the segment writer (storage.py) first, then to the level meter and
the live transcriber.  A full disk or a vanished microphone stops the recording cleanly:
what was recorded is kept and queued.  A recording cut off by kill -9 or a power cut is
found by ``recover_interrupted`` on the next start, repaired, marked "recovered" and queued.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from device import encryption, ready, storage
from device.audio import SAMPLE_RATE, fsync_dir
from device.capture import AudioSource, CaptureError
from device.databases import open_store
from device.errors import N_, DiskFullError, RecordingNotFound, TingjiError
from device.live import LiveSegment, LiveTranscriber
from device.pipeline import Engines, recognition_options, select_profile
from device.profiles import NO_TERMS, finish_segment
from device.records import Marker, Recording
from device.said import Said, of_error
from device.settings import Settings
from device.store import Store

log = logging.getLogger("tingji.recorder")


class RecorderBusy(TingjiError):
    """Another recording is in progress (here or in another process)."""


class NotRecording(TingjiError):
    pass


@dataclass(frozen=True)
class Level:
    peak_db: float
    rms_db: float


def level(block: np.ndarray) -> Level:
    if not block.size:
        return Level(-120.0, -120.0)
    peak = float(np.abs(block).max())
    rms = float(np.sqrt(np.mean(np.square(block, dtype=np.float64))))
    return Level(round(20 * math.log10(max(peak, 1e-6)), 1),
                 round(20 * math.log10(max(rms, 1e-6)), 1))


def capture_dir(settings: Settings, recording_id: int) -> Path:
    return settings.data_dir / "capture" / str(recording_id)


class _RecorderLock:
    """One recording at a time per data directory, across processes (flock)."""

    def __init__(self, settings: Settings):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.path = settings.data_dir / "recorder.lock"
        self._file = None

    def acquire(self) -> None:
        self._file = open(self.path, "a")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            self._file = None
            raise RecorderBusy(N_("a recording is already in progress; stop it first")) from None

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class Recorder:
    """Drives one recording at a time; thread-safe controls for the CLI and the web."""

    def __init__(self, settings: Settings, engines: Engines | None = None, live: bool = True,
                 fsync_trace: Path | None = None, ahead: bool = False):
        """``ahead``: run the final pass during the recording, in a process of its own at
        idle priority (``device.ready``), so that after stop only its tail is left."""
        self.settings = settings
        self.engines = engines
        self.live = live and engines is not None
        self.ahead = ahead
        self._ahead = None
        self.final_pass_until: float | None = None
        """How far the final pass has got into the recording (None: it is not running)."""
        self.notes_until: float | None = None
        """How far the summary's notes have got (None: the final pass is not running)."""
        self.fsync_trace = fsync_trace
        self.recording_id: int | None = None
        self.paused = False
        self.state = "idle"
        self.stop_reason: str | None = None
        self.level = Level(-120.0, -120.0)
        self.live_lags: list[float] = []
        self.frames_received = 0
        self._lock = _RecorderLock(settings)
        self._control = threading.Lock()
        self._subscribers: list[Callable[[dict], None]] = []
        self.owner_id: int | None = None
        """The account recording now (None: the console's, or nobody's)."""
        self._thread: threading.Thread | None = None
        self._source: AudioSource | None = None
        self._writer: storage.SegmentWriter | None = None
        self._transcriber: LiveTranscriber | None = None
        self._store: Store | None = None

    # -- controls -----------------------------------------------------------------------

    def start(self, source: AudioSource, title: str | None = None,
              profile: str | None = None, owner_id: int | None = None,
              speakers: int | None = None) -> Recording:
        with self._control:
            if self.state == "recording":
                raise RecorderBusy(N_("a recording is already in progress; stop it first"))
            chosen = select_profile(self.settings, profile)
            self._lock.acquire()
            try:
                self._store = open_store(self.settings)  # its database to the end
                recording = self._store.create_recording(
                    title or time.strftime("Recording %Y-%m-%d %H:%M"),
                    source_name=source.name, status="recording", owner_id=owner_id)
                self._store.update_recording(recording.id, profile=chosen.name,
                                             speakers=speakers or None)
                self.recording_id, self.owner_id = recording.id, owner_id
                key = (encryption.new_recording_key(self.settings, recording.id)
                       if encryption.enabled(self.settings) else None)  # no secret needed
                self._writer = storage.SegmentWriter(capture_dir(self.settings, recording.id),
                                                     trace=self.fsync_trace, data_key=key)
                if self.live:
                    options = recognition_options(chosen, NO_TERMS, self.settings,
                                                  auto=chosen.is_auto)
                    recognizer = self.engines.recognizer(chosen.model)
                    self._transcriber = LiveTranscriber(
                        self.engines.detector, recognizer, options,
                        lambda live: self._on_live(live, chosen),
                        decoding=lambda: ready.held_still(self._ahead))
            except BaseException:
                self._lock.release()
                raise
            self._source = source
            self.state, self.paused, self.stop_reason = "recording", False, None
            self.final_pass_until = self.notes_until = None
            if self.ahead:
                try:
                    self._ahead = ready.start(self.settings, recording.id)
                except OSError as exc:  # the recording goes on; its final pass after stop
                    log.warning("the final pass cannot run during the recording: %s", exc)
                else:
                    self.final_pass_until = self.notes_until = 0.0
                    threading.Thread(target=self._watch_ahead, args=(recording.id,),
                                     daemon=True, name="final-pass-progress").start()
            self._thread = threading.Thread(target=self._capture, name="capture", daemon=True)
            self._thread.start()
            self._publish({"type": "state", "state": "recording", "recording_id": recording.id})
            return self._store.get_recording(recording.id)

    def pause(self) -> None:
        self._require_recording()
        self.paused = True
        self._publish({"type": "state", "state": "paused", "recording_id": self.recording_id})

    def resume(self) -> None:
        self._require_recording()
        self.paused = False
        self._publish({"type": "state", "state": "recording", "recording_id": self.recording_id})

    def marker(self, note: str = "") -> Marker:
        self._require_recording()
        t = round(self._writer.samples_written / SAMPLE_RATE, 3)
        with self._store.reopen() as store:
            marker = store.add_marker(self.recording_id, t, note)
        self._publish({"type": "marker", **asdict(marker)})
        return marker

    def stop(self, timeout: float = 120.0) -> Recording:
        """Stop, join the audio and queue the final transcription; returns the recording."""
        with self._control:
            if self.state != "recording" or self._thread is None:
                raise NotRecording(N_("nothing is being recorded"))
            self._source.close()
        self._thread.join(timeout)
        return self._finish()

    def wait(self, timeout: float | None = None) -> Recording:
        """Wait for the source to end by itself (a file, a failing device), then finish."""
        if self._thread is None:
            raise NotRecording(N_("nothing is being recorded"))
        self._thread.join(timeout)
        return self._finish()

    @property
    def source(self):
        """The source being recorded (None when idle)."""
        return self._source if self.state == "recording" else None

    @property
    def capturing(self) -> bool:
        """The source is still delivering (False once it ended, failed or was stopped)."""
        return self._thread is not None and self._thread.is_alive()

    def status(self) -> dict:
        recording = self.state == "recording" and self._writer is not None
        # Idle, the page shows 0:00, not the last recording's length.
        seconds = self._writer.samples_written / SAMPLE_RATE if recording else 0.0
        return {"state": "paused" if self.state == "recording" and self.paused else self.state,
                "recording_id": self.recording_id, "seconds": round(seconds, 2),
                "level": {"peak_db": self.level.peak_db, "rms_db": self.level.rms_db},
                "stop_reason": self.stop_reason,
                "final_pass_until": self.final_pass_until if recording else None,
                "notes_until": self.notes_until if recording else None}

    def subscribe(self, deliver: Callable[[dict], None] | None = None) -> queue.Queue | None:
        """Have every event handed to ``deliver`` (called from the capture thread: it must
        not block), or, without one, put into a queue that is returned."""
        events: queue.Queue | None = None
        if deliver is None:
            events = queue.Queue(maxsize=1000)
            deliver = events.put_nowait
        self._subscribers.append(deliver)
        return events

    def unsubscribe(self, subscription: Callable[[dict], None] | queue.Queue) -> None:
        for deliver in list(self._subscribers):
            if deliver == subscription or getattr(deliver, "__self__", None) is subscription:
                self._subscribers.remove(deliver)

    # -- inside ---------------------------------------------------------------------------

    def _require_recording(self) -> None:
        if self.state != "recording":
            raise NotRecording(N_("nothing is being recorded"))

    def _capture(self) -> None:
        last_level = 0.0
        try:
            for block in self._source.frames():
                self.frames_received += block.size
                if self.paused:
                    continue
                self._writer.write(block)
                if self._transcriber is not None:
                    self._transcriber.feed(block)
                self.level = level(block)
                if time.monotonic() - last_level >= 0.1:
                    last_level = time.monotonic()
                    self._publish({"type": "level", "peak_db": self.level.peak_db,
                                   "rms_db": self.level.rms_db,
                                   "seconds": round(self._writer.samples_written / SAMPLE_RATE,
                                                    2)})
        except (DiskFullError, CaptureError) as exc:
            self.stop_reason = Said(N_("recording stopped: %(reason)s"), reason=of_error(exc))
            log.warning("%s", self.stop_reason)
        except Exception as exc:  # keep the audio whatever happened
            self.stop_reason = Said(N_("recording stopped: %(reason)s"),
                                    reason=f"{type(exc).__name__}: {exc}")
            log.exception("capture failed")

    def _finish(self) -> Recording:
        recording_id, store = self.recording_id, self._store
        try:
            if self._transcriber is not None:
                self._transcriber.finish()
            self._stop_ahead()
            try:
                self._writer.close()
                status = finish_capture(store, self.settings, recording_id, "queued",
                                        error=self.stop_reason)
            except DiskFullError as exc:
                reason = Said(N_("%(reason)s; the audio recorded so far is kept in "
                                 "%(folder)s and is joined on the next start once space is "
                                 "free"), reason=self.stop_reason or of_error(exc),
                              folder=str(capture_dir(self.settings, recording_id)))
                store.update_recording(recording_id, status="interrupted", error=reason)
                status = "interrupted"
            self.state = "idle"
            self._publish({"type": "state", "state": "stopped", "recording_id": recording_id,
                           "status": status, "reason": self.stop_reason})
            return store.get_recording(recording_id)
        finally:
            store.close()
            self._lock.release()

    def _watch_ahead(self, recording_id: int, every: float = 2.0) -> None:
        """Tell the page how far the final pass and the summary's notes have got, while this
        recording lasts."""
        with self._store.reopen() as store:
            while self.recording_id == recording_id and self.state == "recording":
                row = store.get_recording(recording_id)
                until, notes = row.final_pass_until or 0.0, row.notes_until or 0.0
                if (until, notes) != (self.final_pass_until, self.notes_until):
                    self.final_pass_until, self.notes_until = until, notes
                    self._publish({"type": "final_pass", "recording_id": recording_id,
                                   "until": until, "notes_until": notes})
                time.sleep(every)

    def _stop_ahead(self) -> None:
        """The final pass ahead ends with the recording: what it decoded is kept."""
        if self._ahead is not None:
            self._ahead.terminate()
            self._ahead.send_signal(signal.SIGCONT)  # held still, it would not act on it
            try:
                self._ahead.wait(10)
            except subprocess.TimeoutExpired:
                self._ahead.kill()
                self._ahead.wait()
            self._ahead = None

    def _on_live(self, live: LiveSegment, profile) -> None:
        segment = finish_segment(live.segment, profile)
        self.live_lags.append(live.lag)
        with self._store.reopen() as store:
            stored = store.append_segment(self.recording_id, segment)
        self._publish({"type": "segment", "recording_id": self.recording_id, "id": stored,
                       "start": segment.start, "end": segment.end, "text": segment.text,
                       "lag": live.lag})

    def _publish(self, event: dict) -> None:
        for deliver in list(self._subscribers):
            try:
                deliver(event)
            except (queue.Full, RuntimeError):  # a full queue, a closed event loop
                pass  # a slow client misses level updates, never blocks capture


def finish_capture(store: Store, settings: Settings, recording_id: int, status: str,
                   error: str | None = None) -> str:
    """Join a recording's segments into its audio file and queue its batch transcription."""
    directory = capture_dir(settings, recording_id)
    settings.audio_dir.mkdir(parents=True, exist_ok=True)
    if storage.is_sealed(directory):
        # Sealed segments are the recording's audio as they are, read as one WAV file
        # (``audio.SealedAudio``): moved, not joined, so a locked box finishes them.
        samples = storage.repair_sealed(directory)
        name = f"{recording_id}.wav{encryption.SUFFIX}"
        os.rename(directory, settings.audio_dir / name)
        fsync_dir(settings.audio_dir)
        fsync_dir(directory.parent)
    else:
        name = f"{recording_id}.wav"
        samples = storage.join(directory, settings.audio_dir / name)
        storage.remove_segments(directory, settings.audio_dir / name)
    store.update_recording(recording_id, audio_file=name, duration=samples / SAMPLE_RATE,
                           status=status, error=error)
    if samples:
        said = store.get_recording(recording_id).speakers
        store.enqueue("transcribe", recording_id,
                      {"language": None, **({"speakers": said} if said else {})})
    else:
        store.update_recording(recording_id, status="failed",
                               error=error or Said(N_("nothing was recorded")))
    return status if samples else "failed"


def recover_interrupted(settings: Settings) -> list[int]:
    """Repair and queue recordings cut off by a crash; safe to call at every start.

    Does nothing while a recording is in progress (the recorder lock is held).  While the box
    is locked, a recording whose row is out of reach (in the main database, or in the
    waiting database of a run before a restart) waits for the unlock."""
    root = settings.data_dir / "capture"
    if not root.is_dir():
        return []
    lock = _RecorderLock(settings)
    try:
        lock.acquire()
    except RecorderBusy:
        return []
    recovered = []
    try:
        with open_store(settings) as store:
            for directory in sorted(root.iterdir()):
                if not directory.name.isdigit():
                    continue
                recording_id = int(directory.name)
                try:
                    store.get_recording(recording_id)
                except RecordingNotFound:
                    if store.waiting:
                        log.info("%s waits for the unlock to be recovered", directory)
                    else:
                        log.error("%s belongs to no recording; left untouched", directory)
                    continue
                try:
                    finish_capture(store, settings, recording_id, "recovered",
                                   error=Said(N_("recovered after an interruption")))
                    recovered.append(recording_id)
                    log.info("recording %s recovered", recording_id)
                except DiskFullError as exc:
                    log.error("recording %s not recovered yet: %s", recording_id, exc)
    finally:
        lock.release()
    return recovered

