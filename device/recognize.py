"""Speech recognition behind a small interface, and its faster-whisper implementation.

The recogniser is handed the audio and the speech chunks the VAD found.  The Whisper
implementation packs the speech (silence removed) into 30-second windows, decodes them in
batches with faster-whisper's BatchedInferencePipeline, maps every time back onto the
recording, and drops the text Whisper is known to invent on noise and in repetition loops.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import itertools
import math
import re
import threading
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Protocol, TypeVar

import numpy as np

from device.audio import SAMPLE_RATE
from device.records import Segment, Word
from device.vad import SpeechChunk

WINDOW_SECONDS = 30.0
PAUSE_SPLIT_SECONDS = 1.0
PACKED_WINDOW_SECONDS = 15.0
"""Speech lost in a first pass, packed together, is decoded in windows of about this
length: measured, 10 chunks lost across 7 windows (28 s of Mandarin) came back whole in two
windows of 15 s, in 3.3-3.9 s instead of 9 s."""
ANCHOR_BEFORE_END = 0.05
LONGEST_SEGMENT_SECONDS = 15.0
_SENTENCE_END = (".", "?", "!", "。", "？", "！", "…")
T = TypeVar("T")
R = TypeVar("R")


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
    beam_size: int = 5
    """1 = greedy: 11-20 % faster on 2 AVX2 cores; more or less accurate by CPU (README)."""
    retry_beam_size: int | None = None
    """A window whose decoding fails Whisper's own tests (text too repetitive to be speech,
    or too unlikely) is decoded again with this beam, and the likelier text kept; a smaller
    beam is only asked after a loop.  None: the other decoder (greedy after a beam, a beam
    of 5 after greedy), since a beam and greedy decoding seldom loop on the same window;
    ``beam_size``: no retry.  (Whisper itself retries at higher temperatures.)"""
    batch_size: int = 1
    """Windows one decoder decodes together; there is a decoder per thread."""
    languages: tuple[str, ...] = ()
    """With ``language`` None: the languages auto mode found in the recording, most likely
    first.  The first starts the decoding (every window still gets its own).  A segment
    written in another script than its window's language is named by the window's own
    detection when one language of that script stands out there, else by the first of these
    in that script; only when neither names one is its language detected on its own audio
    (an encoder pass)."""

    @property
    def retry_beam(self) -> int:
        if self.retry_beam_size is not None:
            return self.retry_beam_size
        return 1 if self.beam_size > 1 else 5


class Recognizer(Protocol):
    model_id: str

    def transcribe(
        self, audio: np.ndarray, speech: Sequence[SpeechChunk], options: RecognitionOptions
    ) -> Iterator[Segment]:
        """Yield segments; times are seconds from the start of ``audio``."""
        ...

    def detect_language(
        self, audio: np.ndarray, speech: Sequence[SpeechChunk], windows: int = 4
    ) -> dict[str, float]:
        """Language probabilities averaged over up to ``windows`` stretches of speech spread
        across the recording, most likely first."""
        ...

    def compare(
        self, audio: np.ndarray, speech: Sequence[SpeechChunk],
        options: Sequence[RecognitionOptions],
    ) -> list[list[Segment]]:
        """Decode one stretch of speech (up to a window) once per set of options, to compare
        prompts: rough text and likelihood, no word times."""
        ...


class WhisperRecognizer:
    """Whisper (CTranslate2) from a verified model directory; loaded once, reused."""

    def __init__(self, model_dir: Path, model_id: str, cpu_threads: int, compute_type: str,
                 live: bool = False):
        """By default a single-threaded decoder per thread, decoding windows side by side: a
        decoding step is too small to share between threads (2 AVX2 cores: 14 ms a step on
        one thread, 19-23 ms on two; a 5-minute recording 23-35 s instead of 38-46 s), and
        the decoders share the weights.  ``live``: one decoder on every thread, for the live
        transcript's one utterance at a time (whose encoder pass two threads speed up)."""
        self.model_id = model_id
        threads = max(1, cpu_threads)
        self.workers = 1 if live else threads
        share_one_malloc_arena()
        self.model = _model_class()(
            str(model_dir),
            device="cpu",
            compute_type=compute_type,
            cpu_threads=threads // self.workers,
            num_workers=self.workers,
            local_files_only=True,
        )
        self._pipeline = _pipeline_class()(self.model, self.workers)
        self._switched: dict[tuple[int, str], str] = {}

    def transcribe(
        self, audio: np.ndarray, speech: Sequence[SpeechChunk], options: RecognitionOptions
    ) -> Iterator[Segment]:
        """Yield segments; passages recovered by a later pass come after the rest,
        so callers that need time order sort (the pipeline does).

        A batched window is decoded once: when Whisper stops early or skips a stretch (a
        language change mid-window, a long pause, a sentence said again) that speech is
        lost.  The speech chunks that produced no words are decoded again: in a recording
        of one language packed together into windows of about 15 s (an encoder pass each,
        and a short window loses less); what is lost even then, or lost in a recording of
        several languages, in windows of its own, each chunk with only the chunks beside it
        in the recording."""
        if not speech:
            return
        release_freed_memory()  # what decoding and the VAD left behind
        try:
            missed, heard_in = yield from self._pass(audio, _Timeline(speech), options)
            if not options.word_timestamps:  # words tell which chunks were heard
                return
            # Packing puts stretches from anywhere in one window, decoded in one language:
            # with several in the recording, Whisper translates the others into it
            # (measured: CER 0.069 -> 0.126).
            if missed and (options.language is not None
                           or len(heard_in | set(options.languages)) <= 1):
                packed = _Timeline(missed)
                missed, _ = yield from self._pass(audio, packed, options, parts=math.ceil(
                    packed.seconds / PACKED_WINDOW_SECONDS))
            if missed:
                yield from self._pass(audio, _Timeline(missed), options, adjacent_in=speech)
        finally:  # what was kept for this recording
            self.model.forget()
            self._pipeline.window_ranking.clear()

    def _pass(
        self, audio: np.ndarray, timeline: _Timeline, options: RecognitionOptions,
        parts: int = 1, adjacent_in: Sequence[SpeechChunk] | None = None,
    ) -> Generator[Segment, None, tuple[list[SpeechChunk], set[str]]]:
        """Decode the timeline's chunks in windows (see ``_Timeline.windows``); yield their
        segments and return the chunks in which no word was heard, and the languages of
        the segments."""
        speech_audio = timeline.audio(audio)
        self._switched = {}  # windows are this pass's own
        heard = np.zeros(len(timeline.chunks), dtype=bool)
        languages: set[str] = set()
        for window in self._decode_windows(
                speech_audio, timeline.windows(parts, adjacent_in), options):
            for raw, _ in window:
                heard[timeline.chunks_heard(raw)] = True
            for segment in self._finish(window, timeline, speech_audio, options):
                languages.add(segment.language or "")
                yield segment
        missed = [chunk for chunk, was_heard in zip(timeline.chunks, heard, strict=True)
                  if not was_heard]
        return missed, languages

    def detect_language(
        self, audio: np.ndarray, speech: Sequence[SpeechChunk], windows: int = 4
    ) -> dict[str, float]:
        if not speech:
            return {}
        timeline = _Timeline(speech)
        speech_audio = timeline.audio(audio)
        spans = timeline.windows()
        picks = sorted({round(i * (len(spans) - 1) / max(windows - 1, 1))
                        for i in range(min(windows, len(spans)))})

        def detect(i: int) -> list[tuple[str, float]]:
            encoded = self._encode_window(speech_audio, spans[i], keep=True)
            return self.model.model.detect_language(encoded)[0]

        totals: dict[str, float] = {}
        for ranking in self._side_by_side(detect, picks):
            for token, probability in ranking:
                language = token[2:-2]  # "<|zh|>"
                totals[language] = totals.get(language, 0.0) + probability / len(picks)
        ranked = sorted(totals.items(), key=lambda kv: -kv[1])[:5]
        return {language: round(p, 4) for language, p in ranked if p >= 0.001}

    def compare(
        self, audio: np.ndarray, speech: Sequence[SpeechChunk],
        options: Sequence[RecognitionOptions],
    ) -> list[list[Segment]]:
        """The speech's first window, encoded once and decoded greedily per set of options
        (decoding each through ``transcribe`` would encode it every time), side by side.  Not
        batched: CTranslate2 wants the prompts of a batch to be of one length.

        Language detection keeps the encoding of the first window, so after it this costs
        no encoder pass (one was ~1.2 s on 2 AVX2 cores, with a core idle); it is kept again
        for the transcription."""
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        if not speech:
            return [[] for _ in options]
        timeline = _Timeline(speech)
        window = timeline.windows()[0]
        new_tokens = 16 + int(8 * (window["end"] - window["start"]))
        encoded = self._encode_window(timeline.audio(audio, until=window["end"]), window,
                                      keep=True)

        def decode(option: RecognitionOptions) -> list[Segment]:
            tokenizer = Tokenizer(self.model.hf_tokenizer, self.model.model.is_multilingual,
                                  task="transcribe", language=option.language)
            previous = (tokenizer.encode(" " + option.initial_prompt.strip())
                        if option.initial_prompt else [])
            prompt = self.model.get_prompt(tokenizer, previous, without_timestamps=True,
                                           hotwords=option.hotwords)
            [result] = self.model.model.generate(
                encoded,
                [prompt],
                beam_size=1,
                # A prompt that sets off a repetition loop must not decode on to the
                # model's limit: speech is well under 8 tokens a second.
                max_length=min(self.model.max_length, len(prompt) + new_tokens),
                return_scores=True,
                return_no_speech_prob=True,
                suppress_tokens=get_suppressed_tokens(tokenizer, (-1,)),
            )
            tokens = result.sequences_ids[0]
            text = tokenizer.decode(tokens)
            segment = Segment(
                start=speech[0].start_s,
                end=timeline.to_recording(window["end"], is_end=True), text=text,
                language=option.language,
                # As faster-whisper scores a window (length penalty 1).
                avg_logprob=result.scores[0] * len(tokens) / (len(tokens) + 1),
                no_speech_prob=float(result.no_speech_prob),
                compression_ratio=compression_ratio(text),
            )
            cleaned = clean_segment(segment, option.initial_prompt)
            return [cleaned] if cleaned is not None else []

        return self._side_by_side(decode, options)

    def _encode_window(
        self, speech_audio: np.ndarray, window: dict[str, float], keep: bool = False
    ):
        """A window's encoder output, from its features exactly as the batched transcription
        computes them: an encoding kept (``keep``) is then reused, not computed again."""
        from faster_whisper.audio import pad_or_trim

        start, end = (int(window[k] * SAMPLE_RATE) for k in ("start", "end"))
        features = pad_or_trim(self.model.feature_extractor(speech_audio[start:end])[..., :-1])
        return self.model.encode(features, keep=keep)

    def _side_by_side(self, work: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``work`` on every item, as many at once as there are decoding workers."""
        with ThreadPoolExecutor(self.workers, thread_name_prefix="whisper") as pool:
            return list(pool.map(work, items))

    def _decode_windows(
        self, speech_audio: np.ndarray, windows: list[dict], options: RecognitionOptions
    ) -> Iterator[list[tuple]]:
        """The windows' (segment, language) pairs, window by window.  Windows that fail
        Whisper's own tests are decoded again with the retry beam and come last.

        A window is decoded again as soon as it has failed, while the pass decodes the
        rest: the decoders take the retry between the pass's windows, so no core waits
        for it at the end (a looping window of the Mandarin benchmark: ~2 s with a core
        idle)."""
        retry = replace(options, beam_size=options.retry_beam)
        retried_test = _retry_test(options)
        # The decoding threads keep the encoding of a window that will be retried (the
        # retry then costs no encoder pass); the retry's own windows are not retried.
        self._pipeline.keep_encodings_of(retried_test)
        fps = self.model.frames_per_second
        # Segment.seek as faster-whisper computes it from a window's start.
        by_seek = {int(int(w["start"] * SAMPLE_RATE) / SAMPLE_RATE * fps): w for w in windows}
        retried: list[tuple[list[tuple], Future]] = []
        with ThreadPoolExecutor(self.workers, thread_name_prefix="whisper-retry") as pool:
            try:
                for window in _by_window(self._decode(speech_audio, windows, options)):
                    span = by_seek.get(window[0][0].seek)
                    if span and retried_test is not None and retried_test(window):
                        retried.append((window, pool.submit(
                            lambda span=span: list(self._decode(speech_audio, [span], retry)))))
                    else:
                        yield window
                for first, decoding in retried:
                    again = decoding.result()
                    yield again if again and _likelier(again, first) else first
            finally:  # a pass given up (an error, a cancelled job) leaves no retry queued
                for _, decoding in retried:
                    decoding.cancel()

    def _decode(self, speech_audio: np.ndarray, windows: list[dict], options: RecognitionOptions):
        segments, info = self._pipeline.transcribe(
            speech_audio,
            # Without a language faster-whisper first detects one on the first window: an
            # encoder pass more, when auto mode has already found the recording's languages.
            language=options.language or next(iter(options.languages), None),
            # Each window gets the language Whisper detects in it (code-switching).
            multilingual=options.language is None,
            initial_prompt=options.initial_prompt,
            hotwords=options.hotwords,
            word_timestamps=options.word_timestamps,
            beam_size=options.beam_size,
            batch_size=options.batch_size,
            vad_filter=False,
            clip_timestamps=windows,
            without_timestamps=False,
        )
        for raw in segments:
            ranking = self._pipeline.window_ranking.get(raw.seek)
            yield raw, ranking[0][0] if ranking else info.language

    def _segment_language(
        self, raw, window_language: str, speech_audio: np.ndarray, options: RecognitionOptions
    ) -> str:
        """The window's language, unless the text is written in another script (Whisper
        kept transcribing across a language change): then detect it on this stretch."""
        script = _script(raw.text)
        if script in (None, _script_of(window_language)):
            return window_language
        # The window's own ranking (one decoder step), then the recording's languages: either
        # names the other language without another encoder pass.
        named = _clear_choice(self._pipeline.window_ranking.get(raw.seek, []), script)
        named = named or next((lang for lang in options.languages if _script_of(lang) == script),
                              None)
        if named is not None:
            return named
        # One detection per window and script: an encoder pass costs as much as a window.
        key = (raw.seek, script)
        if key not in self._switched:
            stretch = speech_audio[int(raw.start * SAMPLE_RATE) : int(raw.end * SAMPLE_RATE)]
            if stretch.size < SAMPLE_RATE // 2:
                return window_language
            self._switched[key] = self.model.detect_language(stretch)[0]
        return self._switched[key]

    def _finish(
        self, window: list, timeline: _Timeline, speech_audio: np.ndarray,
        options: RecognitionOptions,
    ) -> Iterator[Segment]:
        """One window's segments, cleaned and cut into sentences."""
        segments = [self._segment(raw, language, timeline, speech_audio, options)
                    for raw, language in window]
        for segment in drop_noise_loops(segments):
            for part in split_sentences(segment):
                cleaned = clean_segment(part, options.initial_prompt)
                if cleaned is not None:
                    yield cleaned

    def _segment(
        self, raw, window_language: str, timeline: _Timeline, speech_audio: np.ndarray,
        options: RecognitionOptions,
    ) -> Segment:
        language = self._segment_language(raw, window_language, speech_audio, options)
        words = tuple(
            Word(
                start=timeline.to_recording(w.start, anchor=_anchor(w)),
                end=timeline.to_recording(w.end, anchor=_anchor(w)),
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


def _doubtful(window: list[tuple]) -> bool:
    """Whisper's tests for a failed decoding (its temperature fallback): the window's text
    compresses too well (a repetition loop) or is too unlikely, unless the model thinks
    there is no speech at all (then the text is dropped anyway)."""
    raw = window[0][0]  # a batched window's segments share its scores
    if raw.no_speech_prob > _NO_SPEECH_PROB and raw.avg_logprob < _LOW_LOGPROB:
        return False
    return raw.avg_logprob < _LOW_LOGPROB or _loops(window)


def _retry_test(options: RecognitionOptions) -> Callable[[list[tuple]], bool] | None:
    """Which windows of a pass decoded with ``options`` are decoded again (None: none)."""
    retry = options.retry_beam
    if retry == options.beam_size:
        return None
    if retry > options.beam_size:
        return lambda window: _doubtful(window)
    # Greedy after the beam only for a loop: a narrower search seldom finds text likelier
    # than the beam's, so unlikely text alone is not worth an encoder pass.
    return lambda window: _doubtful(window) and _loops(window)


def _likelier(retried: list[tuple], first: list[tuple]) -> bool:
    """Whether the retried decoding of a window is the one to keep: the one that passes the
    repetition test, then the more likely."""
    def score(window: list[tuple]) -> tuple[bool, float]:
        return not _loops(window), window[0][0].avg_logprob

    return score(retried) >= score(first)


def _loops(window: list[tuple]) -> bool:
    """The window's whole text compresses too well to be speech (Whisper's loop test)."""
    return compression_ratio("".join(raw.text for raw, _ in window)) > _MAX_COMPRESSION


def _by_window(decoded: Iterator[tuple]) -> Iterator[list[tuple]]:
    """Consecutive (segment, language) pairs of one decoding window: Whisper cuts a window's
    text at its timestamp tokens, and a loop may run on across those cuts."""
    for _, window in itertools.groupby(decoded, key=lambda pair: pair[0].seek):
        yield list(window)


_HAN_KANA_HANGUL = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")
_CJK_LANGUAGES = {"zh", "yue", "ja", "ko"}


def _script(text: str) -> str | None:
    """'cjk' or 'latin' for text clearly in one of them, else None."""
    cjk, latin = len(_HAN_KANA_HANGUL.findall(text)), len(_LATIN.findall(text))
    if cjk >= 2 and cjk * 3 >= latin:
        return "cjk"
    if latin >= 4 and cjk == 0:
        return "latin"
    return None


def _script_of(language: str | None) -> str | None:
    if language is None:
        return None
    return "cjk" if language in _CJK_LANGUAGES else "latin"


def _model_class():
    """faster-whisper's WhisperModel, able to keep the encoder output of chosen windows.

    Auto mode detects the recording's languages on a few of the windows the transcription
    then decodes, and a window that fails Whisper's tests is decoded again; an encoder pass
    costs as much as decoding a window (~2 s on one AVX2 core), so the transcription and the
    retry take those windows' encodings from here.  Windows are known by their features'
    bytes: a kept encoding is only ever used for the very same input, and once, unless the
    use keeps it again.
    """
    import ctranslate2
    from faster_whisper import WhisperModel

    class KeepingEncodings(WhisperModel):
        KEPT_MAX = 8  # 3 MB each (1500 x 512 floats)

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._kept: dict[bytes, np.ndarray] = {}
            self.model = _DetectsOnce(self.model)

        def encode(self, features: np.ndarray, keep: bool = False):
            if not keep and not self._kept:  # no hashing when there is nothing to find
                return super().encode(features)
            batch = features[np.newaxis] if features.ndim == 2 else features
            keys = [_features_key(row) for row in batch]
            rows = [self._kept.pop(key, None) for key in keys]
            missing = [i for i, row in enumerate(rows) if row is None]
            if not keep and len(missing) == len(rows):
                return super().encode(features)
            if missing:
                for i, row in zip(missing, np.array(super().encode(batch[missing])), strict=True):
                    rows[i] = row
            if keep:
                for row_features, row in zip(batch, rows, strict=True):
                    self.keep(row_features, row)
            return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.stack(rows)))

        def keep(self, features: np.ndarray, encoding: np.ndarray) -> None:
            """Keep one window's encoding for its next encoder pass (while there is room)."""
            if len(self._kept) < self.KEPT_MAX:
                self._kept[_features_key(features)] = encoding

        def forget(self) -> None:
            self._kept.clear()
            self.model.forget()

    return KeepingEncodings


