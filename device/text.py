"""Text normalisation shared by search indexing and accuracy scoring.

    >>> search_form("開放時間 9點")
    '开 放 时 间 9 点'
    >>> score_form("開放時間，早上9點！")
    '开放时间早上9点'
"""

from __future__ import annotations

import functools
import re
import unicodedata

import numpy as np

_CJK = re.compile(r"([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff])")
_PUNCT_OR_SPACE = re.compile(r"[\s\W_]+", re.UNICODE)


# Control characters, and the marks that reorder text or hide it (a title with U+202E
# shows its end first on every reviewer's screen).
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e"
                        "\u2060-\u2069\ufeff]")
TITLE_MAX, NAME_MAX, NOTE_MAX = 200, 64, 1000
"""Characters in a recording's title; in a user, speaker or glossary name; in a note."""


def clean_label(text: str, what: str, longest: int) -> str:
    """A title, name or note as people type it: control and bidi characters removed,
    white space folded to single spaces; InvalidInput when it is longer than ``longest``.

    >>> clean_label("\u202eevil.exe\x0b title ", "a title", 200)
    'evil.exe title'
    """
    from device.errors import InvalidInput

    cleaned = " ".join(_INVISIBLE.sub(" ", text).split())
    if len(cleaned) > longest:
        raise InvalidInput(f"{what} may be at most {longest} characters "
                           f"(this one has {len(cleaned):,})")
    return cleaned


@functools.lru_cache(maxsize=4)
def _converter(config: str):
    import opencc

    return opencc.OpenCC(config)


def to_simplified(text: str) -> str:
    return _converter("t2s").convert(text)


def to_traditional(text: str) -> str:
    return _converter("s2t").convert(text)


def to_hongkong(text: str) -> str:
    """Hong Kong Traditional characters (the written form Cantonese readers expect)."""
    return _converter("s2hk").convert(to_simplified(text))


def fold(text: str) -> str:
    """Full-width to half-width (NFKC) and Traditional to Simplified, lower case."""
    return to_simplified(unicodedata.normalize("NFKC", text)).lower()


def search_form(text: str) -> str:
    """The form of text in the full-text index: folded, every CJK character a token."""
    return " ".join(_CJK.sub(r" \1 ", fold(text)).split())


_NUMERAL = re.compile("[零〇一二两三四五六七八九十百千万]+")


def numbers_as_digits(text: str) -> str:
    """Numbers written in Chinese characters as Arabic digits, so that 90 and 九十 score the
    same (applied to both sides alike: 一样 becomes 1样 in each).

    >>> numbers_as_digits("九十岁，两千零二十六年，二零二六，一万五千")
    '90岁，2026年，2026，15000'
    """
    from device.profiles import chinese_number

    def digits(match: re.Match) -> str:
        value = chinese_number(match.group())
        return match.group() if value is None else str(value)

    return _NUMERAL.sub(digits, text)


def score_form(text: str) -> str:
    """Characters compared for the character error rate: folded (Traditional to Simplified,
    full to half width), numbers as digits, no punctuation or spaces."""
    return _PUNCT_OR_SPACE.sub("", numbers_as_digits(fold(text)))


SCORING = ("both sides alike: Traditional to Simplified (OpenCC t2s), full to half width "
           "(NFKC), lower case, numbers in Chinese characters as digits (九十 = 90), "
           "punctuation and spaces removed; for words, English contractions written out "
           "(I'm = I am) and letters spelled one by one joined (N B S = NBS)")
"""How the accuracy harness normalises before it scores (said in its output)."""


_CONTRACTIONS = re.compile(r"(?<=[a-z])(n't|'m|'re|'ll|'ve)\b")
_EXPANDED = {"n't": " not", "'m": " am", "'re": " are", "'ll": " will", "'ve": " have"}
_SPELLED = re.compile(r"\b(?:[b-hj-z] )+[b-hj-z]\b")


def words_form(text: str) -> list[str]:
    """Words compared for the word error rate: folded, the unambiguous English contractions
    written out (I'm = I am, can't = can not), letters spelled one by one joined (N B S =
    NBS), no punctuation.

    >>> words_form("I'm sure you're right: N B S isn't up, it can't be.")
    ['i', 'am', 'sure', 'you', 'are', 'right', 'nbs', 'is', 'not', 'up', 'it', 'can', 'not', 'be']
    """
    text = fold(text).replace("’", "'").replace("can't", "can not").replace("won't", "will not")
    text = _CONTRACTIONS.sub(lambda m: _EXPANDED[m.group(1)], text)
    text = " ".join(_PUNCT_OR_SPACE.split(text.replace("'", "")))
    text = _SPELLED.sub(lambda m: m.group().replace(" ", ""), text)
    return text.split()


def edit_distance(reference: list[str] | str, hypothesis: list[str] | str) -> int:
    """Levenshtein distance, a row of the table at a time in numpy (an hour's transcript
    against its reference, ~10^9 cells, takes seconds): a row's insertions are a running
    minimum, ``new[j] = j + min(new[k] - k for k <= j)``.

    >>> edit_distance("今天开会", "今天开灰了")
    2
    """
    ids: dict[str, int] = {}
    hyp = np.array([ids.setdefault(item, len(ids)) for item in hypothesis], dtype=np.int64)
    steps = np.arange(len(hyp) + 1)
    previous = steps.copy()
    for i, item in enumerate(reference, 1):
        current = np.empty_like(previous)
        current[0] = i
        np.minimum(previous[:-1] + (hyp != ids.get(item, -1)), previous[1:] + 1,
                   out=current[1:])
        previous = np.minimum.accumulate(current - steps) + steps
    return int(previous[-1])


def wrong_in_hypothesis(reference: list[str] | str, hypothesis: list[str] | str
                        ) -> list[bool]:
    """For each item of the hypothesis, whether a minimal alignment to the reference makes it
    a substitution or an insertion (what a confidence mark should catch).

    >>> wrong_in_hypothesis("今天开会", "今天开灰了")
    [False, False, False, True, True]
    """
    n, m = len(reference), len(hypothesis)
    cost = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        cost[i][0] = i
    for j in range(m + 1):
        cost[0][j] = j
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i][j] = min(cost[i - 1][j] + 1, cost[i][j - 1] + 1,
                             cost[i - 1][j - 1] + (reference[i - 1] != hypothesis[j - 1]))
    wrong = [True] * m
    i, j = n, m
    while i > 0 and j > 0:
        if cost[i][j] == cost[i - 1][j - 1] + (reference[i - 1] != hypothesis[j - 1]):
            wrong[j - 1] = reference[i - 1] != hypothesis[j - 1]
            i, j = i - 1, j - 1
        elif cost[i][j] == cost[i][j - 1] + 1:
            j -= 1  # an insertion: stays wrong
        else:
            i -= 1  # a deletion: nothing in the hypothesis to mark
    return wrong


def character_error_rate(reference: str, hypothesis: str) -> float:
    ref, hyp = score_form(reference), score_form(hypothesis)
    return edit_distance(ref, hyp) / max(len(ref), 1)


def word_error_rate(reference: str, hypothesis: str) -> float:
    ref, hyp = words_form(reference), words_form(hypothesis)
    return edit_distance(ref, hyp) / max(len(ref), 1)
