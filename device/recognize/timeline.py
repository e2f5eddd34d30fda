"""Where each speech chunk lies in the audio a pass decodes, and the way back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from device.audio import SAMPLE_RATE
from device.vad import SpeechChunk

WINDOW_SECONDS = 30.0
"""What Whisper's encoder reads at once."""
ANCHOR_BEFORE_END = 0.05
UNHEARD_SECONDS = 1.0
"""A stretch this long without a word inside a chunk of speech is speech a window skipped:
the VAD ends a chunk at a pause of 0.4 s and pads speech with 0.3 s on each side."""


@dataclass(frozen=True, slots=True)
class Window:
    """A stretch of a pass's speech-only audio decoded at once; seconds from its start."""

    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


def anchor(word) -> float:
    """Where a word surely is: near its end.  Whisper's word timing stretches the first
    word after a pause back over the pause, so that word's middle may lie in the speech
    chunk before, whereas a word's end stays in its chunk (the VAD leaves 0.3 s of
    silence after the last word)."""
    return max(word.start, word.end - ANCHOR_BEFORE_END)


class Timeline:
    """The chunks one after the other, silence removed, and the way back to the recording.

    Chunks packed together are not joined by silence: a pause between them made Whisper
    stop early and lose packed chunks again (docs/benchmarks.md)."""

    def __init__(self, speech: Sequence[SpeechChunk]):
        self.chunks = list(speech)
        lengths = np.array([c.end - c.start for c in speech], dtype=np.int64)
        self._offsets = np.cumsum(np.concatenate([[0], lengths]))  # in samples
        # Chunk i is [bounds[i], bounds[i + 1]).
        self._bounds = self._offsets / SAMPLE_RATE

    @property
    def seconds(self) -> float:
        return float(self._bounds[-1])

    def audio(self, recording: np.ndarray) -> np.ndarray:
        """The chunks' audio, one after the other."""
        return np.concatenate([recording[c.start : c.end] for c in self.chunks])

    def samples(self, recording: np.ndarray, window: Window) -> np.ndarray:
        """A window's audio, ``audio(recording)`` cut as a pass cuts it, without the rest
        of the speech (a copy of all of it, for a recording in progress, grows with it)."""
        start, end = int(window.start * SAMPLE_RATE), int(window.end * SAMPLE_RATE)
        first = max(int(np.searchsorted(self._offsets, start, side="right")) - 1, 0)
        pieces = []
        for chunk, offset in zip(self.chunks[first:], self._offsets[first:], strict=False):
            if offset >= end:
                break
            pieces.append(recording[chunk.start + max(start - offset, 0)
                                    : chunk.start + min(end - offset, chunk.end - chunk.start)])
        return np.concatenate(pieces) if pieces else recording[:0]

    def windows(
        self, longest: float = WINDOW_SECONDS, adjacent_in: Sequence[SpeechChunk] | None = None
    ) -> list[Window]:
        """Windows of at most ``longest`` seconds (a chunk longer than that alone), cut at
        chunk edges, each filled in turn: the windows of the first chunks are those of
        every longer list that starts with them, but the last, which a later chunk may
        join.  With ``adjacent_in`` (chunks of which these are a part) a window only joins
        chunks that follow each other there."""
        index = {chunk: i for i, chunk in enumerate(adjacent_in or ())}
        windows: list[Window] = []
        for i, chunk in enumerate(self.chunks):
            start, end = float(self._bounds[i]), float(self._bounds[i + 1])
            if (windows and end - windows[-1].start <= longest
                    and (adjacent_in is None or index[chunk] == index[self.chunks[i - 1]] + 1)):
                windows[-1] = Window(windows[-1].start, end)
            else:
                windows.append(Window(start, end))
        return windows

    def settled(self, longest: float = WINDOW_SECONDS,
                adjacent_in: Sequence[SpeechChunk] | None = None) -> list[SpeechChunk]:
        """The chunks of every window but the last (``windows``): those whose windows no
        chunk after them can change."""
        windows = self.windows(longest, adjacent_in)
        last = windows[-1].start if windows else 0.0
        return [chunk for chunk, start in zip(self.chunks, self._bounds, strict=False)
                if start < last - 1e-9]

    def unheard(self, words, least: float = UNHEARD_SECONDS) -> list[SpeechChunk]:
        """The speech in which none of these words (times in the pass's audio) lies: the
        chunks without a word, and the stretches of at least ``least`` seconds before,
        between and after the words of the others (a window that skips a phrase goes on
        with the next one, inside the same chunk)."""
        spans: list[list[tuple[float, float]]] = [[] for _ in self.chunks]
        found = np.searchsorted(self._bounds, [anchor(w) for w in words], side="right") - 1
        for i, word in zip(found, words, strict=True):
            if 0 <= i < len(self.chunks):
                spans[i].append((word.start, word.end))
        lost = []
        for i, chunk in enumerate(self.chunks):
            if not spans[i]:
                lost.append(chunk)
                continue
            start, end = float(self._bounds[i]), float(self._bounds[i + 1])
            edge = start
            for first, last in [*sorted(spans[i]), (end, end)]:
                if first - edge >= least:
                    lost.append(SpeechChunk(chunk.start + round((edge - start) * SAMPLE_RATE),
                                            chunk.start + round((first - start) * SAMPLE_RATE)))
                edge = max(edge, last)
        return lost

    def to_recording(self, t: float, anchor: float | None = None, is_end: bool = False) -> float:
        """A time in the pass's audio as seconds of the recording; ``anchor`` picks the
        chunk (a word's, see ``anchor()``), an end belongs to the chunk it closes."""
        anchor = t if anchor is None else anchor
        index = int(np.searchsorted(self._bounds, anchor, side="left" if is_end else "right")) - 1
        index = min(max(index, 0), len(self.chunks) - 1)
        start, end = self._bounds[index], self._bounds[index + 1]
        local = min(max(t - start, 0.0), end - start)
        return round(float(self.chunks[index].start_s + local), 3)
