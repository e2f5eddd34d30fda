"""Windows decoded ahead of time, taken instead of decoding them again.

The final pass runs while a recording is being made (``device.ready``): each window it
decodes is kept under a key that names everything its decoding depends on — the model, the
window's audio sample for sample, where it lies in the pass's audio, its prompt, the
language and the decoding options — so the transcription after stop takes a kept window
only where it would have decoded exactly that, and decodes the rest.  In auto mode a
window is decoded in a language chosen from its own ranking among the recording's languages
(``languages.decoded_in``), which change as a recording goes on (the detection listens to
windows spread over what was recorded so far): a kept window is taken while the languages
found since still choose the language it was decoded in (``decoded_alike``), and decoded
again where they choose another.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, fields
from typing import Protocol

import numpy as np
from faster_whisper.transcribe import Segment as RawSegment
from faster_whisper.transcribe import Word as RawWord

from device.recognize.languages import decoded_in
from device.recognize.retry import DecodedWindow

_RAW_FIELDS = [f.name for f in fields(RawSegment) if f.name != "words"]


class WindowMemo(Protocol):
    """Where decoded windows are kept (a recording's, in its database)."""

    def get(self, key: str) -> dict | None: ...

    def put(self, key: str, value: dict) -> None: ...


def window_key(model_id: str, audio: np.ndarray, seek: int, decoding: dict) -> str:
    """``audio``: the window's samples as the decoder reads them; ``decoding``: everything
    else its result depends on."""
    digest = hashlib.sha256(np.ascontiguousarray(audio, dtype=np.float32).tobytes())
    digest.update(json.dumps([model_id, seek, decoding], sort_keys=True,
                             ensure_ascii=False).encode())
    return digest.hexdigest()


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def decoded_alike(ranking: list | None, options) -> bool:
    """A window kept with ``ranking`` (its languages with the one it was decoded in first,
    as ``restored``) is decoded in that language again with ``options``: a language is set,
    or the window's ranking chooses the same among ``options.languages``."""
    if options.language is not None or not ranking:
        return True
    by_likelihood = sorted(ranking, key=lambda pair: -pair[1])
    return decoded_in(by_likelihood, options.languages) == ranking[0][0]


def stored(window: DecodedWindow | None, ranking: list | None) -> dict:
    """A decoded window (None: Whisper heard nothing in it) and its language ranking, as
    JSON can keep them exactly (floats round-trip)."""
    if window is None:
        return {"window": None, "ranking": _plain(ranking)}
    segments = [{**{name: _plain(getattr(s, name)) for name in _RAW_FIELDS},
                 "words": None if s.words is None else [
                     {k: _plain(v) for k, v in asdict(w).items()} for w in s.words]}
                for s in window.segments]
    return {"window": {"seek": window.seek, "segments": segments,
                       "languages": list(window.languages),
                       "avg_logprob": window.avg_logprob,
                       "no_speech_prob": window.no_speech_prob},
            "ranking": _plain(ranking)}


def restored(value: dict) -> tuple[DecodedWindow | None, list | None]:
    ranking = [tuple(pair) for pair in value["ranking"]] if value.get("ranking") else None
    kept = value["window"]
    if kept is None:
        return None, ranking
    segments = tuple(
        RawSegment(**{k: v for k, v in s.items() if k != "words"},
                   words=None if s["words"] is None else [RawWord(**w) for w in s["words"]])
        for s in kept["segments"])
    return DecodedWindow(seek=kept["seek"], segments=segments,
                         languages=tuple(kept["languages"]),
                         avg_logprob=kept["avg_logprob"],
                         no_speech_prob=kept["no_speech_prob"]), ranking
