"""Word timings for a segment whose text a reviewer changed.

The words that stay keep the times Whisper gave them; new or changed words get times
spread over the gaps around them in proportion to their length.  So every segment stays
clickable word by word after an edit, and the player keeps highlighting it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

from device.records import Word

# A CJK character is a word of its own (as Whisper writes Chinese); other text splits at
# spaces, each word keeping the space before it.
_TOKEN = re.compile(r"\s*[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef]"
                    r"|\s*[^\s\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef]+")


def retime_words(words: Sequence[Word], text: str, start: float, end: float) -> tuple[Word, ...]:
    """The words of ``text``, timed from ``words`` (the segment's words before the edit)
    where the text is unchanged, and spread inside [start, end] where it is new.

    >>> old = (Word(0.0, 0.5, " We", 0.9), Word(0.5, 1.0, " meet", 0.9),
    ...        Word(1.0, 2.0, " Tuesday.", 0.9))
    >>> [(w.start, w.end, w.text) for w in retime_words(old, "We meet on Friday.", 0.0, 2.0)]
    [(0.0, 0.5, 'We'), (0.5, 1.0, ' meet'), (1.0, 1.222, ' on'), (1.222, 2.0, ' Friday.')]
    """
    tokens = _TOKEN.findall(text)
    if not tokens:
        return ()
    old = [w.text.strip() for w in words]
    new = [t.strip() for t in tokens]
    timed: list[tuple[float, float, float] | None] = [None] * len(tokens)
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            w = words[block.a + k]
            timed[block.b + k] = (w.start, w.end, w.probability)
    _spread(tokens, timed, start, end)
    return tuple(Word(round(s, 3), round(e, 3), token, p)
                 for token, (s, e, p) in zip(tokens, timed, strict=True))


def _spread(tokens: list[str], timed: list, start: float, end: float) -> None:
    """Give each run of untimed tokens the time between its timed neighbours, each token a
    share by its length (probability 0: nobody heard these words)."""
    i = 0
    while i < len(tokens):
        if timed[i] is not None:
            i += 1
            continue
        j = i
        while j < len(tokens) and timed[j] is None:
            j += 1
        left = timed[i - 1][1] if i > 0 else start
        right = timed[j][0] if j < len(tokens) else end
        right = max(right, left)
        lengths = [max(len(t.strip()), 1) for t in tokens[i:j]]
        total, at = sum(lengths), left
        for k, length in zip(range(i, j), lengths, strict=True):
            step = (right - left) * length / total
            timed[k] = (at, at + step, 0.0)
            at += step
        i = j
