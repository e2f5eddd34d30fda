"""The grounding check: a summary's points that the segments they cite support only in
part, and numbers and names those segments do not contain (a small model invents them; the
reviewer sees each flag)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from device.records import Segment


@dataclass(frozen=True)
class Flag:
    section: str
    index: int
    term: str
    """The number or name that the cited segments do not contain."""
    reason: str



_ARABIC = re.compile(r"(\d+(?:[.,]\d+)*)\s*(万|亿)?")
_CHINESE = re.compile(r"[零〇一二两三四五六七八九十百千万亿]+")
_NAME = re.compile(r"\b[A-Z][a-z]+(?:\s+[A-Z][a-z]+)*\b")
_COMMON_WORDS = {"The", "A", "An", "We", "They", "He", "She", "It", "I", "This", "That",
                 "And", "But", "Or", "If", "In", "On", "At", "To", "For", "Of", "With",
                 "Action", "Decision", "Key", "Summary", "Title", "Meeting", "Interview",
                 "Speaker", "Discussion", "Review", "Follow", "Ask", "Agreed", "Discuss"}


def numbers_in(text: str, single_numerals: bool) -> dict[str, float]:
    """Numbers written with digits (120万 = 1200000) or Chinese numerals, by their text.

    Lone numeral characters (一 in 统一) count only with ``single_numerals``: a source may
    say 八, but in a summary a lone 一 is usually a word, not a number."""
    from device.profiles import chinese_number

    found: dict[str, float] = {}
    for match in _ARABIC.finditer(text):
        try:
            value = float(match.group(1).replace(",", ""))
        except ValueError:
            continue
        found[match.group(0).strip()] = value * {"万": 1e4, "亿": 1e8}.get(match.group(2), 1)
    for match in _CHINESE.finditer(text):
        run = match.group(0)
        if len(run) == 1 and not single_numerals:
            continue
        multiplier = 1.0
        if run[-1] in "万亿" and len(run) > 1:
            multiplier, run = (1e4 if run[-1] == "万" else 1e8), run[:-1]
        value = chinese_number(run.replace("亿", "万"))
        if value is not None:
            found[match.group(0)] = value * multiplier
    return found


def _names(fields: list[str]) -> list[str]:
    """Capitalised words, less the one that merely starts a sentence."""
    names = []
    for value in fields:
        for match in _NAME.finditer(value):
            name = match.group(0)
            before = value[: match.start()].rstrip()
            if not before or before.endswith((".", "!", "?", ":")):
                name = name.partition(" ")[2]
            if name:
                names.append(name)
    return names


def grounding_flags(summary: dict, segments: Sequence[Segment]) -> list[Flag]:
    """Flag every item its cited segments support only in part (``device.faithfulness``),
    and every number or name in it that they do not contain.

    Items citing no existing segment are flagged as unsupported."""
    from device.faithfulness import SUPPORTED, claim_text, source_units, support
    from device.text import fold

    by_id = {s.id: s for s in segments}
    flags = []
    whole = support(str(summary.get("summary", "")), source_units(" ".join(s.text for s in
                                                                           segments))).share
    if whole < SUPPORTED:
        flags.append(Flag("summary", 0, "", f"only {whole:.0%} of this summary is said in "
                                            "the transcript"))
    for section in ("key_points", "decisions", "action_items"):
        for index, item in enumerate(summary.get(section, [])):
            cited = [by_id[i] for i in item.get("segments", []) if i in by_id]
            text = " ".join(str(item.get(k, "")) for k in ("text", "what", "owner", "due"))
            if not cited:
                flags.append(Flag(section, index, "", "cites no segment of this transcript"))
                continue
            source = fold(" ".join(s.text for s in cited))
            share = support(claim_text(item), source_units(source)).share
            if share < SUPPORTED:
                flags.append(Flag(section, index, "", f"only {share:.0%} of this is said in "
                                                      "the cited segments"))
            source_values = set(numbers_in(source, single_numerals=True).values())
            for term, value in numbers_in(fold(text), single_numerals=False).items():
                if value not in source_values:
                    flags.append(Flag(section, index, term,
                                      "this number is not in the cited segments"))
            for name in _names([str(item.get(k, "")) for k in ("text", "what", "owner", "due")]):
                words = [w for w in name.split() if w not in _COMMON_WORDS]
                if words and not all(fold(w) in source for w in words):
                    flags.append(Flag(section, index, name,
                                      "this name is not in the cited segments"))
    return flags
