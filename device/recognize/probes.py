"""What auto mode asks of a Whisper model before it transcribes: the languages of stretches
of speech, and trial decodings of their first window with several prompts (to tell the
varieties of a language apart, ``device.varieties``).  Windows are encoded once: the
encodings are kept for the transcription that follows."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import TypeVar

import numpy as np

from device.recognize import RecognitionOptions
from device.recognize import _faster_whisper as fw
from device.recognize.cleanup import clean_segment, compression_ratio
from device.recognize.memo import WindowMemo, window_key
from device.recognize.timeline import Timeline, Window
from device.records import Segment
from device.vad import SpeechChunk

T = TypeVar("T")
R = TypeVar("R")


class Probes:
    """Language detection and trial decodings, for a recogniser with a ``model``
    (``_faster_whisper.KeepingEncodings``), its ``model_id``, ``workers`` decoding side by
    side and a ``memo`` (or None) keeping what was computed during the recording."""

    model: fw.KeepingEncodings
    model_id: str
    workers: int
    memo: WindowMemo | None

    def detect_language(
        self, audio: np.ndarray, speech: Sequence[SpeechChunk], windows: int = 4
    ) -> dict[str, float]:
        if not speech:
            return {}
        timeline = Timeline(speech)
        spans = timeline.windows()
        picks = sorted({round(i * (len(spans) - 1) / max(windows - 1, 1))
                        for i in range(min(windows, len(spans)))})
        return _averaged(self._rankings([timeline.samples(audio, spans[i]) for i in picks]))

    def detect_each(
        self, audio: np.ndarray, stretches: Sequence[Sequence[SpeechChunk]]
    ) -> list[dict[str, float]]:
        """``detect_language`` of each stretch's first window, side by side."""
        found = iter(self._rankings([_first_window(audio, Timeline(s))[0]
                                     for s in stretches if s]))
        return [_averaged([next(found)]) if s else {} for s in stretches]

    def _rankings(self, windows: list[np.ndarray]) -> list:
        """Each window's (its audio's) languages as Whisper ranks them, the windows
        encoded side by side and their encodings kept for the decoding."""

        def detect(i: int) -> list[tuple[str, float]]:
            encoded = fw.encode_audio(self.model, windows[i], keep=True)
            return fw.detect_languages(self.model, encoded)

        def key(i: int) -> str:
            return window_key(self.model_id, windows[i], 0, {"kind": "language"})

        return self._remembered(detect, list(range(len(windows))), key, lambda ranking: [
            [language, float(p)] for language, p in ranking])

    def compare(
        self, audio: np.ndarray, speech: Sequence[SpeechChunk],
        options: Sequence[RecognitionOptions], seconds: float | None = None,
    ) -> list[list[Segment]]:
        """The speech's first window, encoded once and decoded greedily per set of options
        (decoding each through ``transcribe`` would encode it every time), as far as about
        ``seconds`` of speech say (all of it by default); see ``compare_each``."""
        return self.compare_each(audio, [speech], options, seconds)[0]

    def compare_each(
        self, audio: np.ndarray, stretches: Sequence[Sequence[SpeechChunk]],
        options: Sequence[RecognitionOptions], seconds: float | None = None,
    ) -> list[list[list[Segment]]]:
        """``compare`` on each stretch: the stretches' first windows encoded side by side,
        then every window's decodings side by side.  Not batched: CTranslate2 wants the
        prompts of a batch to be of one length.

        Language detection keeps the encoding of the windows it detects on, so after it
        this costs no encoder pass; they are kept again for the transcription."""
        trials: list[list[list[Segment]] | None] = []
        todo: list[tuple[int, Timeline, Window, np.ndarray, int, str]] = []
        for n, speech in enumerate(stretches):
            if not speech:
                trials.append([[] for _ in options])
                continue
            timeline = Timeline(speech)
            window_audio, window = _first_window(audio, timeline)
            # A prompt that sets off a repetition loop must not decode on to the model's
            # limit: speech is well under 8 tokens a second.
            new_tokens = 16 + int(8 * min(window.seconds, seconds or window.seconds))
            key = window_key(self.model_id, window_audio, 0, {
                "kind": "trials", "tokens": new_tokens,
                "chunks": [[c.start, c.end] for c in speech],
                "options": [[o.language, o.initial_prompt, o.hotwords] for o in options]})
            found = self.memo.get(key) if self.memo is not None else None
            trials.append(None if found is None else [
                [Segment(**segment) for segment in trial] for trial in found["trials"]])
            if found is None:
                todo.append((n, timeline, window, window_audio, new_tokens, key))
        encoded = self._side_by_side(
            lambda job: fw.encode_window(self.model, job[3], job[2], keep=True), todo)

        def decode(job: tuple[int, RecognitionOptions]) -> list[Segment]:
            j, option = job
            n, timeline, window, _, new_tokens, _ = todo[j]
            text, avg_logprob, no_speech_prob = fw.decode_greedy(
                self.model, encoded[j], option.language, option.initial_prompt,
                option.hotwords, new_tokens)
            segment = Segment(
                start=stretches[n][0].start_s,
                end=timeline.to_recording(window.end, is_end=True),
                text=text, language=option.language, avg_logprob=avg_logprob,
                no_speech_prob=no_speech_prob, compression_ratio=compression_ratio(text))
            cleaned = clean_segment(segment, option.initial_prompt)
            return [cleaned] if cleaned is not None else []

        decoded = iter(self._side_by_side(
            decode, [(j, option) for j in range(len(todo)) for option in options]))
        for n, *_, key in todo:
            trials[n] = [next(decoded) for _ in options]
            if self.memo is not None:
                self.memo.put(key, {"trials": [[
                    {name: value for name, value in asdict(segment).items() if name != "words"}
                    for segment in trial] for trial in trials[n]]})
        return trials

    def _side_by_side(self, work: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``work`` on every item, as many at once as there are decoding workers."""
        with ThreadPoolExecutor(self.workers, thread_name_prefix="whisper") as pool:
            return list(pool.map(work, items))

    def _remembered(self, work: Callable[[T], R], items: list[T], key: Callable[[T], str],
                    to_json: Callable[[R], object]) -> list:
        """``_side_by_side``, with what the memo holds taken from it and the rest kept in it
        (read and written in this thread: the memo is a database connection)."""
        if self.memo is None:
            return self._side_by_side(work, items)
        keys = [key(item) for item in items]
        found = [self.memo.get(k) for k in keys]
        todo = [item for item, value in zip(items, found, strict=True) if value is None]
        done = iter(self._side_by_side(work, todo))
        results = []
        for k, value in zip(keys, found, strict=True):
            if value is None:
                value = {"value": to_json(next(done))}
                self.memo.put(k, value)
            results.append(value["value"])
        return results


def _first_window(audio: np.ndarray, timeline: Timeline) -> tuple[np.ndarray, Window]:
    """The speech-only audio of a stretch's first window, and the window."""
    window = timeline.windows()[0]
    return timeline.samples(audio, window), window


def _averaged(rankings: list) -> dict[str, float]:
    """The languages of several windows' rankings, by mean probability, most likely first."""
    totals: dict[str, float] = {}
    for ranking in rankings:
        for language, probability in ranking:
            totals[language] = totals.get(language, 0.0) + probability / len(rankings)
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])[:5]
    return {language: round(p, 4) for language, p in ranked if p >= 0.001}
