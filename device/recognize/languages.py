"""Which language a stretch of text is in, judged by its script and Whisper's rankings."""

from __future__ import annotations

import re
from collections.abc import Sequence

_HAN_KANA_HANGUL = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")
_CJK_LANGUAGES = {"zh", "yue", "ja", "ko"}
_CLEAR_MIN = 0.001
_CLEAR_RATIO = 5.0
_OWN_MIN = 0.5
"""Whisper base on 30 s windows of real speech in English, French, Spanish, Italian and
Russian ranked the right language first with 0.86-1.0 (132 windows of 133), the one it
ranked wrong with 0.23 (Spanish as English, 0.18 next)."""


def script(text: str) -> str | None:
    """'cjk' or 'latin' for text clearly in one of them, else None."""
    cjk, latin = len(_HAN_KANA_HANGUL.findall(text)), len(_LATIN.findall(text))
    if cjk >= 2 and cjk * 3 >= latin:
        return "cjk"
    if latin >= 4 and cjk == 0:
        return "latin"
    return None


def script_of(language: str | None) -> str | None:
    if language is None:
        return None
    return "cjk" if language in _CJK_LANGUAGES else "latin"


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
    Korean one and has at least even odds (``_OWN_MIN``); else the first of them in its
    script.  A recording auto mode found in Chinese is decoded in it, whatever its variety
    makes Whisper rank first (Sichuanese heard as Cantonese), while a sentence of English
    among Mandarin ones (its detection across the recording: ~0.01) is still written in
    English, not translated, and so is a window of Spanish in a recording whose languages
    were found as English and French (the detection listens to four windows)."""
    top, p = ranking[0]
    if top in languages or (script_of(top) != "cjk" and p >= _OWN_MIN):
        return top
    return first_in(languages, script_of(top)) or top


def first_in(languages: Sequence[str], script: str | None) -> str | None:
    """The first of ``languages`` written in ``script``."""
    return next((lang for lang in languages if script_of(lang) == script), None)
