"""Speech recognition behind a small interface, and its faster-whisper implementation.

The recogniser is handed the audio and the speech chunks the VAD found.  The Whisper
implementation packs the speech (silence removed) into 30-second windows, decodes them side
by side, maps every time back onto the recording, and drops the text Whisper is known to
invent on noise and in repetition loops.

Rooms: ``timeline`` (where speech lies, windows), ``cleanup`` (guards against invented
text), ``sentences``, ``retry`` (which windows are decoded again), ``languages`` (script and
language decisions), ``_faster_whisper`` (the only module touching faster-whisper's
internals), ``whisper`` (the orchestration).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Protocol

import numpy as np

from device.records import Segment
from device.vad import SpeechChunk


@dataclass(frozen=True)
class RecognitionOptions:
    language: str | None = None
    """Whisper language code, or None to detect it."""
    initial_prompt: str | None = None
    """Text in the speakers' own written form; steers vocabulary, script and dialect."""
    hotwords: str | None = None
    word_timestamps: bool = True
    """Needed for sentence segments and for finding speech a window dropped; the live
    transcript goes without them."""
    recover_lost: bool = True
    """Decode again the speech in which a first pass heard no word (needs word times)."""
    ahead: bool = False
    """The final pass during a recording: of the speech lost, only the windows no speech
    lost later can change are decoded again (the rest after stop)."""
    beam_size: int = 5
    """1 = greedy: faster, and more or less accurate by CPU (docs/benchmarks.md)."""
    retry_beam_size: int | None = None
    """A window whose decoding fails Whisper's own tests (text too repetitive to be speech,
    or too unlikely) is decoded again with this beam, and the likelier text kept; a smaller
    beam is only asked after a loop.  None: the other decoder (greedy after a beam, a beam
    of 5 after greedy), since a beam and greedy decoding seldom loop on the same window;
    ``beam_size``: no retry.  (Whisper itself retries at higher temperatures.)"""
    log_prob_threshold: float = -1.0
    """Whisper's test for text too unlikely to be what was said (mean token log-prob)."""
    compression_ratio_threshold: float = 2.4
    """Whisper's loop test: text that compresses better than this is not speech."""
    batch_size: int = 1
    """Windows one decoder decodes together; there is a decoder per thread."""
    tokens_per_second: float | None = None
    """At most this many tokens per second of a window's speech (and 16 more) are written:
    a loop ("小小小…") ends there instead of at Whisper's 448 tokens, and is dropped as one
    (real speech here: at most ~8 a second).  None: only Whisper's own limit."""
    prompts: tuple[tuple[float, str | None], ...] = ()
    """(start, prompt) in seconds of the recording, in time order: a window whose speech
    starts at or after a start (and before the next) is decoded with that prompt instead of
    ``initial_prompt`` (auto mode's variety per window)."""
    languages: tuple[str, ...] = ()
    """With ``language`` None: the languages auto mode found in the recording, most likely
    first.  The first starts the decoding; every window is decoded in the language Whisper
    ranks first in it, or, when that is not one of these, the first of these in its script
    (a recording of one language is decoded in it but for what is said in another
    script).  A segment written in another script than its window's language is named by
    the window's own detection when one language of that script stands out there, else by
    the first of these in that script; only when neither names one is its language
    detected on its own audio (an encoder pass)."""

    def prompt_at(self, seconds: float) -> str | None:
        """The prompt for a window whose speech starts at ``seconds`` of the recording."""
        prompt = self.initial_prompt
        for start, text in self.prompts:
            if start > seconds + 1e-3:
                break
            prompt = text
        return prompt

    def then(self, start: float, options: RecognitionOptions) -> RecognitionOptions:
        """These options, with the prompts of ``options`` from ``start`` (seconds of the
        recording) on: a stretch of speech decoded with its own after these."""
        return replace(self, prompts=(*self.prompts, (start, options.initial_prompt),
                                      *options.prompts))

    def draft(self) -> RecognitionOptions:
        """These options for a quick draft: a single greedy pass, no second try of a looped
        window (the guards drop the loop) and no second look at the speech a window lost."""
        return replace(self, beam_size=1, retry_beam_size=1, recover_lost=False)

    @property
    def retry_beam(self) -> int:
        if self.retry_beam_size is not None:
            return self.retry_beam_size
        return 1 if self.beam_size > 1 else 5


@dataclass(frozen=True, slots=True)
class Decoding:
    """One decoding run of a pass: its beam, its windows, and how many of the pass's
    windows had been judged when it started (a retry starts while the pass goes on)."""

    beam_size: int
    windows: int
    judged_before: int


