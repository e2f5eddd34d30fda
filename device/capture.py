"""Audio sources: the microphone (sounddevice/PortAudio) and a file played at real-time speed.

Both yield 16 kHz mono float32 blocks through the same ``AudioSource.frames()`` interface, so
the recorder, its tests and its benchmark run the same code whatever the source.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

from device import audio
from device.errors import N_, TingjiError

BLOCK_SECONDS = 0.1


class CaptureError(TingjiError):
    """The input failed: no such device, or it stopped delivering audio."""


class AudioSource(Protocol):
    name: str

    def frames(self) -> Iterator[np.ndarray]:
        """16 kHz mono float32 blocks until the source ends or ``close()`` is called."""
        ...

    def close(self) -> None: ...


class FileSource:
    """Plays a file through the capture path at ``speed`` × real time (0 = as fast as read)."""

    def __init__(self, path: Path, speed: float = 1.0, block_seconds: float = BLOCK_SECONDS):
        self.name = f"file:{path}"
        self.samples = audio.decode(Path(path))
        self.speed = speed
        self.block = int(block_seconds * audio.SAMPLE_RATE)
        self._closed = threading.Event()

    def frames(self) -> Iterator[np.ndarray]:
        started = time.monotonic()
        for i, start in enumerate(range(0, self.samples.size, self.block)):
            if self._closed.is_set():
                return
            if self.speed > 0:
                due = started + i * self.block / audio.SAMPLE_RATE / self.speed
                if (wait := due - time.monotonic()) > 0:
                    self._closed.wait(wait)
            yield self.samples[start : start + self.block]

    def close(self) -> None:
        self._closed.set()


class PushSource:
    """Audio another device sends over the network — a phone's or laptop's microphone, from
    the Record page — as numbered chunks of 16-bit PCM, 16 kHz mono.

    A chunk sent again (its answer was lost) is taken once; a chunk after a gap is refused
    with the number expected, so the sender resends from there.  A dropped connection only
    pauses the audio: what arrived is recorded, and the sender resumes where it stopped.
    """

    MAX_CHUNK_BYTES = 2 * audio.SAMPLE_RATE * 2
    """Two seconds at most per chunk."""

    def __init__(self, name: str = "browser"):
        self.name = name
        self.next = 0
        self._blocks: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=600)
        self._lock = threading.Lock()
        self._closed = False

    def push(self, seq: int, pcm: bytes) -> int:
        """Take chunk ``seq``; returns the number of the next chunk wanted."""
        if len(pcm) % 2 or len(pcm) > self.MAX_CHUNK_BYTES:
            raise CaptureError(f"a chunk is 16-bit PCM of at most {self.MAX_CHUNK_BYTES} "
                               f"bytes (this one has {len(pcm)})")
        with self._lock:
            if self._closed:
                raise CaptureError(N_("the recording has stopped"))
            if seq < self.next:
                return self.next  # a resend: already recorded
            if seq > self.next:
                raise ChunkGap(self.next)
            block = audio.from_pcm16(np.frombuffer(pcm, dtype="<i2"))
            try:
                self._blocks.put(block, timeout=5)
            except queue.Full:
                raise CaptureError(N_("the box is not keeping up with the audio sent")) from None
            self.next += 1
            return self.next

    def frames(self) -> Iterator[np.ndarray]:
        while True:
            block = self._blocks.get()
            if block is None:
                return
            yield block

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                try:
                    self._blocks.put(None, timeout=5)
                except queue.Full:  # nobody is reading: nothing waits for the end mark
                    pass


class ChunkGap(CaptureError):
    """A chunk arrived after a gap: the sender must resend from ``expected``."""

    def __init__(self, expected: int):
        super().__init__(f"chunk {expected} is the next one wanted")
        self.expected = expected


def input_devices() -> list[tuple[int, str]]:
    import sounddevice as sd

    return [(i, d["name"]) for i, d in enumerate(sd.query_devices())
            if d["max_input_channels"] > 0]


class MicrophoneSource:
    """A sounddevice InputStream (16-bit, as microphones deliver), resampled to 16 kHz mono
    when the card cannot do it."""

    def __init__(self, device: str | int | None = None, block_seconds: float = BLOCK_SECONDS,
                 stall_seconds: float = 2.0):
        try:
            import sounddevice as sd
        except OSError as exc:  # PortAudio missing
            raise CaptureError(f"no audio input available ({exc}); install libportaudio2") from exc
        self._sd = sd
        try:
            info = sd.query_devices(device, "input")
        except (ValueError, sd.PortAudioError) as exc:
            choices = ", ".join(f"{i}: {name}" for i, name in input_devices()) or "none"
            raise CaptureError(f"no input device {device!r} ({exc}); input devices: {choices}") \
                from exc
        self.device = device if device is not None else info["name"]
        self.name = f"mic:{info['name']}"
        try:
            sd.check_input_settings(device, samplerate=audio.SAMPLE_RATE, channels=1,
                                    dtype="int16")
            self.rate = audio.SAMPLE_RATE
        except (ValueError, sd.PortAudioError):
            self.rate = int(info["default_samplerate"])
        self.block = int(block_seconds * self.rate)
        self.stall_seconds = stall_seconds
        self.overflows = 0
        self._closed = threading.Event()

    def frames(self) -> Iterator[np.ndarray]:
        blocks: queue.Queue[np.ndarray | None] = queue.Queue()

        def callback(indata, frames, when, status) -> None:
            if status.input_overflow:
                self.overflows += 1
            blocks.put(audio.from_pcm16(indata[:, 0]))

        resampler = None
        if self.rate != audio.SAMPLE_RATE:
            import av

            resampler = av.AudioResampler(format="flt", layout="mono", rate=audio.SAMPLE_RATE)
        try:
            stream = self._sd.InputStream(
                device=self.device, samplerate=self.rate, channels=1, dtype="int16",
                blocksize=self.block, callback=callback,
                finished_callback=lambda: blocks.put(None),
            )
        except self._sd.PortAudioError as exc:
            raise CaptureError(f"cannot open input {self.name}: {exc}") from exc
        with stream:
            while not self._closed.is_set():
                try:
                    block = blocks.get(timeout=self.stall_seconds)
                except queue.Empty:
                    raise CaptureError(f"input {self.name} stopped delivering audio "
                                       f"(unplugged?)") from None
                if block is None:
                    if self._closed.is_set():
                        return
                    raise CaptureError(f"input {self.name} stopped (device gone?)")
                yield block if resampler is None else _resample(resampler, block, self.rate)

    def close(self) -> None:
        self._closed.set()


def _resample(resampler, block: np.ndarray, rate: int) -> np.ndarray:
    import av

    frame = av.AudioFrame.from_ndarray(block[None, :], format="flt", layout="mono")
    frame.sample_rate = rate
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def open_source(spec: str, device: str | None = None, speed: float = 1.0) -> AudioSource:
    """'mic' (optionally with a device name or index) or 'file:PATH'."""
    if spec.startswith("file:"):
        return FileSource(Path(spec[5:]), speed=speed)
    if spec == "mic":
        chosen: str | int | None = device
        if isinstance(device, str) and device.isdigit():
            chosen = int(device)
        return MicrophoneSource(chosen)
    raise CaptureError(f"unknown source {spec!r}; use mic or file:PATH")
