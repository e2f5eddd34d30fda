"""Which language a stretch of text is in, judged by its script and Whisper's rankings."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from functools import lru_cache

_CJK = {"CJK", "HIRAGANA", "KATAKANA", "KATAKANA-HIRAGANA", "HANGUL"}
_WRITTEN_IN = {
    "cjk": "zh yue ja ko", "cyrillic": "ru uk be bg mk sr kk ba tt mn tg", "greek": "el",
    "arabic": "ar fa ur ps sd", "hebrew": "he yi", "devanagari": "hi mr ne sa",
    "bengali": "bn as", "gurmukhi": "pa", "gujarati": "gu", "tamil": "ta", "telugu": "te",
    "kannada": "kn", "malayalam": "ml", "sinhala": "si", "thai": "th", "lao": "lo",
    "myanmar": "my", "khmer": "km", "tibetan": "bo", "georgian": "ka", "armenian": "hy",
    "ethiopic": "am",
}
"""Whisper's languages not written in the Latin alphabet, by script (named as the Unicode
names of its letters begin)."""
_SCRIPTS = {*_WRITTEN_IN, "latin"}
_SCRIPT_OF = {lang: name for name, langs in _WRITTEN_IN.items() for lang in langs.split()}
_CLEAR_MIN = 0.001
_CLEAR_RATIO = 5.0
_OWN_MIN = 0.5
"""Whisper base on 30 s windows of real speech in English, French, Spanish, Italian and
Russian ranked the right language first with 0.86-1.0 (132 windows of 133), the one it
ranked wrong with 0.23 (Spanish as English, 0.18 next)."""


def script(text: str) -> str | None:
    """The script ``text`` is clearly written in ('cjk', 'latin', 'cyrillic', ...), else
    None: two Chinese, Japanese or Korean characters and at least a quarter of the letters,
    or four letters of one alphabet and three quarters of them (a name in Latin letters
    among Russian words stays Russian)."""
    counts: dict[str, int] = {}
    for char in text:
        if char.isalpha() and (name := _letter_script(char)) in _SCRIPTS:
            counts[name] = counts.get(name, 0) + 1
    letters, cjk = sum(counts.values()), counts.pop("cjk", 0)
    if cjk >= 2 and cjk * 4 >= letters:
        return "cjk"
    alphabet, most = max(counts.items(), key=lambda item: item[1], default=(None, 0))
    if most >= 4 and cjk == 0 and most * 4 >= letters * 3:
        return alphabet
    return None


@lru_cache(maxsize=4096)
def _letter_script(char: str) -> str:
    first = unicodedata.name(char, "").split(" ")[0]
    return "cjk" if first in _CJK else first.lower()  # a modifier letter, ª: not in _SCRIPTS


def script_of(language: str | None) -> str | None:
    if language is None:
        return None
    return _SCRIPT_OF.get(language, "latin")


def clear_choice(ranking: Sequence[tuple[str, float]], script: str) -> str | None:
    """The language of ``script`` a window's detection ranks first, if it stands out.

    Whisper detects a window's language mostly from its first seconds, so a language that
    comes in later gets a small probability (English after Mandarin: 0.004-0.011) but still
    ranks far above the other languages of its script (~0.0001).
    """
    candidates = [(lang, p) for lang, p in ranking if script_of(lang) == script]
    if not candidates:
        return None
    (first, p1), p2 = candidates[0], candidates[1][1] if len(candidates) > 1 else 0.0
    return first if p1 >= _CLEAR_MIN and p1 >= _CLEAR_RATIO * p2 else None


def decoded_in(ranking: Sequence[tuple[str, float]], languages: Sequence[str]) -> str:
    """The language a window Whisper ranks so is decoded in, in a recording of
    ``languages`` (auto mode's, most likely first): the one ranked first when it is one of
    them, when no language of its script is, or when it is not a Chinese, Japanese or
    Korean one and has at least even odds (``_OWN_MIN``); else the one of them in its
    script the window ranks highest (the first of them when its ranking, cut short, has
    none).  So an unclear window follows which languages were found, not their order,
    which changes more often during a recording.  A recording auto mode found in Chinese
    is decoded in it, whatever its variety makes Whisper rank first (Sichuanese heard as
    Cantonese), while a sentence of English among Mandarin ones (its detection across the
    recording: ~0.01) is still written in English, not translated, and so is a window of
    Spanish in a recording whose languages were found as English and French (the
    detection listens to four windows)."""
    top, p = ranking[0]
    if top in languages or (script_of(top) != "cjk" and p >= _OWN_MIN):
        return top
    script = script_of(top)
    ranked = (lang for lang, _ in ranking if lang in languages and script_of(lang) == script)
    return next(ranked, None) or first_in(languages, script) or top


def first_in(languages: Sequence[str], script: str | None) -> str | None:
    """The first of ``languages`` written in ``script``."""
    return next((lang for lang in languages if script_of(lang) == script), None)