@dataclass(frozen=True, slots=True)
class Pass:
    """One pass over speech chunks: the first over all of them, or one over the speech a
    pass before lost (``packed`` together, or each run ``alone``)."""

    kind: str
    """first, packed or alone."""
    chunks: tuple[SpeechChunk, ...]
    windows: int
    decodings: tuple[Decoding, ...]
    retried: int
    """Windows that failed Whisper's tests and were decoded again."""
    missed: tuple[SpeechChunk, ...]
    """Chunks in which this pass heard no word."""


@dataclass(frozen=True, slots=True)
class PassReport:
    """What one transcription asked of the model; benchmarks and tests read it instead of
    watching private methods."""

    passes: tuple[Pass, ...] = ()
    encoder_passes: int = 0
    """Windows run through the encoder (kept encodings reused are not counted)."""
    language_detections: int = 0
    """Decoder runs that detected a window's language."""
    windows_taken: int = 0
    """Windows taken as they were decoded ahead (``WhisperRecognizer.memo``), not decoded."""

    @property
    def windows(self) -> int:
        return sum(p.windows for p in self.passes)

    @property
    def retries(self) -> int:
        return sum(p.retried for p in self.passes)

    @property
    def beam_size(self) -> int | None:
        decoded = [d for p in self.passes for d in p.decodings]
        return decoded[0].beam_size if decoded else None

    def as_dict(self) -> dict:
        return {
            "passes": [{"kind": p.kind, "chunks": len(p.chunks), "windows": p.windows,
                        "retried": p.retried, "missed": len(p.missed),
                        "decodings": [asdict(d) for d in p.decodings]} for p in self.passes],
            "windows": self.windows, "retries": self.retries, "beam_size": self.beam_size,
            "encoder_passes": self.encoder_passes,
            "language_detections": self.language_detections,
            "windows_taken": self.windows_taken,
        }


class Recognizer(Protocol):
    model_id: str
    report: PassReport
    """What the last ``transcribe`` asked of the model (complete once it is exhausted)."""
    memo: object | None
    """Where windows decoded ahead are kept and taken from (``recognize.memo``)."""

    def transcribe(
        self, audio: np.ndarray, speech: Sequence[SpeechChunk], options: RecognitionOptions
    ) -> Iterator[Segment]:
        """Yield segments; times are seconds from the start of ``audio``."""
        ...

    def transcribe_blocks(
        self, audio: np.ndarray,
        blocks: Iterable[tuple[Sequence[SpeechChunk], RecognitionOptions]],
    ) -> Iterator[Segment]:
        """``transcribe`` over consecutive stretches of one recording's speech, each with
        its own options; what their first passes lost is decoded again at the end."""
        ...

    def detect_language(
        self, audio: np.ndarray, speech: Sequence[SpeechChunk], windows: int = 4
    ) -> dict[str, float]:
        """Language probabilities averaged over up to ``windows`` stretches of speech spread
        across the recording, most likely first."""
        ...

    def detect_each(
        self, audio: np.ndarray, stretches: Sequence[Sequence[SpeechChunk]]
    ) -> list[dict[str, float]]:
        """``detect_language`` of each stretch's first window (``windows=1``)."""
        ...

    def compare(
        self, audio: np.ndarray, speech: Sequence[SpeechChunk],
        options: Sequence[RecognitionOptions], seconds: float | None = None,
    ) -> list[list[Segment]]:
        """Decode one stretch of speech (up to a window; about ``seconds`` of its speech
        when given) once per set of options, to compare prompts: rough text and
        likelihood, no word times."""
        ...

    def compare_each(
        self, audio: np.ndarray, stretches: Sequence[Sequence[SpeechChunk]],
        options: Sequence[RecognitionOptions], seconds: float | None = None,
    ) -> list[list[list[Segment]]]:
        """``compare`` on each stretch."""
        ...


from device.recognize.cleanup import (  # noqa: E402  (they use the records above)
    clean_segment,
    collapse_repeated_text,
    collapse_repeats,
    compression_ratio,
    drop_noise_loops,
    echoes_prompt,
)
from device.recognize.sentences import split_sentences  # noqa: E402
from device.recognize.timeline import Timeline, Window  # noqa: E402
from device.recognize.whisper import WhisperRecognizer  # noqa: E402

# Recogniser implementations by the manifest's ``engine`` field.
RECOGNIZERS = {"ctranslate2-whisper": WhisperRecognizer}

__all__ = [
    "RECOGNIZERS", "Decoding", "Pass", "PassReport", "RecognitionOptions", "Recognizer",
    "Timeline", "WhisperRecognizer", "Window", "clean_segment", "collapse_repeated_text",
    "collapse_repeats", "compression_ratio", "drop_noise_loops", "echoes_prompt",
    "split_sentences",
]
