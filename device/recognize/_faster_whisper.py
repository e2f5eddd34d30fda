"""The one module that reaches into faster-whisper's internals.

tingji decodes windows side by side on single-threaded decoders, keeps the encoder output
of chosen windows for reuse and records each window's detected language; faster-whisper
offers none of these, so this module subclasses its ``WhisperModel`` and
``BatchedInferencePipeline`` and overrides private methods
(``_batched_segments_generator``, ``forward``, ``generate_segment_batched``).  Those change
between releases without notice: the version this was written against is pinned in
pyproject.toml and checked here at import.  Everything else talks to this module through
``DecodedWindow`` and plain arrays.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import re
import string
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from types import SimpleNamespace

import ctranslate2
import numpy as np
from faster_whisper import BatchedInferencePipeline, WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_suppressed_tokens

from device.audio import SAMPLE_RATE
from device.libc import release_freed_memory
from device.recognize.languages import decoded_in
from device.recognize.retry import DecodedWindow
from device.recognize.timeline import Window

WRITTEN_FOR = "1.2.1"

if version("faster-whisper") != WRITTEN_FOR:
    raise ImportError(
        f"device/recognize/_faster_whisper.py overrides faster-whisper {WRITTEN_FOR}'s "
        f"internals, and faster-whisper {version('faster-whisper')} is installed: run "
        f"`make install` (pyproject.toml pins {WRITTEN_FOR}), or port this module")


class KeepingEncodings(WhisperModel):
    """faster-whisper's WhisperModel, able to keep the encoder output of chosen windows.

    Auto mode detects the recording's languages on windows the transcription then decodes,
    and a window that fails Whisper's tests is decoded again; an encoder pass costs as much
    as decoding a window, so those take the kept encodings.  Windows are known by their
    features' bytes: a kept encoding is only ever used for the very same input, and once,
    unless the use keeps it again.
    """

    KEPT_MAX = 12  # 3 MB each (1500 x 512 floats): auto mode's 4 detections and a block of votes

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._kept: dict[bytes, np.ndarray] = {}
        self._count_lock = threading.Lock()
        self.windows_encoded = 0
        """Windows run through the encoder since the model was loaded."""
        self.model = _DetectsOnce(self.model)

    @property
    def kept(self) -> int:
        return len(self._kept)

    def _encode(self, features: np.ndarray):
        with self._count_lock:
            self.windows_encoded += 1 if features.ndim == 2 else len(features)
        return super().encode(features)

    def encode(self, features: np.ndarray, keep: bool = False):
        if not keep and not self._kept:  # no hashing when there is nothing to find
            return self._encode(features)
        batch = features[np.newaxis] if features.ndim == 2 else features
        keys = [_features_key(row) for row in batch]
        rows = [self._kept.pop(key, None) for key in keys]
        missing = [i for i, row in enumerate(rows) if row is None]
        if not keep and len(missing) == len(rows):
            return self.model.named(self._encode(features), keys)
        if missing:
            for i, row in zip(missing, np.array(self._encode(batch[missing])), strict=True):
                rows[i] = row
        if keep:
            for row_features, row in zip(batch, rows, strict=True):
                self.keep(row_features, row)
        return self.model.named(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(np.stack(rows))), keys)

    def keep(self, features: np.ndarray, encoding: np.ndarray) -> None:
        """Keep one window's encoding for its next encoder pass (while there is room)."""
        if len(self._kept) < self.KEPT_MAX:
            self._kept[_features_key(features)] = encoding

    def forget(self) -> None:
        self._kept.clear()
        self.model.forget()


class _DetectsOnce:
    """CTranslate2's Whisper, answering a second language detection on the same encoder
    output from memory.  faster-whisper detects each batch's languages to prompt its windows
    and does not return them; the pipeline below asks again for the probabilities (a decoder
    step per batch).  Batches are decoded side by side, so each thread remembers its own.
    The windows whose encodings were kept (``KeepingEncodings``) are also known by their
    features: auto mode detects their languages before the transcription, which then takes
    those rankings instead of detecting again.

    Windows are decoded in the language ranked first, which ``within`` (the recording's
    languages, while a transcription decodes) may move there: see ``_decoded_in``."""

    KNOWN_MAX = 256  # rankings of 99 languages: ~10 kB each

    def __init__(self, whisper):
        self._whisper = whisper
        self._local = threading.local()
        self._count_lock = threading.Lock()
        self.detections = 0
        """Language detections the decoder ran (not those answered from memory)."""
        self.within: tuple[str, ...] = ()
        self._known: dict[bytes, list] = {}  # a window's ranking by its features' key

    def named(self, encoder_output, keys: list[bytes]):
        """The encoder output of the windows whose features have these keys."""
        self._local.named = (encoder_output, keys)
        return encoder_output

    def rankings(self, encoder_output) -> list:
        """Each window's languages as Whisper ranks them, most likely first."""
        last = getattr(self._local, "last", None)
        if last is not None and last[0] is encoder_output:
            return last[1]
        named = getattr(self._local, "named", None)
        keys = named[1] if named is not None and named[0] is encoder_output else []
        found = [self._known.get(key) for key in keys]  # (another thread may clear them)
        if not found or None in found:
            with self._count_lock:
                self.detections += 1
            found = self._whisper.detect_language(encoder_output)
            if keys:
                if len(self._known) + len(keys) > self.KNOWN_MAX:
                    self._known.clear()
                self._known.update(zip(keys, found, strict=True))
        self._local.last = (encoder_output, found)
        return found

    def detect_language(self, encoder_output) -> list:
        """The rankings, each with the language its window is decoded in first."""
        rankings = self.rankings(encoder_output)
        return [_decoded_in(r, self.within) for r in rankings] if self.within else rankings

    def forget(self) -> None:
        """Drop this thread's (the decoding workers' go with them), and the rankings known
        by features."""
        self._local.last = self._local.named = None
        self._known.clear()

    def __getattr__(self, name: str):
        return getattr(self._whisper, name)