class _DetectsOnce:
    """CTranslate2's Whisper, answering a second language detection on the same encoder
    output from memory.  faster-whisper detects each batch's languages to prompt its windows
    and does not return them; the pipeline below asks again for the probabilities (a decoder
    step, ~0.13 s per batch on 2 AVX2 cores).  Batches are decoded side by side, so each
    thread remembers its own."""

    def __init__(self, whisper):
        self._whisper = whisper
        self._local = threading.local()

    def detect_language(self, encoder_output) -> list:
        last = getattr(self._local, "last", None)
        if last is None or last[0] is not encoder_output:
            last = (encoder_output, self._whisper.detect_language(encoder_output))
            self._local.last = last
        return last[1]

    def forget(self) -> None:
        """Drop this thread's (the decoding workers' go with them)."""
        self._local.last = None

    def __getattr__(self, name: str):
        return getattr(self._whisper, name)


def _features_key(features: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(features).tobytes(), digest_size=16).digest()


def _clear_choice(ranking: Sequence[tuple[str, float]], script: str) -> str | None:
    """The language of ``script`` a window's detection ranks first, if it stands out.

    Whisper detects a window's language mostly from its first seconds, so a language that
    comes in later gets a small probability (measured: English after Mandarin 0.004-0.011)
    but still ranks far above the other languages of its script (~0.0001).
    """
    candidates = [(lang, p) for lang, p in ranking if _script_of(lang) == script]
    if not candidates:
        return None
    (first, p1), p2 = candidates[0], candidates[1][1] if len(candidates) > 1 else 0.0
    return first if p1 >= _CLEAR_MIN and p1 >= _CLEAR_RATIO * p2 else None


