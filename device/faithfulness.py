"""Whether a summary can be shown: degenerate output, and how well each claim is supported
by the transcript lines it cites.

A small model fails in two ways a reviewer cannot see from the page.  It loops (one phrase
of the first line repeated through every field, each point citing every line, the same
keywords again and again): ``degeneracy`` names the failure, and such a summary is written
again with other sampling, or not stored; one whose only fault is its key points copied
into the decisions and action items is shown without the copies (``mend``).  And it writes
fluent claims that the transcript does not say: ``support`` scores a claim by the share of
its content found in the lines it cites — character pairs of Chinese (a paraphrase keeps
most of them), content words of English — so an unsupported claim is re-cited where the
transcript does say it, flagged, or left out of the summary and listed as such.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from device.errors import N_
from device.said import Said
from device.text import fold

SUPPORTED = 0.5
"""A claim with at least this share of its content in the lines it cites is supported."""
UNSUPPORTED = 0.25
"""Below this share a claim is left out of the summary (kept aside, listed on the page)."""
LOOP_RATIO = 3.0
"""zlib's compression ratio of a field above which it is a repetition loop (ordinary text
of either language stays under 2)."""
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_PERCENT = re.compile(r"百分之([零〇一二两三四五六七八九十百]+)")
_MYRIADS = re.compile(r"(\d+(?:\.\d+)?)\s*(万|亿)")
_NUMERALS = re.compile(r"[零〇一二两三四五六七八九十百千万]+")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_STOPWORDS = frozenset("""
a an the and or but if of to in on at by for with from as is are was were be been being it
its this that these those there here they them their he she his her we us our you your i me
my not no so do does did done have has had will would shall should can could may might must
about into over after before than then also just very more most some any all each other such
what which who whom when where why how said says say speaker speakers transcript part line
""".split())
_FUNCTION_CHARS = set("的了是在和与及等也都就而又或把被对为这那个们着过吗呢吧啊呀之其")


@dataclass(frozen=True)
class Support:
    share: float
    """The share of the claim's content found in the lines it cites (1.0: all of it)."""
    units: int
    """How much content the claim has (character pairs or words)."""


def units(text: str) -> list[str]:
    """The content of a text as units to look for in a source: each pair of adjacent Chinese
    characters (pairs of two function characters left out) and each content word of other
    scripts, lower-cased and stripped of a plural or tense ending."""
    folded = _PERCENT.sub(r"\1", fold(text).lower())
    folded = _NUMERALS.sub(_arabic, _MYRIADS.sub(_myriads, folded))
    found = []
    for run in _CJK.findall(folded):
        found += [run[i:i + 2] for i in range(len(run) - 1)
                  if not (run[i] in _FUNCTION_CHARS and run[i + 1] in _FUNCTION_CHARS)]
        if len(run) == 1 and run not in _FUNCTION_CHARS:
            found.append(run)
    for word in _WORD.findall(_CJK.sub(" ", folded)):
        if word not in _STOPWORDS and (len(word) > 2 or word.isdigit()):
            found.append(_stem(word))
    return found


def _arabic(match: re.Match) -> str:
    """Chinese numerals as digits, so 九点 in a claim is found as 9点 in the transcript."""
    from device.profiles import chinese_number

    value = chinese_number(match.group(0))
    return f" {value} " if value is not None else match.group(0)


def _myriads(match: re.Match) -> str:
    """120万 as 1200000, as 一百二十万 becomes."""
    value = float(match.group(1)) * (1e4 if match.group(2) == "万" else 1e8)
    return f" {value:.0f} " if value.is_integer() else match.group(0)


def _stem(word: str) -> str:
    for ending in ("ing", "ed", "es", "s"):
        if word.endswith(ending) and len(word) - len(ending) >= 3:
            return word[: -len(ending)]
    return word


def source_units(text: str) -> set[str]:
    return set(units(text))


def support(claim: str, source: set[str]) -> Support:
    """How much of ``claim`` the source (``source_units`` of the cited lines) contains."""
    wanted = units(claim)
    if not wanted:
        return Support(1.0, 0)
    return Support(sum(u in source for u in wanted) / len(wanted), len(wanted))


def best_lines(claim: str, lines: Sequence[set[str]], most: int = 3) -> list[int]:
    """Indexes of the lines (``source_units`` each) that contain most of ``claim``,
    best first: where the transcript says it."""
    wanted = set(units(claim))
    if not wanted:
        return []
    chosen: list[int] = []
    covered: set[str] = set()
    for i in sorted(range(len(lines)), key=lambda i: (-len(wanted & lines[i]), i)):
        if not wanted & lines[i] or len(chosen) == most:
            break
        if wanted & lines[i] - covered:  # adds something the chosen lines do not say
            chosen.append(i)
            covered |= wanted & lines[i]
    return sorted(chosen)


# -- degenerate output ---------------------------------------------------------------------


def looping(text: str) -> bool:
    """A repetition loop: the text compresses far better than language does, or one short
    phrase makes up much of it."""
    compact = re.sub(r"\s+", "", fold(text))
    if len(compact) < 24:
        return False
    raw = compact.encode("utf-8")
    if len(raw) / len(zlib.compress(raw, 9)) > LOOP_RATIO:
        return True
    grams = Counter(compact[i:i + 4] for i in range(len(compact) - 3))
    gram, count = grams.most_common(1)[0]
    return count >= 5 and count * 4 >= 0.4 * len(compact)


