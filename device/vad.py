"""Voice activity detection with the Silero model that ships inside faster-whisper.

The detector runs on the best onnxruntime execution provider the hardware profile found
(an NPU provider where one is present, else the CPU) and turns speech probabilities into
speech chunks with a small hysteresis state machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from faster_whisper.utils import get_assets_path
from faster_whisper.vad import SileroVADModel

from device.audio import SAMPLE_RATE

WINDOW = 512  # samples per Silero probability (32 ms at 16 kHz)


@dataclass(frozen=True)
class VadOptions:
    threshold: float = 0.5
    """A window with speech probability at or above this starts or continues speech."""
    neg_threshold: float = 0.35
    """Below this a window counts as silence; between the two, the state is kept."""
    min_speech_ms: int = 250
    """Shorter bursts (clicks, coughs) are dropped."""
    min_silence_ms: int = 400
    """A pause this long ends a chunk."""
    speech_pad_ms: int = 300
    """Each chunk is widened by this much on both sides so word edges are not clipped."""
    max_speech_s: float = 29.0
    """Longer speech is split at its last pause (Whisper sees 30 s at a time)."""


@dataclass(frozen=True)
class SpeechChunk:
    start: int
    """First sample."""
    end: int
    """One past the last sample."""

    @property
    def start_s(self) -> float:
        return self.start / SAMPLE_RATE

    @property
    def end_s(self) -> float:
        return self.end / SAMPLE_RATE


class _SileroSession(SileroVADModel):
    """faster-whisper's Silero wrapper, with the execution providers chosen by us."""

    def __init__(self, providers: tuple[str, ...]):
        import onnxruntime

        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        opts.enable_cpu_mem_arena = False
        opts.log_severity_level = 4
        self.session = onnxruntime.InferenceSession(
            os.path.join(get_assets_path(), "silero_vad_v6.onnx"),
            providers=list(providers),
            sess_options=opts,
        )


class SpeechDetector:
    """Finds the speech in audio.

        >>> detector = SpeechDetector()
        >>> detector.speech_chunks(np.zeros(16000, dtype=np.float32))
        []
    """

    def __init__(
        self,
        providers: tuple[str, ...] = ("CPUExecutionProvider",),
        options: VadOptions | None = None,
    ):
        self.options = options or VadOptions()
        self._model = _SileroSession(providers)

    @property
    def providers(self) -> list[str]:
        return self._model.session.get_providers()

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        """Speech probability for every 512-sample window."""
        if audio.size == 0:
            return np.zeros(0, dtype=np.float32)
        padded = np.pad(audio, (0, (-audio.size) % WINDOW))
        return np.asarray(self._model(padded), dtype=np.float32).reshape(-1)

    def speech_chunks(self, audio: np.ndarray) -> list[SpeechChunk]:
        return chunks_from_probabilities(self.probabilities(audio), audio.size, self.options)


