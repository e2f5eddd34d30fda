"""Ready at stop: the final pass runs while a recording is being made.

The recorder starts ``python -m device.ready RECORDING_ID`` beside itself, at idle priority
(``SCHED_IDLE``: it runs only on CPU time nothing else wants, so the live transcript and
the capture never wait for a core), and holds it still while the live transcript decodes an
utterance (``held_still``).  It reads the recording's segment files as they fill (audio
already on disk), finds the speech in them with the same detector state as over the whole
file (``vad.SpeechStream``), and decodes each window of speech once no later audio can
change it (its chunks settled, and the next chunk beyond it): the same recogniser, options
and auto-mode decisions the transcription after stop uses, each window kept in the
database under a key naming everything its decoding depended on
(``recognize.memo``).  After stop the transcription takes the kept windows and decodes only
the rest (the last windows, the speech a first pass lost, and any window whose decoding
would differ), so its transcript is the one a pass over the whole file gives.  Whenever
it has caught up, it reads the final transcript's finished chunks into the summary's notes
(``device.notes_ahead``).

Killed with the box, what it kept stays kept, and the transcription after recovery takes it.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from device import encryption, storage
from device.audio import SAMPLE_RATE, from_pcm16
from device.databases import open_store
from device.settings import ENV_PREFIX, Settings
from device.store import Store
from device.vad import SpeechChunk, SpeechStream

log = logging.getLogger("tingji.ready")

POLL_SECONDS = 2.0
"""How often the recording's files are read for new audio."""
AHEAD_MAX_SECONDS = 2 * 3600.0
"""The final pass during a recording holds the recording's audio so far in memory (``Held``:
115 MB an hour, and a copy of a block's speech while it decodes): beyond this it stops,
keeping what it decoded, and the rest is decoded after stop, so the box stays within its
3 GB."""


class StoredWindows:
    """A recording's windows decoded ahead, kept in its database (``WindowMemo``)."""

    def __init__(self, store: Store, recording_id: int):
        self.store, self.recording_id = store, recording_id
        self.kept = 0

    def get(self, key: str) -> dict | None:
        return self.store.decoded_window(self.recording_id, key)

    def put(self, key: str, value: dict) -> None:
        self.store.keep_decoded_window(self.recording_id, key, value)
        self.kept += 1


class CaptureReader:
    """The samples of a recording in progress, as far as its segment files hold them, read
    on from where the last read ended; sealed segments (an encrypted box) with the
    recording's ``key``, their plaintext kept in memory only."""

    def __init__(self, directory: Path, key: bytes | None = None):
        self.directory = directory
        self.key = key
        self._index = 0  # of the segment file being read
        self._offset = 0 if key else storage.HEADER_BYTES  # records, or bytes

    def read(self) -> np.ndarray:
        """The 16-bit samples written since the last read."""
        pieces = self._read_sealed() if self.key else self._read_plain()
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype="<i2")

    def _read_sealed(self) -> list[np.ndarray]:
        from device.sealedlog import SealedLogReader
        from device.vault import SealedFileError

        pieces = []
        while True:
            files = storage.segment_files(self.directory, storage.SEALED_SUFFIX)
            if self._index >= len(files):
                break
            try:
                with SealedLogReader([files[self._index]], self.key) as log:
                    pieces += [np.frombuffer(r, dtype="<i2")
                               for r in log.records(self._offset)]
                    self._offset = len(log)
            except SealedFileError:  # just created (no header yet), or damaged: not read on
                break
            if self._index + 1 >= len(files):
                break
            self._index, self._offset = self._index + 1, 0
        return pieces

    def _read_plain(self) -> list[np.ndarray]:
        pieces = []
        while True:
            files = storage.segment_files(self.directory)
            if self._index >= len(files):
                break
            with open(files[self._index], "rb") as segment:
                segment.seek(self._offset)
                data = segment.read()
            whole = len(data) // storage.SAMPLE_BYTES * storage.SAMPLE_BYTES
            pieces.append(np.frombuffer(data[:whole], dtype="<i2"))
            self._offset += whole
            if self._index + 1 >= len(files):
                break  # the segment being written: read on from here next time
            self._index, self._offset = self._index + 1, storage.HEADER_BYTES
        return pieces