def loop_at_end(text: str) -> bool:
    """Generation has fallen into a loop: the end of the text is one phrase (2-40
    characters) repeated to at least 60 characters."""
    tail = text[-400:]
    match = re.search(r"(.{2,40}?)\1{3,}$", tail, re.S)
    return bool(match) and len(match.group(0)) >= 60


def _fields(summary: dict) -> list[tuple[str, str]]:
    found = [("title", str(summary.get("title", ""))), ("summary", str(summary.get("summary", "")))]
    for section in ("key_points", "decisions", "action_items"):
        for n, item in enumerate(summary.get(section) or []):
            found.append((f"{section}[{n}]", claim_text(item)))
    return found


def claim_text(item: dict) -> str:
    """What an item claims: a point's text, an action's what (with owner and due)."""
    return " ".join(str(item.get(k) or "") for k in ("text", "what", "owner", "due")).strip()


def degeneracy(summary: dict, lines: int) -> str | None:
    """Why this summary (as the model wrote it, citing ``lines`` numbered lines) must not
    be shown, or None."""
    fields = _fields(summary)
    for name, text in fields:
        if looping(text):
            return Said(N_("%(field)s repeats itself (%(text)s…)"), field=name, text=text[:30])
    everything = " ".join(text for _, text in fields)
    if looping(everything):
        return Said(N_("the same words fill every field"))
    # A short transcript's one line may well be the summary and its key point too; one
    # text in three fields, or copies making up half of the fields, is no summary.
    texts = Counter(key for _, text in fields
                    if len(key := re.sub(r"\W+", "", fold(text).lower())) >= 6)
    copies = sum(texts.values()) - len(texts)
    if texts and (texts.most_common(1)[0][1] >= 3
                  or (copies >= 2 and copies * 2 >= sum(texts.values()))):
        return Said(N_("the same text was copied into several fields"))
    items = [item for section in ("key_points", "decisions", "action_items")
             for item in summary.get(section) or []]
    if lines >= 5 and len(items) >= 2:
        whole = sum(len(set(item.get("segments") or [])) >= max(4, 0.8 * lines)
                    for item in items)
        if whole * 2 >= len(items):
            return Said(N_("every point cites the whole transcript"))
    keywords = [fold(str(k)).strip().lower() for k in summary.get("keywords") or []]
    if len(keywords) >= 4 and len(set(keywords)) * 2 <= len(keywords):
        return Said(N_("the keywords repeat each other"))
    return None


def mend(summary: dict, lines: int) -> tuple[dict, int, str | None]:
    """A degenerate summary whose items copy items before them (a small model fills the
    decisions and action items with its key points, word for word), without those copies
    when that is all that was wrong: (the summary, copies dropped, why it still must not
    be shown or None).  A summary that can be shown as written is kept as written."""
    reason = degeneracy(summary, lines)
    if reason is None:
        return summary, 0, None
    seen: set[str] = set()
    mended, dropped = dict(summary), 0
    for section in ("key_points", "decisions", "action_items"):
        kept = []
        for item in summary.get(section) or []:
            said = str(item.get("text") or item.get("what") or "")
            key = re.sub(r"\W+", "", fold(said).lower())
            if key in seen:
                dropped += 1
            else:
                seen.add(key)
                kept.append(item)
        mended[section] = kept
    if dropped and degeneracy(mended, lines) is None:
        return mended, dropped, None
    return summary, 0, reason


# -- claims --------------------------------------------------------------------------------


@dataclass
class CheckedClaims:
    summary: dict
    """The summary with unsupported claims left out and misplaced citations moved."""
    weak: list[tuple[str, int, float]] = field(default_factory=list)
    """(section, index, share) of kept claims only partly supported: flagged on the page."""
    unsupported: list[dict] = field(default_factory=list)
    """Claims left out: {"section", "text", "support"}."""
    recited: int = 0
    """Claims whose citations were moved to the lines that say them."""
    claims: int = 0
    """Claims the model wrote."""


def check_claims(summary: dict, lines: Sequence[str]) -> CheckedClaims:
    """Score every key point, decision and action item against the lines it cites (1-based
    numbers into ``lines``).  A claim the cited lines do not support, but others do, cites
    those instead; one that no line supports is left out; one partly supported is kept and
    reported as weak.  A summary whose every claim is left out is not a summary: the
    caller refuses it."""
    sources = [source_units(text) for text in lines]
    out = dict(summary)
    checked = CheckedClaims(out)
    for section in ("key_points", "decisions", "action_items"):
        kept = []
        for item in summary.get(section) or []:
            checked.claims += 1
            claim = claim_text(item)
            cited = [n for n in item.get("segments") or []
                     if isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= len(lines)]
            item = {**item, "segments": cited}
            score = support(claim, set().union(*(sources[n - 1] for n in cited)))
            if score.share < SUPPORTED:
                better = best_lines(claim, sources)
                rescored = support(claim, set().union(*(sources[i] for i in better)))
                # moved when that makes it supported, or saves it from being left out
                if better and rescored.share > score.share and (
                        rescored.share >= SUPPORTED or score.share < UNSUPPORTED):
                    item, score = {**item, "segments": [i + 1 for i in better]}, rescored
                    checked.recited += 1
            if score.share < UNSUPPORTED:
                checked.unsupported.append({"section": section, "text": claim,
                                            "support": round(score.share, 2)})
                continue
            if score.share < SUPPORTED:
                checked.weak.append((section, len(kept), round(score.share, 2)))
            kept.append(item)
        out[section] = kept
    return checked
