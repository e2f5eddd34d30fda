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