def _decoded_in(ranking: list, languages: Sequence[str]) -> list:
    """A window's ranking (of language tokens) with the language it is decoded in first
    (``languages.decoded_in``)."""
    chosen = f"<|{decoded_in([(token[2:-2], p) for token, p in ranking], languages)}|>"
    return sorted(ranking, key=lambda pair: pair[0] != chosen)  # stable: the rest in order


def _features_key(features: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(features).tobytes(), digest_size=16).digest()


class LanguagePerWindow(BatchedInferencePipeline):
    """faster-whisper's BatchedInferencePipeline, decoding batches side by side and
    remembering each window's language.

    With ``multilingual=True`` faster-whisper prompts every window with the language Whisper
    detects in it but does not report it; this records it by window (``Segment.seek``),
    with the probabilities of the others.  The extra detection reuses the encoder output.
    """

    def __init__(self, model: KeepingEncodings, workers: int):
        self._local = threading.local()  # before super(): it sets last_speech_timestamp
        super().__init__(model)
        self.workers = workers
        self.window_ranking: dict[int, list[tuple[str, float]]] = {}
        self.window_prompts: dict[int, str | None] = {}
        """A prompt by window (``seek``) other than the transcription's initial prompt."""

    def keep_encodings_of(self, test) -> None:
        """From now on, in this thread's decodings, keep the encoding of every window
        for which ``test(DecodedWindow)`` is true."""
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
        seek = int(chunks_metadata[0]["offset"] * self.model.frames_per_second)
        prompt = self.window_prompts.get(seek, options.initial_prompt)
        if prompt != options.initial_prompt:  # a batch's windows share the first one's
            options = dataclasses.replace(options, initial_prompt=prompt)
        # A copy per batch, cutting words in every script; its language becomes the
        # window's (``generate_segment_batched``)
        tokenizer = _WordsInEveryScript.of(tokenizer)
        if options.max_new_tokens is not None:  # what the prompt leaves, at most
            room = self.model.max_length - len(self.model.get_prompt(
                tokenizer, tokenizer.encode(prompt) if prompt else [],
                without_timestamps=options.without_timestamps, hotwords=options.hotwords))
            if options.max_new_tokens >= room:
                options = dataclasses.replace(options, max_new_tokens=None)
        results = super().forward(features, tokenizer, chunks_metadata, options)
        if keep_test is not None:
            for i, window in enumerate(results):
                # As the pass will see it (the segments of a window share its scores).
                pairs = [(SimpleNamespace(**{"seek": 0, **segment}), "") for segment in window]
                if pairs and keep_test(DecodedWindow.of(pairs)):
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
            # faster-whisper's batched pipeline keeps the transcription's first language for
            # the word times that follow (its sequential one takes each window's): Chinese
            # decoded in a recording that started in English was cut into words at spaces,
            # one "word" for a whole passage, and the speech of the segments left without
            # words was taken for lost and decoded again: the transcript said it twice.
            spoken = {ranked[0][0] for ranked in detected}  # "<|zh|>"
            if len(spoken) == 1:
                token = spoken.pop()
                tokenizer.language = tokenizer.tokenizer.token_to_id(token)
                tokenizer.language_code = token[2:-2]
        else:
            self._local.rankings = [[] for _ in output]
        return encoder_output, output


_UNSPACED = re.compile("[\u0e00-\u0eff\u1000-\u109f\u3040-\u30ff\u3400-\u4dbf"
                       "\u4e00-\u9fff\uf900-\ufaff]")
"""Scripts written without spaces between words: Thai, Lao, Myanmar, kana, Chinese."""
_UNICODE_WORDS = {"zh", "ja", "th", "lo", "my", "yue"}
"""Languages faster-whisper cuts into words at every character (``split_to_word_tokens``)."""


