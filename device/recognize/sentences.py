"""A decoded window's text, cut into the sentence-sized segments a reader edits."""

from __future__ import annotations

from dataclasses import replace

from device.records import Segment, Word

PAUSE_SPLIT_SECONDS = 1.0
LONGEST_SEGMENT_SECONDS = 15.0
_SENTENCE_END = (".", "?", "!", "。", "？", "！", "…")


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
