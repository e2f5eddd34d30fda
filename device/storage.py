"""Crash-safe audio storage for recordings in progress.

Audio goes to disk as it arrives, in short numbered WAV segment files under
``DATA_DIR/capture/<recording id>/``: every block is written to the file at once (a killed
process loses only what it had not yet been handed) and fsync'd at least every
``fsync_interval`` seconds (a power cut loses at most that much).  A segment's WAV header
is completed when the segment is closed; after a crash ``repair`` rebuilds headers from
the file sizes.  ``join`` concatenates the segments, sample for sample, into the
recording's audio file.  Nothing here ever deletes audio that is not also in the joined
file.
"""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import numpy as np

from device.audio import SAMPLE_RATE, durable_file, fsync_dir
from device.errors import DiskFullError, is_disk_full

HEADER_BYTES = 44
SAMPLE_BYTES = 2
SEGMENT_SUFFIX = ".wav"
SEALED_SUFFIX = ".sealed"
"""A segment of a recording on an encrypted box: a sealed log (``device.sealedlog``) of
its raw samples, one record per block written."""


def wav_header(data_bytes: int, sample_rate: int = SAMPLE_RATE) -> bytes:
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate,
                                    sample_rate * SAMPLE_BYTES, SAMPLE_BYTES, 16)
            + b"data" + struct.pack("<I", data_bytes))


def to_pcm(samples: np.ndarray) -> bytes:
    return (np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2")).tobytes()


def _disk_error(exc: OSError, what: str) -> Exception:
    if is_disk_full(exc):
        return DiskFullError(f"no space left while {what}: {os.strerror(exc.errno)}")
    return exc


class SegmentWriter:
    """Appends 16 kHz mono audio to numbered segment files; survives kill -9 and power cuts."""

    def __init__(self, directory: Path, segment_seconds: float = 10.0,
                 fsync_interval: float = 0.5, trace: Path | None = None,
                 data_key: bytes | None = None):
        """``data_key``: seal the segments with it (an encrypted box): each block is one
        record of a sealed log, handed to the kernel at once like the plain samples."""
        self.directory = directory
        self._key = data_key
        self._log = None
        self._suffix = SEALED_SUFFIX if data_key else SEGMENT_SUFFIX
        self.segment_samples = int(segment_seconds * SAMPLE_RATE)
        self.fsync_interval = fsync_interval
        self.samples_written = 0
        self._trace = trace  # tests: where each fsync'd size is noted (to simulate power cuts)
        self._fd: int | None = None
        self._index = (len(segment_files(directory, self._suffix))
                       if directory.exists() else 0)
        self._in_segment = 0
        self._last_sync = time.monotonic()
        directory.mkdir(parents=True, exist_ok=True)

    def write(self, samples: np.ndarray) -> None:
        try:
            while samples.size:
                if self._fd is None:
                    self._open_next()
                room = self.segment_samples - self._in_segment
                part, samples = samples[:room], samples[room:]
                if self._log is not None:
                    self._log.append(to_pcm(part))
                else:
                    os.write(self._fd, to_pcm(part))
                self._in_segment += part.size
                self.samples_written += part.size
                if self._in_segment >= self.segment_samples:
                    self._close_segment()
            if self._fd is not None and time.monotonic() - self._last_sync >= self.fsync_interval:
                self._sync()
        except OSError as exc:
            raise _disk_error(exc, f"recording to {self.directory}") from exc

    def close(self) -> None:
        try:
            if self._fd is not None:
                self._close_segment()
        except OSError as exc:
            raise _disk_error(exc, f"closing {self.directory}") from exc

    def _open_next(self) -> None:
        self._index += 1
        path = self.directory / f"{self._index:05d}{self._suffix}"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        if self._key is not None:
            from device.sealedlog import SealedLogWriter

            self._log = SealedLogWriter(self._fd, self._key)
        else:
            os.write(self._fd, wav_header(0))
        self._in_segment = 0
        os.fsync(self._fd)
        fsync_dir(self.directory)  # the new file's name must survive a power cut too
        self._note(path)

    def _sync(self) -> None:
        os.fsync(self._fd)
        self._last_sync = time.monotonic()
        self._note(self.directory / f"{self._index:05d}{self._suffix}")

    def _close_segment(self) -> None:
        if self._log is None:  # a sealed log needs no header: its records say their length
            os.pwrite(self._fd, wav_header(self._in_segment * SAMPLE_BYTES), 0)
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd, self._log = None, None
        self._last_sync = time.monotonic()
        self._note(self.directory / f"{self._index:05d}{self._suffix}")

    def _note(self, path: Path) -> None:
        if self._trace is not None:
            with open(self._trace, "a") as trace:
                trace.write(f"{path.name} {path.stat().st_size}\n")


def segment_files(directory: Path, suffix: str = SEGMENT_SUFFIX) -> list[Path]:
    return sorted(p for p in directory.glob(f"*{suffix}") if p.stem.isdigit())


def is_sealed(directory: Path) -> bool:
    """Whether a recording's segments are sealed logs."""
    return bool(segment_files(directory, SEALED_SUFFIX))


def repair_sealed(directory: Path) -> int:
    """``repair`` for sealed segments: a record a crash cut short is cut off (no key needed);
    returns the samples they hold."""
    from device.sealedlog import repair_log

    return sum(repair_log(path) for path in segment_files(directory, SEALED_SUFFIX)
               ) // SAMPLE_BYTES


def repair(directory: Path) -> int:
    """Make every segment a valid WAV whose header matches its data; returns total samples.

    Idempotent; only a trailing half sample (a torn write) is ever cut off.
    """
    total = 0
    for path in segment_files(directory):
        size = path.stat().st_size
        if size < HEADER_BYTES:  # created but its header never reached the disk
            with open(path, "r+b" if size else "wb") as f:
                f.truncate(0)
                f.write(wav_header(0))
                os.fsync(f.fileno())
            continue
        data = (size - HEADER_BYTES) // SAMPLE_BYTES * SAMPLE_BYTES
        with open(path, "r+b") as f:
            if HEADER_BYTES + data != size:
                f.truncate(HEADER_BYTES + data)
            f.seek(0)
            if f.read(HEADER_BYTES) != wav_header(data):
                f.seek(0)
                f.write(wav_header(data))
            os.fsync(f.fileno())
        total += data // SAMPLE_BYTES
    return total


def join(directory: Path, destination: Path) -> int:
    """Concatenate the segments' samples into one WAV (written aside, then renamed)."""
    total = repair(directory)
    try:
        with durable_file(destination) as out:
            out.write(wav_header(total * SAMPLE_BYTES))
            for path in segment_files(directory):
                with open(path, "rb") as segment:
                    segment.seek(HEADER_BYTES)
                    while block := segment.read(1 << 20):
                        out.write(block)
    except OSError as exc:
        raise _disk_error(exc, f"joining {directory}") from exc
    return total


def remove_segments(directory: Path, joined: Path) -> None:
    """Delete the segments once the joined file holds every one of their samples."""
    expected = sum((p.stat().st_size - HEADER_BYTES) // SAMPLE_BYTES
                   for p in segment_files(directory))
    if (joined.stat().st_size - HEADER_BYTES) // SAMPLE_BYTES != expected:
        raise RuntimeError(f"{joined} does not hold all of {directory}; segments kept")
    for path in segment_files(directory):
        path.unlink()
    try:
        directory.rmdir()
    except OSError:
        pass  # something else was left there: keep it