class SpeechStream:
    """The detector's probabilities of audio that arrives in pieces (a recording as it is
    made), the same as ``SpeechDetector.probabilities`` gives over the whole of it: the
    model's state and each window's context carry over from piece to piece.

        >>> stream = SpeechStream(SpeechDetector())
        >>> stream.feed(np.zeros(1000, dtype=np.float32)); stream.probabilities().size
        1
        >>> stream.settled()
        []
    """

    CONTEXT = 64  # samples of the window before that Silero reads with each window

    def __init__(self, detector: SpeechDetector):
        self.detector = detector
        self._state = np.zeros((2, 1, 1, 128), dtype=np.float32)
        self._context = np.zeros(self.CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._probabilities: list[np.ndarray] = []
        self.samples = 0
        """Samples fed so far."""

    def feed(self, samples: np.ndarray) -> None:
        self.samples += samples.size
        self._pending = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
        whole = self._pending.size // WINDOW * WINDOW
        if whole:
            self._run(self._pending[:whole].reshape(-1, WINDOW))
            self._pending = self._pending[whole:]

    def _run(self, windows: np.ndarray) -> None:
        contexts = np.concatenate([self._context[None, :], windows[:-1, -self.CONTEXT:]])
        self._context = windows[-1, -self.CONTEXT:].copy()
        batch = np.concatenate([contexts, windows], axis=1)
        output, h, c = self.detector._model.session.run(
            None, {"input": batch, "h": self._state[0], "c": self._state[1]})
        self._state = np.stack([h, c])
        self._probabilities.append(np.asarray(output, dtype=np.float32).reshape(-1))

    def probabilities(self) -> np.ndarray:
        """Of every whole 512-sample window so far."""
        return (np.concatenate(self._probabilities) if self._probabilities
                else np.zeros(0, dtype=np.float32))

    def settled(self) -> list[SpeechChunk]:
        """The speech chunks no audio still to come can change (``settled_chunks``)."""
        return settled_chunks(self.probabilities(), self.detector.options)


def settled_chunks(probs: np.ndarray, options: VadOptions) -> list[SpeechChunk]:
    """The chunks of audio still arriving (``probs``: of its whole 512-sample windows so far)
    that no audio after it can change: the chunks ``chunks_from_probabilities`` gives for
    the whole recording begin with these, however it goes on.

    All but the last: what comes later changes a chunk only by continuing its speech or by
    merging with it (the next speech's padding reaching back into it), and only the last
    chunk can be continued or reached (the chunks before it are closed, and merged already
    where they overlap).
    """
    return chunks_from_probabilities(probs, probs.size * WINDOW, options)[:-1]


def first_pause(probs: np.ndarray, after: int, shortest_ms: int,
                options: VadOptions) -> tuple[int, int] | None:
    """The first pause of at least ``shortest_ms`` that begins at or after sample
    ``after`` (one under way there counts from there), as (its first sample, one past the
    last of it heard so far), or None.  Shorter than the pause that ends a chunk: where a
    speaker who does not stop draws breath.

        >>> probs = np.array([0.9] * 10 + [0.1] * 4 + [0.9] * 3 + [0.1] * 8, dtype=np.float32)
        >>> first_pause(probs, 0, 100, VadOptions())
        (5120, 7168)
        >>> first_pause(probs, 0, 200, VadOptions())  # the first's 4 windows are 128 ms
        (8704, 12800)
        >>> first_pause(probs, 0, 300, VadOptions()) is None
        True
    """
    shortest = -(-shortest_ms * SAMPLE_RATE // 1000 // WINDOW)  # in whole windows
    quiet = np.flatnonzero(probs < options.neg_threshold)
    quiet = quiet[quiet * WINDOW >= after]
    if quiet.size < shortest:
        return None
    # runs of consecutive quiet windows: where the index jumps, a new one begins
    breaks = np.flatnonzero(np.diff(quiet) > 1)
    starts = np.concatenate([quiet[:1], quiet[breaks + 1]])
    ends = np.concatenate([quiet[breaks], quiet[-1:]]) + 1
    long_enough = np.flatnonzero(ends - starts >= shortest)
    if not long_enough.size:
        return None
    first = long_enough[0]
    return int(starts[first]) * WINDOW, int(ends[first]) * WINDOW


def chunks_from_probabilities(
    probs: np.ndarray, length: int, options: VadOptions
) -> list[SpeechChunk]:
    """Hysteresis over window probabilities -> padded, non-overlapping speech chunks."""
    ms = SAMPLE_RATE // 1000
    min_silence = options.min_silence_ms * ms
    min_speech = options.min_speech_ms * ms
    pad = options.speech_pad_ms * ms
    max_speech = int(options.max_speech_s * SAMPLE_RATE) - 2 * pad
    raw: list[tuple[int, int]] = []
    start: int | None = None
    silence_from: int | None = None
    last_pause: int | None = None  # start of the latest pause of >= 100 ms in this chunk

    def close(end: int) -> None:
        if end - start >= min_speech:
            raw.append((start, end))

    for i, p in enumerate(probs):
        t = i * WINDOW
        if start is None:
            if p >= options.threshold:
                start, silence_from, last_pause = t, None, None
            continue
        if p < options.neg_threshold:
            if silence_from is None:
                silence_from = t
            if t + WINDOW - silence_from >= min_silence:
                close(silence_from)
                start = None
                continue
            if t + WINDOW - silence_from >= 100 * ms:
                last_pause = silence_from
        elif p >= options.threshold:
            silence_from = None
        if t + WINDOW - start > max_speech:
            cut = last_pause if last_pause and last_pause > start else t
            close(cut)
            start, silence_from, last_pause = cut, None, None
    if start is not None:
        close(silence_from if silence_from is not None else min(len(probs) * WINDOW, length))

    chunks: list[SpeechChunk] = []
    for s, e in raw:
        s, e = max(0, s - pad), min(length, e + pad)
        if chunks and s <= chunks[-1].end:
            previous = chunks.pop()
            if e - previous.start <= max_speech + 2 * pad:
                chunks.append(SpeechChunk(previous.start, e))
                continue
            s = previous.end
            chunks.append(previous)
        chunks.append(SpeechChunk(s, e))
    return chunks