class _WordsInEveryScript(Tokenizer):
    """faster-whisper's tokenizer, cutting the text into words (for word times) as its
    language does, and, in a language written with spaces, also at each character of a
    script written without them: a window in English with a Chinese sentence in it got
    one "word" for the whole sentence."""

    @classmethod
    def of(cls, tokenizer: Tokenizer) -> _WordsInEveryScript:
        words = copy.copy(tokenizer)
        words.__class__ = cls
        return words

    def split_to_word_tokens(self, tokens: list[int]) -> tuple[list[str], list[list[int]]]:
        if self.language_code in _UNICODE_WORDS:
            return self.split_tokens_on_unicode(tokens)
        words: list[str] = []
        word_tokens: list[list[int]] = []
        for piece, piece_tokens in zip(*self.split_tokens_on_unicode(tokens), strict=True):
            if (words and piece_tokens[0] < self.eot and not piece.startswith(" ")
                    and piece.strip() not in string.punctuation
                    and not _UNSPACED.search(piece) and not _UNSPACED.search(words[-1][-1:])):
                words[-1] += piece
                word_tokens[-1] = word_tokens[-1] + piece_tokens
            else:
                words.append(piece)
                word_tokens.append(piece_tokens)
        return words, word_tokens


def window_seek(model: WhisperModel, window: Window) -> int:
    """A window's ``seek`` as faster-whisper computes it from the window's start."""
    return int(int(window.start * SAMPLE_RATE) / SAMPLE_RATE * model.frames_per_second)


def decode(pipeline: LanguagePerWindow, speech_audio: np.ndarray, windows: Sequence[Window],
           options, language: str | None) -> Iterator[tuple]:
    """(segment, language) pairs of the windows, in order: each window's own language when
    ``options.language`` is None (code-switching: among ``options.languages`` where they
    have the window's script, see ``_decoded_in``), ``language`` starting the decoding."""
    pipeline.model.model.within = options.languages if options.language is None else ()
    segments, info = pipeline.transcribe(
        speech_audio,
        language=language,
        multilingual=options.language is None,
        initial_prompt=options.initial_prompt,
        hotwords=options.hotwords,
        word_timestamps=options.word_timestamps,
        beam_size=options.beam_size,
        batch_size=options.batch_size,
        vad_filter=False,
        clip_timestamps=[{"start": w.start, "end": w.end} for w in windows],
        without_timestamps=False,
        max_new_tokens=None if options.tokens_per_second is None else int(
            max(w.seconds for w in windows) * options.tokens_per_second) + 16,
    )
    for raw in segments:
        ranking = pipeline.window_ranking.get(raw.seek)
        yield raw, ranking[0][0] if ranking else info.language


def encode_window(model: KeepingEncodings, speech_audio: np.ndarray, window: Window,
                  keep: bool = False):
    """A window's encoder output, from its features exactly as the batched transcription
    computes them: an encoding kept (``keep``) is then reused, not computed again."""
    start, end = int(window.start * SAMPLE_RATE), int(window.end * SAMPLE_RATE)
    return encode_audio(model, speech_audio[start:end], keep)


def encode_audio(model: KeepingEncodings, window_audio: np.ndarray, keep: bool = False):
    """``encode_window`` of a window's audio cut already."""
    features = pad_or_trim(model.feature_extractor(window_audio)[..., :-1])
    return model.encode(features, keep=keep)


def detect_languages(model: KeepingEncodings, encoded) -> list[tuple[str, float]]:
    """Language probabilities of an encoded window, most likely first."""
    return [(token[2:-2], p) for token, p in model.model.rankings(encoded)[0]]


def detect_language(model: KeepingEncodings, audio: np.ndarray) -> str:
    """The language of a stretch of audio (an encoder pass of its own)."""
    return model.detect_language(audio)[0]


def decode_greedy(model: KeepingEncodings, encoded, language: str | None,
                  prompt: str | None, hotwords: str | None,
                  max_new_tokens: int) -> tuple[str, float, float]:
    """(text, avg_logprob, no_speech_prob) of an encoded window decoded greedily without
    timestamps, scored as faster-whisper scores a window (length penalty 1)."""
    tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual,
                          task="transcribe", language=language)
    previous = tokenizer.encode(" " + prompt.strip()) if prompt else []
    tokens_in = model.get_prompt(tokenizer, previous, without_timestamps=True,
                                 hotwords=hotwords)
    [result] = model.model.generate(
        encoded,
        [tokens_in],
        beam_size=1,
        max_length=min(model.max_length, len(tokens_in) + max_new_tokens),
        return_scores=True,
        return_no_speech_prob=True,
        suppress_tokens=get_suppressed_tokens(tokenizer, (-1,)),
    )
    tokens = result.sequences_ids[0]
    return (tokenizer.decode(tokens), result.scores[0] * len(tokens) / (len(tokens) + 1),
            float(result.no_speech_prob))
