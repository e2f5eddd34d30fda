"""Which decoded windows are decoded again, and which of two decodings is kept.

Whisper's own tests for a failed decoding (its temperature fallback): a window's text
compresses too well (a repetition loop) or is too unlikely.  Instead of sampling at higher
temperatures, tingji decodes such a window again with the other decoder (greedy after a
beam, a beam after greedy), since the two seldom fail on the same window.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from device.recognize.cleanup import (
    LOW_LOGPROB,
    MAX_COMPRESSION,
    NO_SPEECH_PROB,
    compression_ratio,
)


@dataclass(frozen=True, slots=True)
class DecodedWindow:
    """One window's decoding: Whisper cuts its text at timestamp tokens into segments
    (faster-whisper's, times in the pass's audio), which share the window's scores."""

    seek: int
    """The window's start in Whisper frames, as faster-whisper numbers windows."""
    segments: tuple
    languages: tuple[str, ...]
    """Each segment's language."""
    avg_logprob: float
    no_speech_prob: float

    @classmethod
    def of(cls, pairs: Iterable[tuple]) -> DecodedWindow:
        """From (segment, language) pairs of one window."""
        segments, languages = zip(*pairs, strict=True)
        first = segments[0]
        return cls(seek=first.seek, segments=segments, languages=languages,
                   avg_logprob=float(first.avg_logprob),
                   no_speech_prob=float(first.no_speech_prob))

    @property
    def text(self) -> str:
        return "".join(segment.text for segment in self.segments)


def by_window(decoded: Iterable[tuple]) -> Iterator[DecodedWindow]:
    """Consecutive (segment, language) pairs of one window, as a window: a loop may run on
    across the window's segments."""
    for _, pairs in itertools.groupby(decoded, key=lambda pair: pair[0].seek):
        yield DecodedWindow.of(pairs)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Which windows of a pass decoded with ``beam_size`` are decoded again with
    ``retry_beam``; the thresholds are Whisper's own."""

    beam_size: int
    retry_beam: int
    log_prob_threshold: float = LOW_LOGPROB
    compression_ratio_threshold: float = MAX_COMPRESSION

    @property
    def retries(self) -> bool:
        return self.retry_beam != self.beam_size

    def loops(self, window: DecodedWindow) -> bool:
        """The window's whole text compresses too well to be speech."""
        return compression_ratio(window.text) > self.compression_ratio_threshold

    def failed(self, window: DecodedWindow) -> bool:
        """Whether the decoding failed Whisper's tests, unless the model thinks there is no
        speech at all (then the text is dropped anyway)."""
        unlikely = window.avg_logprob < self.log_prob_threshold
        if window.no_speech_prob > NO_SPEECH_PROB and unlikely:
            return False
        return unlikely or self.loops(window)

    def decode_again(self, window: DecodedWindow) -> bool:
        if not self.retries or not self.failed(window):
            return False
        # Greedy after the beam only for a loop: a narrower search seldom finds text
        # likelier than the beam's, so unlikely text alone is not worth an encoder pass.
        return self.retry_beam > self.beam_size or self.loops(window)

    def keep_retry(self, retried: DecodedWindow, first: DecodedWindow) -> bool:
        """The decoding that passes the repetition test is kept, else the likelier."""
        def score(window: DecodedWindow) -> tuple[bool, float]:
            return not self.loops(window), window.avg_logprob

        return score(retried) >= score(first)
