"""The Whisper recogniser: passes over speech-only audio, retries, language per window."""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np

from device.audio import SAMPLE_RATE
from device.libc import release_freed_memory, share_one_malloc_arena
from device.recognize import Decoding, Pass, PassReport, RecognitionOptions
from device.recognize import _faster_whisper as fw
from device.recognize.cleanup import (
    clean_segment,
    drop_noise_loops,
    echoes_prompt,
)
from device.recognize.languages import clear_choice, first_in, script, script_of
from device.recognize.memo import WindowMemo, decoded_alike, restored, stored, window_key
from device.recognize.probes import Probes
from device.recognize.retry import DecodedWindow, RetryPolicy, by_window
from device.recognize.sentences import split_sentences
from device.recognize.timeline import WINDOW_SECONDS, Timeline, Window, anchor
from device.records import Segment, Word
from device.vad import SpeechChunk

PACKED_WINDOW_SECONDS = 15.0
"""Speech lost in a first pass, packed together, is decoded in windows of up to this
length: a short window loses less, and lost chunks came back whole in two windows of 15 s
where seven windows of their own took three times as long."""


class WhisperRecognizer(Probes):
    """Whisper (CTranslate2) from a verified model directory; loaded once, reused."""

    def __init__(self, model_dir: Path, model_id: str, cpu_threads: int, compute_type: str,
                 live: bool = False):
        """By default a single-threaded decoder per thread, decoding windows side by side: a
        decoding step is too small to share between threads, and the decoders share the
        weights.  ``live``: one decoder on every thread, for the live transcript's one
        utterance at a time (whose encoder pass two threads speed up)."""
        self.model_id = model_id
        threads = max(1, cpu_threads)
        self.workers = 1 if live else threads
        share_one_malloc_arena()
        self.model = fw.KeepingEncodings(
            str(model_dir),
            device="cpu",
            compute_type=compute_type,
            cpu_threads=threads // self.workers,
            num_workers=self.workers,
            local_files_only=True,
        )
        self._pipeline = fw.LanguagePerWindow(self.model, self.workers)
        self._switched: dict[tuple[int, str], str] = {}
        self.report = PassReport()
        self.memo: WindowMemo | None = None
        """Where windows decoded ahead are kept (see ``device.recognize.memo``)."""

    @property
    def encoder_passes(self) -> int:
        """Windows run through the encoder since the model was loaded."""
        return self.model.windows_encoded

    @property
    def language_detections(self) -> int:
        return self.model.model.detections

    @property
    def kept_encodings(self) -> int:
        """Encodings kept for reuse (none once a recording is done)."""
        return self.model.kept

    def transcribe(
        self, audio: np.ndarray, speech: Sequence[SpeechChunk], options: RecognitionOptions
    ) -> Iterator[Segment]:
        """Yield segments; passages recovered by a later pass come after the rest,
        so callers that need time order sort (the pipeline does)."""
        return self.transcribe_blocks(audio, [(speech, options)])

    def transcribe_blocks(
        self, audio: np.ndarray,
        blocks: Iterable[tuple[Sequence[SpeechChunk], RecognitionOptions]],
    ) -> Iterator[Segment]:
        """``transcribe`` over consecutive stretches of one recording's speech, each with
        options of its own (auto mode's varieties, a prompt each): the first pass over one
        after the other, then what they all lost decoded again at once, each lost chunk with
        the prompt of its stretch.  (A pass of its own after each stretch decoded the one
        or two windows a stretch loses on one core of two.)"""
        speech: list[SpeechChunk] = []
        missed: list[SpeechChunk] = []
        heard_in: set[str] = set()
        recovery: RecognitionOptions | None = None
        with self._reporting():
            for chunks, options in blocks:
                if not chunks:
                    continue
                lost, heard = yield from self._pass(audio, Timeline(chunks), options, "first")
                speech += chunks
                missed += lost
                heard_in |= heard
                recovery = options if recovery is None else recovery.then(chunks[0].start_s,
                                                                          options)
            # words tell what was heard
            if recovery is not None and recovery.word_timestamps and recovery.recover_lost:
                yield from self._recover(audio, speech, missed, heard_in, recovery)

    def recover(
        self, audio: np.ndarray, speech: Sequence[SpeechChunk], lost: Sequence[SpeechChunk],
        languages_heard: set[str], options: RecognitionOptions,
    ) -> Iterator[Segment]:
        """Decode again the chunks of ``speech`` in which a pass heard no word (``lost``),
        as ``transcribe`` does after its first pass."""
        with self._reporting():
            yield from self._recover(audio, speech, lost, languages_heard, options)

    def _recover(self, audio, speech, missed, heard_in, options) -> Iterator[Segment]:
        """A batched window is decoded once: when Whisper stops early or skips a stretch (a
        language change mid-window, a long pause, a sentence said again) that speech is
        lost.  In a recording of one language the lost chunks are packed together into
        windows of up to 15 s (an encoder pass each, and a short window loses less); what
        is lost even then, or lost in a recording of several languages, is decoded in
        windows of its own, each chunk with only the chunks beside it in the recording.
        ``options.ahead``: only the windows no speech lost later can join (every one but
        each pass's last)."""
        # Packing puts stretches from anywhere in one window, decoded in one language:
        # with several in the recording, Whisper translates the others into it.
        if missed and (options.language is not None
                       or len(heard_in | set(options.languages)) <= 1):
            if options.ahead:
                missed = Timeline(missed).settled(PACKED_WINDOW_SECONDS)
            if missed:
                missed, _ = yield from self._pass(audio, Timeline(missed), options, "packed",
                                                  longest=PACKED_WINDOW_SECONDS)
        if missed:
            # Stretches of chunks are beside the chunks they are part of.
            beside = sorted({*speech, *missed}, key=lambda c: (c.start, c.end))
            if options.ahead:
                missed = Timeline(missed).settled(adjacent_in=beside)
        if missed:
            yield from self._pass(audio, Timeline(missed), options, "alone", adjacent_in=beside)

    @contextmanager
    def _reporting(self) -> Iterator[None]:
        """``report`` covers what happens inside; what was kept for the recording is
        forgotten after it."""
        release_freed_memory()  # what decoding and the VAD left behind
        encoded, detected = self.encoder_passes, self.language_detections
        self.report = PassReport()
        try:
            yield
        finally:
            self.report = replace(self.report, encoder_passes=self.encoder_passes - encoded,
                                  language_detections=self.language_detections - detected)
            self.model.forget()
            self._pipeline.window_ranking.clear()

    def _pass(
        self, audio: np.ndarray, timeline: Timeline, options: RecognitionOptions, kind: str,
        longest: float = WINDOW_SECONDS, adjacent_in: Sequence[SpeechChunk] | None = None,
    ) -> Generator[Segment, None, tuple[list[SpeechChunk], set[str]]]:
        """Decode the timeline's chunks in windows (see ``Timeline.windows``); yield their
        segments and return the chunks in which no word was heard, and the languages of
        the segments."""
        speech_audio = timeline.audio(audio)
        self._switched = {}  # windows are this pass's own
        words: list = []
        languages: set[str] = set()
        windows = timeline.windows(longest, adjacent_in)
        prompts = {fw.window_seek(self.model, w): options.prompt_at(timeline.to_recording(w.start))
                   for w in windows} if options.prompts else {}
        self._pipeline.window_prompts = prompts
        decodings: list[Decoding] = []
        retried: list[int] = []
        for window in self._decode_windows(speech_audio, windows, options, decodings, retried):
            prompt = prompts.get(window.seek, options.initial_prompt)
            for raw in window.segments:
                if not echoes_prompt(raw.text, prompt):  # its speech was not heard
                    words.extend(raw.words or ())
            for segment in self._finish(window, timeline, speech_audio, options, prompt):
                languages.add(segment.language or "")
                yield segment
        missed = timeline.unheard(words)
        self.report = replace(self.report, passes=(*self.report.passes, Pass(
            kind=kind, chunks=tuple(timeline.chunks), windows=len(windows),
            decodings=tuple(decodings), retried=len(retried), missed=tuple(missed))))
        return missed, languages

    def _decode_windows(
        self, speech_audio: np.ndarray, windows: list[Window], options: RecognitionOptions,
        decodings: list[Decoding], retried: list[int],
    ) -> Iterator[DecodedWindow]:
        """The windows' decodings, window by window: with a ``memo``, the windows decoded
        ahead come first, taken from it, and what is decoded now is kept in it.  (Only for
        windows decoded one at a time by each decoder: a batch's windows depend on each
        other.)"""
        memo = self.memo if options.batch_size == 1 else None
        if memo is None:
            yield from self._decode_now(speech_audio, windows, options, decodings, retried)
            return
        keys, todo = {}, []
        for window in windows:
            seek = fw.window_seek(self.model, window)
            start, end = int(window.start * SAMPLE_RATE), int(window.end * SAMPLE_RATE)
            keys[seek] = window_key(self.model_id, speech_audio[start:end], seek, {
                "language": options.language,
                "prompt": self._pipeline.window_prompts.get(seek, options.initial_prompt),
                "hotwords": options.hotwords, "words": options.word_timestamps,
                "beam": options.beam_size, "retry": options.retry_beam,
                "thresholds": [options.log_prob_threshold,
                               options.compression_ratio_threshold],
                **({"tokens": options.tokens_per_second} if options.tokens_per_second else {})})
            found = memo.get(keys[seek])
            decoded, ranking = restored(found) if found is not None else (None, None)
            if found is None or not decoded_alike(ranking, options):
                todo.append(window)
                continue
            if ranking:
                self._pipeline.window_ranking[seek] = ranking
            self.report = replace(self.report, windows_taken=self.report.windows_taken + 1)
            if decoded is not None:
                yield decoded
        heard = set()
        for decoded in self._decode_now(speech_audio, todo, options, decodings, retried):
            heard.add(decoded.seek)
            memo.put(keys[decoded.seek],
                     stored(decoded, self._pipeline.window_ranking.get(decoded.seek)))
            yield decoded
        for window in todo:  # Whisper heard nothing in it: that is kept too
            seek = fw.window_seek(self.model, window)
            if seek not in heard:
                memo.put(keys[seek], stored(None, self._pipeline.window_ranking.get(seek)))

    def _decode_now(
        self, speech_audio: np.ndarray, windows: list[Window], options: RecognitionOptions,
        decodings: list[Decoding], retried: list[int],
    ) -> Iterator[DecodedWindow]:
        """The windows' decodings, window by window.  Windows that fail Whisper's own tests
        are decoded again with the retry beam and come last.

        A window is decoded again as soon as it has failed, while the pass decodes the
        rest: the decoders take the retry between the pass's windows, so no core waits
        for it at the end."""
        if not windows:
            return
        policy = RetryPolicy(options.beam_size, options.retry_beam, options.log_prob_threshold,
                             options.compression_ratio_threshold)
        retry = replace(options, beam_size=options.retry_beam)
        # The decoding threads keep the encoding of a window that will be retried (the
        # retry then costs no encoder pass); the retry's own windows are not retried.
        self._pipeline.keep_encodings_of(policy.decode_again if policy.retries else None)
        by_seek = {fw.window_seek(self.model, w): w for w in windows}
        judged = 0
        pending: list[tuple[DecodedWindow, Future]] = []

        def decode_again(window: Window) -> list[DecodedWindow]:
            decodings.append(Decoding(retry.beam_size, 1, judged))
            return list(by_window(self._decode(speech_audio, [window], retry)))

        with ThreadPoolExecutor(self.workers, thread_name_prefix="whisper-retry") as pool:
            try:
                decodings.append(Decoding(options.beam_size, len(windows), 0))
                for window in by_window(self._decode(speech_audio, windows, options)):
                    judged += 1
                    span = by_seek.get(window.seek)
                    if span and policy.decode_again(window):
                        retried.append(window.seek)
                        pending.append((window, pool.submit(decode_again, span)))
                    else:
                        yield window
                for first, decoding in pending:
                    again = decoding.result()
                    yield again[0] if again and policy.keep_retry(again[0], first) else first
            finally:  # a pass given up (an error, a cancelled job) leaves no retry queued
                for _, decoding in pending:
                    decoding.cancel()

    def _decode(self, speech_audio: np.ndarray, windows: list[Window],
                options: RecognitionOptions) -> Iterator[tuple]:
        # Without a language faster-whisper first detects one on the first window: an
        # encoder pass more.  Each window is decoded in its own language, whichever starts
        # (three recordings' first passes started in "zh", in "en" and after that detection
        # were the same to the letter), so without one known, any starts.
        return fw.decode(self._pipeline, speech_audio, windows, options,
                         options.language or next(iter(options.languages), "zh"))

    def _segment_language(
        self, raw, window_language: str, speech_audio: np.ndarray, options: RecognitionOptions
    ) -> str:
        """The window's language, unless the text is written in another script (Whisper
        kept transcribing across a language change): then detect it on this stretch."""
        written_in = script(raw.text)
        if written_in in (None, script_of(window_language)):
            return window_language
        named = self._named(raw.seek, written_in, options)
        if named is not None:
            return named
        # One detection per window and script: an encoder pass costs as much as a window.
        key = (raw.seek, written_in)
        if key not in self._switched:
            stretch = speech_audio[int(raw.start * SAMPLE_RATE) : int(raw.end * SAMPLE_RATE)]
            if stretch.size < SAMPLE_RATE // 2:
                return window_language
            self._switched[key] = fw.detect_language(self.model, stretch)
        return self._switched[key]

    def _named(self, seek: int, written_in: str, options: RecognitionOptions) -> str | None:
        """The language of a window's text written in another script than the window's
        language, without another encoder pass: the window's own ranking names it (one
        decoder step), else the recording's languages do."""
        named = clear_choice(self._pipeline.window_ranking.get(seek, []), written_in)
        return named or first_in(options.languages, written_in)

    def _finish(
        self, window: DecodedWindow, timeline: Timeline, speech_audio: np.ndarray,
        options: RecognitionOptions, prompt: str | None,
    ) -> Iterator[Segment]:
        """One window's segments, cleaned and cut into sentences (``prompt``: the one it was
        decoded with, which it must not write back).  A sentence in another script than
        its segment's language is named on its own (a segment of Cantonese, then English)."""
        segments = [self._segment(raw, language, timeline, speech_audio, options)
                    for raw, language in zip(window.segments, window.languages, strict=True)]
        for segment in drop_noise_loops(segments):
            for part in split_sentences(segment):
                written_in = script(part.text)
                if written_in not in (None, script_of(part.language)):
                    part = replace(part, language=self._named(window.seek, written_in, options)
                                   or part.language)
                cleaned = clean_segment(part, prompt)
                if cleaned is not None:
                    yield cleaned

    def _segment(
        self, raw, window_language: str, timeline: Timeline, speech_audio: np.ndarray,
        options: RecognitionOptions,
    ) -> Segment:
        language = self._segment_language(raw, window_language, speech_audio, options)
        words = tuple(
            Word(
                start=timeline.to_recording(w.start, anchor=anchor(w)),
                end=timeline.to_recording(w.end, anchor=anchor(w)),
                text=w.word,
                probability=float(w.probability),
            )
            for w in raw.words or ()
        )
        return Segment(
            start=words[0].start if words else timeline.to_recording(raw.start),
            end=words[-1].end if words else timeline.to_recording(raw.end, is_end=True),
            text=raw.text,
            language=language,
            avg_logprob=float(raw.avg_logprob),
            no_speech_prob=float(raw.no_speech_prob),
            compression_ratio=float(raw.compression_ratio),
            words=words,
        )

