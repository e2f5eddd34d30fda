"""Guards against the text Whisper invents: on silence, music and noise, in repetition
loops, and by writing its prompt back."""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import replace

from device.records import Segment, Word

# Text Whisper produces on silence, music and noise (from its subtitle training data).
INVENTED = {
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
NO_SPEECH_PROB = 0.6
"""Whisper's own no-speech threshold."""
LOW_LOGPROB = -1.0
"""Whisper's own threshold for text too unlikely to be what was said."""
MAX_COMPRESSION = 2.4
"""Whisper's own loop test: text that compresses better than this is not speech."""
LOOP_NO_SPEECH_PROB = 0.5
LOOP_LEAD_IN_PROBABILITY = 0.5
"""Mean word probability under which the words left beside a noise loop go too (the
"1-2-3" before a loop on brown noise scored 0.36; real speech 0.75-0.94 per segment)."""


ECHO_SHORT = 5
"""Characters up to which text is an echo of its prompt when all its pairs are in it."""


def echoes_prompt(text: str, prompt: str | None) -> bool:
    """Whisper sometimes writes its prompt back instead of the speech (on unclear audio),
    or a few characters of it for a whole sentence ("体中" of "简体中文" for 3 s of
    Mandarin): short text made only of the prompt's character pairs is not taken as said."""
    if not prompt:
        return False
    a, b = _bare(text), _bare(prompt)
    if len(a) < 2:
        return False
    if len(a) <= ECHO_SHORT:
        return all(a[i : i + 2] in b for i in range(len(a) - 1))
    grams = [a[i : i + 3] for i in range(len(a) - 2)]
    return sum(g in b for g in grams) >= 0.6 * len(grams)


def _bare(text: str) -> str:
    return re.sub(r"[\s,.!?，。！？、:：\"'“”]+", "", text).lower()


def clean_segment(segment: Segment, prompt: str | None = None) -> Segment | None:
    """Drop invented text and collapse repetition loops; None when nothing credible is left."""
    if segment.no_speech_prob > NO_SPEECH_PROB and (
            segment.avg_logprob < LOW_LOGPROB or _timeless(segment)):
        return None
    words = collapse_repeats(segment.words)
    text = "".join(w.text for w in words) if words else collapse_repeated_text(segment.text)
    looped = len(words) < len(segment.words) or (not words and text != segment.text)
    # A loop over audio the model itself thinks is not speech is noise, however confident.
    if looped and segment.no_speech_prob > LOOP_NO_SPEECH_PROB:
        return None
    text = text.strip()
    key = _bare(text)
    if not key or key in INVENTED or echoes_prompt(text, prompt):
        return None
    if compression_ratio(text) > MAX_COMPRESSION:
        return None
    return replace(segment, text=text, words=words, compression_ratio=compression_ratio(text))


def _timeless(segment: Segment) -> bool:
    """Words the alignment found no sound for, every one at an instant: over audio the model
    thinks is not speech, confident text so placed is invented (brown noise decoded as
    "I'm sorry" at 29.6-29.6 s of a 30 s window, p 0.98, no-speech probability 0.99, on
    an AVX-512 CPU)."""
    return bool(segment.words) and all(w.end <= w.start for w in segment.words)


def drop_noise_loops(segments: Sequence[Segment]) -> list[Segment]:
    """Remove every copy of a repetition loop from a window's segments when the model itself
    thinks the audio is not speech, before they are cut into sentences.  Whisper cuts a
    window at its timestamp tokens, so a loop may be spread over many segments (noise decoded
    as fourteen segments of "1 tbh"), each too short to look like a loop on its own.  Other
    words stay when the model was sure of them (speech before the loop); words it was unsure
    of are the loop's lead-in (noise decoded as "1-2-3-4-4-4…") and go with it.  Segments
    left with no words go."""
    if all(s.no_speech_prob <= LOOP_NO_SPEECH_PROB for s in segments):
        return list(segments)
    words = tuple(w for s in segments for w in s.words)
    kept = {id(w) for w in collapse_repeats(words, keep_one=False)}
    if len(kept) == len(words):
        return list(segments)
    noisy = [w for s in segments if s.no_speech_prob > LOOP_NO_SPEECH_PROB for w in s.words]
    rest = [w.probability for w in noisy if id(w) in kept]
    if rest and sum(rest) / len(rest) < LOOP_LEAD_IN_PROBABILITY:
        kept -= {id(w) for w in noisy}
    result = []
    for segment in segments:
        if segment.no_speech_prob <= LOOP_NO_SPEECH_PROB or not segment.words:
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
