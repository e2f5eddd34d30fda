"""Live transcript while recording: speech chunks are transcribed as soon as the VAD closes them.

Audio is fed in blocks.  The open stretch (audio after the last closed chunk, at most
``MAX_OPEN_SECONDS``) is re-scored by the VAD every ``check_every`` seconds of new audio;
a chunk counts as closed once ``min_silence`` has followed it, and speech that has gone on
``SPLIT_AFTER_SECONDS`` is closed at its next short pause (a breath) instead: whoever talks
on without stopping is shown phrase by phrase, not once they stop.  Closed chunks go to a
transcription thread, so capture never waits for Whisper.  Memory stays bounded however
long the recording runs.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace

import numpy as np

from device.audio import SAMPLE_RATE
from device.libc import keeping_freed_memory
from device.recognize import RecognitionOptions, Recognizer
from device.records import Segment, Word
from device.vad import SpeechChunk, SpeechDetector, chunks_from_probabilities, first_pause

MAX_OPEN_SECONDS = 28.0
SPLIT_AFTER_SECONDS = 6.0
SHORT_PAUSE_MS = 100
LOOP_TOKENS_PER_SECOND = 15.0
"""A live decoding writes at most this many tokens a second of speech, plus 16: more is a
loop (about twice what the dialect clips' references need)."""


@dataclass(frozen=True)
class LiveSegment:
    segment: Segment
    speech_end: float
    """Recording time (s) at which the speaker stopped."""
    lag: float
    """Seconds from the speaker stopping (as captured) to the segment being ready."""


class LiveTranscriber:
    def __init__(self, detector: SpeechDetector, recognizer: Recognizer,
                 options: RecognitionOptions, on_segment: Callable[[LiveSegment], None],
                 check_every: float = 0.1,
                 decoding: Callable[[], AbstractContextManager] = nullcontext):
        """``decoding``: what each utterance's decoding runs inside (the recorder holds
        the final pass still there)."""
        self.detector = detector
        self.recognizer = recognizer
        self.decoding = decoding
        # Greedy with no retry and without word timing, a loop cut short: the final
        # batch transcript replaces this one anyway.
        self.options = replace(options, beam_size=1, retry_beam_size=1, word_timestamps=False,
                               tokens_per_second=LOOP_TOKENS_PER_SECOND)
        self.on_segment = on_segment
        self.check_every = int(check_every * SAMPLE_RATE)
        self._open: list[np.ndarray] = []
        self._open_start = 0  # recording sample where the open stretch starts
        self._open_size = 0
        self._unchecked = 0
        self._captured_at: list[tuple[int, float]] = []  # (sample, monotonic) per block end
        self._work: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._transcribe_loop, daemon=True,
                                        name="live-transcriber")
        self._thread.start()
        self.errors: list[str] = []

    def feed(self, block: np.ndarray) -> None:
        self._open.append(block)
        self._open_size += block.size
        self._unchecked += block.size
        self._captured_at.append((self._open_start + self._open_size, time.monotonic()))
        if self._unchecked >= self.check_every:
            self._unchecked = 0
            self._close_chunks(final=False)

    def finish(self, timeout: float = 60.0) -> None:
        """Transcribe what is still open and wait for the transcription thread."""
        self._close_chunks(final=True)
        self._work.put(None)
        self._thread.join(timeout)

    def _close_chunks(self, final: bool) -> None:
        if not self._open_size:
            return
        stretch = np.concatenate(self._open)
        options = self.detector.options
        probabilities = self.detector.probabilities(stretch)
        chunks = chunks_from_probabilities(probabilities, stretch.size, options)
        # A chunk's end already includes its padding; it is closed once the rest of the
        # silence that ends a chunk has followed.
        hold = max(0, int((options.min_silence_ms - options.speech_pad_ms) * SAMPLE_RATE / 1000))
        cut = 0
        for chunk in chunks:
            closed = final or chunk.end + hold <= stretch.size
            if not closed:
                pause = first_pause(probabilities, chunk.start + int(SPLIT_AFTER_SECONDS *
                                                                     SAMPLE_RATE),
                                    SHORT_PAUSE_MS, options)
                if pause is not None:  # cut in the pause's middle, as heard so far
                    part = SpeechChunk(chunk.start, (pause[0] + pause[1]) // 2)
                    self._queue(stretch, part, speech_end=pause[0])
                    cut = part.end
                break
            self._queue(stretch, chunk)
            cut = chunk.end
        if not final and stretch.size - cut > MAX_OPEN_SECONDS * SAMPLE_RATE:
            # A monologue with no pause long enough: transcribe what we have.
            forced = SpeechChunk(cut, stretch.size)
            self._queue(stretch, forced)
            cut = stretch.size
        if final:
            cut = stretch.size
        elif not chunks:
            # Only silence so far: keep a little context, drop the rest.
            cut = max(0, stretch.size - int(options.speech_pad_ms * SAMPLE_RATE / 1000))
        if cut:
            rest = stretch[cut:]
            self._open = [rest] if rest.size else []
            self._open_start += cut
            self._open_size = rest.size
            self._captured_at = [(s, t) for s, t in self._captured_at if s > self._open_start]

    def _queue(self, stretch: np.ndarray, chunk: SpeechChunk,
               speech_end: int | None = None) -> None:
        """``speech_end``: where in the stretch the speech stops (by default, a chunk's
        padding before its end)."""
        pad = int(self.detector.options.speech_pad_ms * SAMPLE_RATE / 1000)
        if speech_end is None:
            speech_end = max(chunk.start, chunk.end - pad)
        speech_end += self._open_start
        captured = next((t for s, t in self._captured_at if s >= speech_end), time.monotonic())
        self._work.put((stretch[chunk.start : chunk.end].copy(),
                        self._open_start + chunk.start, speech_end, captured))

    def _transcribe_loop(self) -> None:
        with keeping_freed_memory():  # one utterance's memory serves the next
            self._transcribe_all()

    def _transcribe_all(self) -> None:
        while (item := self._work.get()) is not None:
            samples, offset, speech_end, captured = item
            shift = offset / SAMPLE_RATE
            try:
                with self.decoding():
                    segments = list(self.recognizer.transcribe(
                        samples, [SpeechChunk(0, samples.size)], self.options))
            except Exception as exc:  # the final batch pass still transcribes everything
                self.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            if segments and segments[-1].language and self.options.language is None:
                # In auto mode each utterance still gets the language Whisper detects in it,
                # among the last one's where that shares its script (``options.languages``);
                # no encoder pass finds a language to start from either way (the recogniser
                # starts in any when none is known).
                self.options = replace(self.options, languages=(segments[-1].language,))
            for segment in segments:
                shifted = replace(
                    segment, start=round(segment.start + shift, 3),
                    end=round(segment.end + shift, 3),
                    words=tuple(Word(round(w.start + shift, 3), round(w.end + shift, 3),
                                     w.text, w.probability) for w in segment.words),
                )
                self.on_segment(LiveSegment(shifted, speech_end / SAMPLE_RATE,
                                            round(time.monotonic() - captured, 3)))