_CLEAR_MIN = 0.001
_CLEAR_RATIO = 5.0


def _pipeline_class():
    """faster-whisper's BatchedInferencePipeline, remembering each window's language.

    With ``multilingual=True`` faster-whisper prompts every window with the language Whisper
    detects in it but does not report it; this records it by window (``Segment.seek``),
    with the probabilities of the others.  The extra detection reuses the encoder output:
    one decoder step per window.
    """
    from faster_whisper import BatchedInferencePipeline

    class LanguagePerWindow(BatchedInferencePipeline):
        def __init__(self, model, workers: int):
            self._local = threading.local()  # before super(): it sets last_speech_timestamp
            super().__init__(model)
            self.workers = workers
            self.window_ranking: dict[int, list[tuple[str, float]]] = {}

        def keep_encodings_of(self, test: Callable[[list[tuple]], bool] | None) -> None:
            """From now on, in this thread's decodings, keep the encoding of every window
            whose (segment, language) pairs pass ``test``."""
            self._local.keep_test = test

        # faster-whisper carries the end of the last word heard from batch to batch; batches
        # decoded side by side each start from their own first window (speech-only time is
        # contiguous, so that is where the speech before it ended).
        @property
        def last_speech_timestamp(self) -> float:
            return getattr(self._local, "last_speech_timestamp", 0.0)

        @last_speech_timestamp.setter
        def last_speech_timestamp(self, value: float) -> None:
            self._local.last_speech_timestamp = value

        def _batched_segments_generator(
            self, features, tokenizer, chunks_metadata, batch_size, options, log_progress
        ):
            pool = ThreadPoolExecutor(self.workers, thread_name_prefix="whisper")
            starts = range(0, len(features), batch_size)
            self._local.pending = pool.map(
                self._decode_batch, [features[i : i + batch_size] for i in starts],
                itertools.repeat(tokenizer), [chunks_metadata[i : i + batch_size] for i in starts],
                itertools.repeat(options),
                itertools.repeat(getattr(self._local, "keep_test", None)))
            try:
                yield from super()._batched_segments_generator(
                    features, tokenizer, chunks_metadata, batch_size, options, log_progress)
            finally:
                pool.shutdown(cancel_futures=True)

        def forward(self, features, tokenizer, chunks_metadata, options):
            """The next batch's results, in order, decoded meanwhile by a worker."""
            return next(self._local.pending)

        def _decode_batch(self, features, tokenizer, chunks_metadata, options, keep_test):
            self.last_speech_timestamp = chunks_metadata[0]["offset"]
            results = super().forward(features, tokenizer, chunks_metadata, options)
            if keep_test is not None:
                for i, window in enumerate(results):
                    # As the pass will see it (the segments of a window share its scores).
                    pairs = [(SimpleNamespace(**segment), None) for segment in window]
                    if pairs and keep_test(pairs):
                        self.model.keep(features[i], np.array(self._local.encoder_output)[i])
            self._local.encoder_output = None
            release_freed_memory()
            for meta, ranking in zip(chunks_metadata, self._local.rankings, strict=True):
                seek = int(meta["offset"] * self.model.frames_per_second)
                self.window_ranking[seek] = ranking
            return results

        def generate_segment_batched(self, features, tokenizer, options):
            encoder_output, output = super().generate_segment_batched(features, tokenizer, options)
            self._local.encoder_output = encoder_output
            if options.multilingual:
                detected = self.model.model.detect_language(encoder_output)
                self._local.rankings = [[(token[2:-2], p) for token, p in ranked]
                                        for ranked in detected]
            else:
                self._local.rankings = [[] for _ in output]
            return encoder_output, output

    return LanguagePerWindow