class Held:
    """The recording so far, held as its segment files hold it (16-bit samples, half the
    memory of float32) and read a slice at a time as float32 (``audio.from_pcm16``): the final
    pass only ever slices the recording (its windows, and its size).  The
    buffer is allocated once for ``AHEAD_MAX_SECONDS``; its pages are the kernel's zeroed
    ones until written, so only what was recorded is resident, and no read copies what came
    before (a copy per read held the audio twice, for a moment)."""

    def __init__(self, seconds: float):
        self._samples = np.zeros(int(seconds * SAMPLE_RATE), dtype="<i2")
        self.size = 0

    def holds(self, more: int) -> bool:
        return self.size + more <= self._samples.size

    def append(self, samples: np.ndarray) -> None:
        """16-bit samples, as ``CaptureReader`` reads them."""
        self._samples[self.size : self.size + samples.size] = samples
        self.size += samples.size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key: slice) -> np.ndarray:
        return from_pcm16(self._samples[: self.size][key])


class VoiceWindows:
    """The voice windows of the decided speech embedded for the speakers, once each, kept
    with the decoded windows (``speakers.diarize.embeddings``): after stop the speakers
    are found from them and the tail's."""

    def __init__(self, settings: Settings, engines, memo: StoredWindows):
        self.wanted, self.engines, self.memo = settings.diarize, engines, memo
        self.done: set[tuple[int, int]] = set()

    def embed(self, audio: np.ndarray, chunks: list[SpeechChunk]) -> None:
        from device.speakers.diarize import embeddings, windows
        from models.store import ModelError

        spans = [span for span in windows(chunks) if span not in self.done]
        if not (self.wanted and spans):
            return
        try:
            encoder = self.engines.speaker_encoder()
        except ModelError as exc:  # the transcription after stop says so
            log.warning("no speakers during the recording: %s", exc)
            self.wanted = False
            return
        embeddings(encoder, audio, spans, self.memo, keep=True)
        self.done.update(spans)


@dataclass
class Ahead:
    """How far the final pass has got: seconds of the recording, and what it kept (decoded
    windows, auto mode's language detections and trials)."""

    seconds: float = 0.0
    kept: int = 0
    notes: int = 0
    """Chunks of the final transcript read into the summary's notes."""


def decidable(chunks: list[SpeechChunk]) -> list[SpeechChunk]:
    """The settled chunks whose windows are decided: every window of the first pass but the
    last, which the next chunk may still join (windows are packed greedily from the start,
    so the first ones are those of the whole recording)."""
    from device.recognize import Timeline

    return Timeline(chunks).settled()


def run(settings: Settings, recording_id: int, engines=None,
        recording: Callable[[], bool] | None = None, poll: float = POLL_SECONDS) -> Ahead:
    """Decode the recording's decided windows as they come, until it is no longer being
    recorded (``recording``; by default: its status in the database)."""
    from device.jobs import load_engines
    from device.notes_ahead import NotesAhead
    from device.pipeline import Heard, Track, recognize_tracks, recording_terms, select_profile
    from device.recorder import capture_dir

    engines = engines or load_engines(settings)
    store = open_store(settings)
    memo = StoredWindows(store, recording_id)
    progress = Ahead()
    notes = None
    try:
        still = recording or (lambda: store.get_recording(recording_id).status == "recording")
        directory = capture_dir(settings, recording_id)
        key = None
        while encryption.enabled(settings) and key is None:  # sealed as it is recorded
            try:
                key = encryption.data_key(settings, recording_id)
            except encryption.BoxLocked:  # the final pass starts once the box is unlocked
                if not still():
                    return progress
                time.sleep(poll)
        reader, stream = CaptureReader(directory, key), SpeechStream(engines.detector)
        audio = Held(AHEAD_MAX_SECONDS)
        notes = NotesAhead(settings, store, recording_id)
        voices = VoiceWindows(settings, engines, memo)
        transcript, language = [], None  # the final transcript so far
        while still():
            new = reader.read()
            if not audio.holds(new.size):
                log.info("recording %s: %.0f s recorded, the rest of its final pass waits for "
                         "the stop", recording_id, (audio.size + new.size) / SAMPLE_RATE)
                break
            audio.append(new)
            stream.feed(from_pcm16(new))
            chunks = decidable(stream.settled())
            if not chunks or chunks[-1].end_s <= progress.seconds:
                # the final pass has caught up: the summary's notes on what it finished
                if notes.advance(transcript, language):
                    progress.notes = notes.taken
                else:
                    time.sleep(poll)
                continue
            # as the transcription after stop will decode it (the same profile and terms)
            recording_row = store.get_recording(recording_id)
            profile = select_profile(settings, recording_row.profile)
            with engines.remembering(memo):
                final = recognize_tracks(engines, settings, [Heard(Track(audio, None), chunks)],
                                         profile, recording_terms(store, recording_row),
                                         recording_row.script, ahead=True)
            transcript, language = final.segments, final.language
            voices.embed(audio, chunks)
            progress.seconds, progress.kept = chunks[-1].end_s, memo.kept
            store.update_recording(recording_id, final_pass_until=round(progress.seconds, 2))
        return progress
    finally:
        if notes is not None:
            notes.close()
        store.close()


def start(settings: Settings, recording_id: int):
    """The final pass of a recording beginning now, in a process of its own
    (``final_pass_process``)."""
    import subprocess

    # the same settings as this process, whatever they came from
    env = {**os.environ, **{ENV_PREFIX + f.name.upper(): str(getattr(settings, f.name))
                            for f in fields(settings)}}
    return subprocess.Popen([sys.executable, "-m", "device.ready", str(recording_id)],
                            env=env, preexec_fn=final_pass_process(), stdin=subprocess.DEVNULL)


def final_pass_process() -> Callable[[], None]:
    """The ``preexec_fn`` of the final pass's process: at idle priority, and dying with
    this process, killed (SIGKILL): it may be held still (``held_still``) when this one
    dies, and a process held still acts on no other signal.  What it kept stays kept, as
    after a power cut."""
    from device.libc import die_with_parent

    parent_dies = die_with_parent(signal.SIGKILL)

    def idle() -> None:
        parent_dies()
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except (AttributeError, OSError):
            os.nice(19)

    return idle


@contextmanager
def held_still(process) -> Iterator[None]:
    """The final pass's ``process`` (a ``subprocess.Popen``, or None) stopped (SIGSTOP)
    while the body runs, and let go on after.  Idle priority gives the live transcript
    every core it asks for, but not the memory and caches both share: on 2 cores the
    notes model writing a token reads its ~1 GB of weights, and the live lag of the
    utterances decoded meanwhile rose by up to 2 s (docs/benchmarks.md)."""
    if process is None or process.poll() is not None:
        yield
        return
    try:
        process.send_signal(signal.SIGSTOP)
    except ProcessLookupError:  # it ended meanwhile
        pass
    try:
        yield
    finally:
        try:
            process.send_signal(signal.SIGCONT)
        except ProcessLookupError:
            pass


def main(argv: list[str] | None = None) -> int:
    [recording_id] = argv if argv is not None else sys.argv[1:]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    progress = run(Settings.load(), int(recording_id))
    log.info("recording %s: final pass ahead up to %.1f s (%d decodings kept, notes on %d "
             "chunks)", recording_id, progress.seconds, progress.kept, progress.notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