@functools.cache
def _glibc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl): nothing to do
        return None


_M_ARENA_MAX = -8  # glibc's malloc.h


def share_one_malloc_arena() -> None:
    """Have every thread allocate from glibc's main arena.

    Each decoding worker thread would otherwise get an arena of its own, and pages freed in
    one cannot serve the others: decoding side by side on 2 cores peaked at 612-627 MB, with
    one arena at 511 MB, as fast (305 s of speech).  Called before the model starts its
    worker threads.
    """
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_ARENA_MAX, 1)


def release_freed_memory() -> None:
    """Hand the pages freed by the last batch back to the system.

    A batch of beam searches allocates a few hundred MB and frees it; glibc keeps the freed
    pages resident and later batches do not fit into the holes, so the peak grows window by
    window.  Trimming after each batch costs about one page fault per page reused and keeps
    the worker's peak near one batch's worth (measured: 582 -> 527 MB peak, 442 -> 265 MB
    after a 5-minute recording).  Lowering glibc's mmap threshold instead costs ~50% speed.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def split_sentences(
    segment: Segment, pause: float = PAUSE_SPLIT_SECONDS, longest: float = LONGEST_SEGMENT_SECONDS
) -> list[Segment]:
    """Cut a window's text into sentence-sized segments using the word timestamps.

    Cuts go after sentence-final punctuation, at pauses of ``pause`` seconds or more, and,
    in speech that runs on longer than ``longest`` seconds, at its widest pause.
    """
    words = segment.words
    if not words:
        return [segment]
    groups: list[tuple[Word, ...]] = []
    current: list[Word] = []
    for word in words:
        if current and (
            word.start - current[-1].end >= pause
            or current[-1].text.rstrip().endswith(_SENTENCE_END)
        ):
            groups.append(tuple(current))
            current = []
        current.append(word)
    groups.append(tuple(current))
    # A lone word is usually a misaligned first word (DTW at a window edge), not a
    # sentence: keep it with the words it belongs to.
    for i in range(len(groups) - 1, -1, -1):
        if len(groups[i]) == 1 and len(groups) > 1:
            lone = groups.pop(i)
            if i < len(groups):
                groups[i] = lone + groups[i]
            else:
                groups[i - 1] = groups[i - 1] + lone
    parts: list[tuple[Word, ...]] = []
    while groups:
        group = groups.pop(0)
        if group[-1].end - group[0].start > longest and len(group) > 1:
            gaps = [group[i].start - group[i - 1].end for i in range(1, len(group))]
            cut = 1 + max(range(len(gaps)), key=gaps.__getitem__)
            groups[:0] = [group[:cut], group[cut:]]
            continue
        parts.append(group)
    return [
        replace(segment, start=g[0].start, end=g[-1].end, words=g,
                text="".join(w.text for w in g))
        for g in parts
    ]


def _anchor(word) -> float:
    """Where a word surely is: near its end.  Whisper's word timing stretches the first
    word after a pause back over the pause, so that word's middle may lie in the speech
    chunk before (measured: the first word of a chunk ends 0.33-0.37 s into it, its middle
    up to 0.1 s before it), whereas a word's end stays in its chunk (the VAD leaves 0.3 s
    of silence after the last word)."""
    return max(word.start, word.end - ANCHOR_BEFORE_END)


class _Timeline:
    """Where each speech chunk lies in the audio a pass decodes (the chunks one after the
    other, silence removed), and the way back to the recording.

    Chunks packed together are not joined by silence: measured, a pause of 0.4 or 1 s
    between them made Whisper stop early and lose 3-5 of 10 packed chunks again."""

    def __init__(self, speech: Sequence[SpeechChunk]):
        self.chunks = list(speech)
        lengths = np.array([c.end - c.start for c in speech], dtype=np.int64)
        # Chunk i is [bounds[i], bounds[i + 1]).
        self._bounds = np.cumsum(np.concatenate([[0], lengths])) / SAMPLE_RATE

    @property
    def seconds(self) -> float:
        return float(self._bounds[-1])

    def audio(self, recording: np.ndarray, until: float | None = None) -> np.ndarray:
        """The chunks' audio, one after the other; with ``until`` (a chunk edge, in seconds)
        only as far as that."""
        count = len(self.chunks) if until is None else int(np.searchsorted(self._bounds, until))
        return np.concatenate([recording[c.start : c.end] for c in self.chunks[:count]])

    def windows(
        self, parts: int = 1, adjacent_in: Sequence[SpeechChunk] | None = None
    ) -> list[dict[str, float]]:
        """Windows of at most 30 s, cut at chunk edges; with ``parts``, also where the
        audio's 1st, 2nd... of that many equal shares ends (a chunk goes with the share its
        middle is in).  With ``adjacent_in`` (chunks of which these are a part) a window only
        joins chunks that follow each other there."""
        index = {chunk: i for i, chunk in enumerate(adjacent_in or ())}
        share = self.seconds / parts or 1.0
        windows: list[dict[str, float]] = []
        last_part = None
        for i, chunk in enumerate(self.chunks):
            start, end = float(self._bounds[i]), float(self._bounds[i + 1])
            part = int((start + end) / 2 // share)
            if (windows and end - windows[-1]["start"] <= WINDOW_SECONDS and part == last_part
                    and (adjacent_in is None or index[chunk] == index[self.chunks[i - 1]] + 1)):
                windows[-1]["end"] = end
            else:
                windows.append({"start": start, "end": end})
            last_part = part
        return windows

    def chunks_heard(self, raw) -> list[int]:
        """Indexes of the chunks in which a raw segment has words."""
        anchors = [_anchor(w) for w in raw.words or ()]
        found = np.searchsorted(self._bounds, anchors, side="right") - 1
        return sorted({int(i) for i in found if 0 <= i < len(self.chunks)})

    def to_recording(self, t: float, anchor: float | None = None, is_end: bool = False) -> float:
        anchor = t if anchor is None else anchor
        index = int(np.searchsorted(self._bounds, anchor, side="left" if is_end else "right")) - 1
        index = min(max(index, 0), len(self.chunks) - 1)
        start, end = self._bounds[index], self._bounds[index + 1]
        local = min(max(t - start, 0.0), end - start)
        return round(float(self.chunks[index].start_s + local), 3)


# Text Whisper produces on silence, music and noise (from its subtitle training data).
_INVENTED = {
    "请不吝点赞订阅转发打赏支持明镜与点点栏目",
    "字幕由amara.org社区提供",
    "小编字幕由amara.org社区提供",
    "中文字幕由amara.org社区提供",
    "by索兰娅",
    "字幕by索兰娅",
    "谢谢观看",
    "谢谢大家观看",
    "thanksforwatching",
    "thankyouforwatching",
    "pleasesubscribetomychannel",
    "subtitlesbytheamara.orgcommunity",
}
_NO_SPEECH_PROB = 0.6
_LOW_LOGPROB = -1.0
_LOOP_NO_SPEECH_PROB = 0.5
_LOOP_LEAD_IN_PROBABILITY = 0.5
"""Mean word probability under which the words left beside a noise loop go too (measured:
0.36 for the "1-2-3" before a loop on brown noise; 0.75-0.94 per segment on the shared
speech clips)."""
_MAX_COMPRESSION = 2.4


def echoes_prompt(text: str, prompt: str | None) -> bool:
    """Whisper sometimes writes its prompt back instead of the speech (on unclear audio)."""
    if not prompt:
        return False
    a, b = _bare(text), _bare(prompt)
    if len(a) < 4:
        return False
    grams = [a[i : i + 3] for i in range(len(a) - 2)]
    return sum(g in b for g in grams) >= 0.6 * len(grams)


def _bare(text: str) -> str:
    return re.sub(r"[\s,.!?，。！？、:：\"'“”]+", "", text).lower()


def clean_segment(segment: Segment, prompt: str | None = None) -> Segment | None:
    """Drop invented text and collapse repetition loops; None when nothing credible is left."""
    if segment.no_speech_prob > _NO_SPEECH_PROB and segment.avg_logprob < _LOW_LOGPROB:
        return None
    words = collapse_repeats(segment.words)
    text = "".join(w.text for w in words) if words else collapse_repeated_text(segment.text)
    looped = len(words) < len(segment.words) or (not words and text != segment.text)
    # A loop over audio the model itself thinks is not speech is noise, however confident.
    if looped and segment.no_speech_prob > _LOOP_NO_SPEECH_PROB:
        return None
    text = text.strip()
    key = _bare(text)
    if not key or key in _INVENTED or echoes_prompt(text, prompt):
        return None
    if compression_ratio(text) > _MAX_COMPRESSION:
        return None
    return replace(segment, text=text, words=words, compression_ratio=compression_ratio(text))


def drop_noise_loops(segments: Sequence[Segment]) -> list[Segment]:
    """Remove every copy of a repetition loop from a window's segments when the model itself
    thinks the audio is not speech, before they are cut into sentences.  Whisper cuts a
    window at its timestamp tokens, so a loop may be spread over many segments (noise decoded
    as fourteen segments of "1 tbh"), each too short to look like a loop on its own.  Other
    words stay when the model was sure of them (speech before the loop); words it was unsure
    of are the loop's lead-in (noise decoded as "1-2-3-4-4-4…") and go with it.  Segments
    left with no words go."""
    if all(s.no_speech_prob <= _LOOP_NO_SPEECH_PROB for s in segments):
        return list(segments)
    words = tuple(w for s in segments for w in s.words)
    kept = {id(w) for w in collapse_repeats(words, keep_one=False)}
    if len(kept) == len(words):
        return list(segments)
    noisy = [w for s in segments if s.no_speech_prob > _LOOP_NO_SPEECH_PROB for w in s.words]
    rest = [w.probability for w in noisy if id(w) in kept]
    if rest and sum(rest) / len(rest) < _LOOP_LEAD_IN_PROBABILITY:
        kept -= {id(w) for w in noisy}
    result = []
    for segment in segments:
        if segment.no_speech_prob <= _LOOP_NO_SPEECH_PROB or not segment.words:
            result.append(segment)
            continue
        left = tuple(w for w in segment.words if id(w) in kept)
        if left:
            result.append(replace(segment, start=left[0].start, end=left[-1].end, words=left,
                                  text="".join(w.text for w in left)))
    return result


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def _repeat_rule(unit_chars: int, repeats: int) -> bool:
    # "对对对对" and "哈哈哈哈" are speech; a phrase said five times in a row is a loop.
    return repeats >= (8 if unit_chars < 2 else 4)


def collapse_repeats(
    words: tuple[Word, ...], max_unit: int = 12, keep_one: bool = True
) -> tuple[Word, ...]:
    """Keep one copy (or none) of any run of words repeated back-to-back beyond what speech
    does."""
    result = list(words)
    i = 0
    while i < len(result):
        for size in range(1, max_unit + 1):
            unit = _texts(result[i : i + size])
            if len(unit) < size:
                break
            repeats = 1
            while _texts(result[i + repeats * size : i + (repeats + 1) * size]) == unit:
                repeats += 1
            if _repeat_rule(len("".join(unit)), repeats):
                del result[i + (size if keep_one else 0) : i + repeats * size]
                if not keep_one:
                    i -= 1  # the word after the loop is at i now: look at it again
                break
        i += 1
    return tuple(result)


def _texts(words: list[Word]) -> list[str]:
    return [w.text.strip().lower() for w in words]


_REPEAT_TEXT = re.compile(r"(.{1,40}?)\1{3,}", re.DOTALL)


def collapse_repeated_text(text: str) -> str:
    def keep_one(match: re.Match) -> str:
        unit = match.group(1)
        repeats = len(match.group(0)) // len(unit)
        return unit if _repeat_rule(len(unit.strip()), repeats) else match.group(0)

    return _REPEAT_TEXT.sub(keep_one, text)


# Recogniser implementations by the manifest's ``engine`` field.
RECOGNIZERS = {"ctranslate2-whisper": WhisperRecognizer}
