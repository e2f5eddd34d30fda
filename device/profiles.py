"""Dialect profiles: data that tells recognition how people in a place talk and write.

A profile names a Whisper language, a model, an output script, an initial prompt in the
variety's own written form, hotwords, corrections and normalisation rules.  The built-in
profiles live in ``device/profiles.toml``; an admin's TOML files in ``DATA_DIR/profiles/``
override or extend them.

    >>> profiles = load_profiles(None)
    >>> profiles["cantonese"].language, profiles["cantonese"].script
    ('zh', 'hongkong')
    >>> finish_text("開放時間早上九點 至下午五點", profiles["mandarin"])
    '开放时间早上9点，至下午5点'
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from device.errors import N_, TingjiError
from device.records import Segment
from device.text import to_hongkong, to_simplified, to_traditional

BUILTIN = Path(__file__).with_name("profiles.toml")
SCRIPTS = ("simplified", "traditional", "hongkong", "as-spoken")
PUNCTUATION = ("full-width", "half-width", "keep")
NUMBERS = ("arabic", "keep")
AUTO = "auto"


class ProfileError(TingjiError):
    pass


@dataclass(frozen=True)
class Profile:
    name: str
    title: str
    language: str
    """Whisper language code, or "auto"."""
    model: str
    script: str = "as-spoken"
    prompt: str | None = None
    hotwords: tuple[str, ...] = ()
    corrections: tuple[tuple[str, str], ...] = ()
    """(misheard, right) pairs, applied longest first."""
    punctuation: str = "keep"
    numbers: str = "keep"
    markers: str = ""
    plain_logprob_below: float | None = None
    """Auto mode takes this variety when no variety's written forms decide and Whisper is
    less sure than this (mean token log-probability) of the plain profile's decoding: the
    standard language's decoding is unsure of dialect speech."""
    source: str = "built-in"
    """Where the profile was read from (for error messages and the admin page)."""

    @property
    def is_auto(self) -> bool:
        return self.language == AUTO


@dataclass(frozen=True)
class Terms:
    """Hotwords and corrections for one transcription: the glossary plus the recording's own."""

    hotwords: tuple[str, ...] = ()
    corrections: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, items: Iterable[str]) -> Terms:
        """'华为' is a hotword; '花为=华为' also corrects 花为 to 华为."""
        hotwords, corrections = [], []
        for item in items:
            item = item.strip()
            if not item:
                continue
            if "=" in item:
                wrong, right = (part.strip() for part in item.split("=", 1))
                if not wrong or not right:
                    raise ProfileError(f"term {item!r}: write it as misheard=right")
                corrections.append((wrong, right))
                hotwords.append(right)
            else:
                hotwords.append(item)
        return cls(tuple(dict.fromkeys(hotwords)), tuple(corrections))

    def __add__(self, other: Terms) -> Terms:
        return Terms(tuple(dict.fromkeys(self.hotwords + other.hotwords)),
                     self.corrections + other.corrections)


NO_TERMS = Terms()

_FIELDS = {f for f in Profile.__dataclass_fields__} - {"source"}


def _profile(data: dict, source: str) -> Profile:
    unknown = set(data) - _FIELDS
    if unknown:
        raise ProfileError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}; "
                           f"valid: {', '.join(sorted(_FIELDS))}")
    for required in ("name", "language", "model"):
        if not isinstance(data.get(required), str) or not data[required].strip():
            raise ProfileError(f"{source}: profile needs a {required!r}")
    name = data["name"]
    for key, choices in (("script", SCRIPTS), ("punctuation", PUNCTUATION), ("numbers", NUMBERS)):
        if key in data and data[key] not in choices:
            raise ProfileError(f"{source}: profile {name}: {key} = {data[key]!r}; "
                               f"choose one of {', '.join(choices)}")
    below = data.get("plain_logprob_below")
    if below is not None and (isinstance(below, bool) or not isinstance(below, int | float)
                              or not -5.0 < below < 0.0):
        raise ProfileError(f"{source}: profile {name}: plain_logprob_below must be a "
                           "log-probability between -5 and 0 (for example -0.45)")
    corrections = data.get("corrections", {})
    hotwords = data.get("hotwords", [])
    if not isinstance(corrections, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in corrections.items()
    ):
        raise ProfileError(f"{source}: profile {name}: corrections must map text to text")
    if not isinstance(hotwords, list) or not all(isinstance(h, str) for h in hotwords):
        raise ProfileError(f"{source}: profile {name}: hotwords must be a list of text")
    plain = {k: v for k, v in data.items() if k not in ("corrections", "hotwords", "title")}
    return Profile(
        **plain,
        title=data.get("title", name),
        hotwords=tuple(hotwords),
        corrections=tuple(sorted(corrections.items(), key=lambda kv: -len(kv[0]))),
        source=source,
    )


def _read(path: Path) -> list[Profile]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ProfileError(f"{path}: {exc}") from exc
    entries = data.get("profile", [])
    if isinstance(entries, dict):
        entries = [entries]
    if not entries or set(data) - {"profile"}:
        raise ProfileError(f"{path}: expected [profile] or [[profile]] tables")
    return [_profile(entry, str(path)) for entry in entries]


def load_profiles(data_dir: Path | None) -> dict[str, Profile]:
    """Built-in profiles, overridden and extended by DATA_DIR/profiles/*.toml."""
    profiles = {p.name: p for p in _read(BUILTIN)}
    if data_dir is not None and (data_dir / "profiles").is_dir():
        for path in sorted((data_dir / "profiles").glob("*.toml")):
            profiles.update({p.name: p for p in _read(path)})
    return profiles


def get_profile(name: str, profiles: dict[str, Profile], model_languages=None) -> Profile:
    """The named profile, checked against its model's languages; errors list the choices.

    ``model_languages(model_id)`` returns the languages a model knows (None: unknown model).
    """
    if name not in profiles:
        raise ProfileError(N_("unknown profile %(name)s; choose one of %(names)s"), name=repr(name),
                           names=", ".join(sorted(profiles)))
    profile = profiles[name]
    if model_languages is not None:
        languages = model_languages(profile.model)
        if languages is None:
            raise ProfileError(f"profile {name} ({profile.source}) names model {profile.model!r}, "
                               "which is not in the model manifest")
        if not profile.is_auto and profile.language not in languages:
            raise ProfileError(
                f"profile {name} ({profile.source}): model {profile.model} has no language "
                f"{profile.language!r}; it knows {', '.join(sorted(languages))}"
            )
    return profile


# -- text ----------------------------------------------------------------------------------

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TO_FULL = {",": "，", ".": "。", "?": "？", "!": "！", ":": "：", ";": "；"}
_TO_HALF = {v: k for k, v in _TO_FULL.items()} | {"、": ",", "（": "(", "）": ")"}
# Full-width Latin letters and digits (ＡＢＣ１２３) are always written half-width.
_FULL_WIDTH_ALNUM = {c: c - 0xFEE0 for c in range(0xFF10, 0xFF5B) if chr(c - 0xFEE0).isalnum()}
_NUMERAL = "零〇一二两三四五六七八九十百千万"
_UNITS = "点时分秒年月日号岁个元块度倍层楼次人名"
_DIGIT = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6,
          "七": 7, "八": 8, "九": 9}
_POWER = {"十": 10, "百": 100, "千": 1000}


def convert_script(text: str, script: str) -> str:
    if script == "simplified":
        return to_simplified(text)
    if script == "traditional":
        return to_traditional(text)
    if script == "hongkong":
        return to_hongkong(text)
    return text


def chinese_number(numeral: str) -> int | None:
    """一千二百三十 -> 1230, 二零二四 -> 2024, 十二 -> 12; None if it is not a plain number."""
    if all(c in _DIGIT for c in numeral):
        return int("".join(str(_DIGIT[c]) for c in numeral))
    total, section, digit = 0, 0, None
    for c in numeral:
        if c in _DIGIT:
            digit = _DIGIT[c]
        elif c in _POWER:
            section += (1 if digit is None else digit) * _POWER[c]
            digit = None
        elif c == "万":
            total = (total + section + (digit or 0)) * 10000
            section, digit = 0, None
        else:
            return None
    return total + section + (digit or 0)


def _arabic_numbers(text: str) -> str:
    def convert(match: re.Match) -> str:
        numeral, unit = match.group(1), match.group(2)
        if numeral == "一":  # 一点 is "a little", 一个 "a": leave single 一 alone
            return match.group(0)
        value = chinese_number(numeral)
        return f"{value}{unit}" if value is not None else match.group(0)

    def percent(match: re.Match) -> str:
        value = chinese_number(match.group(1))
        return f"{value}%" if value is not None else match.group(0)

    text = re.sub(f"百分之([{_NUMERAL}]+)", percent, text)
    return re.sub(f"([{_NUMERAL}]+)([{_UNITS}])", convert, text)


def _punctuation(text: str, style: str) -> str:
    if style == "full-width":
        text = re.sub(f"(?<=[{_CJK}])\\s*([,.?!:;])(?!\\d)\\s*",
                      lambda m: _TO_FULL[m.group(1)], text)
        # Whisper marks a pause inside Chinese with a space.
        text = re.sub(f"(?<=[{_CJK}\\d])\\s+(?=[{_CJK}])", "，", text)
        text = re.sub(f"(?<=[{_CJK}])\\s+(?=\\d)", "，", text)
    elif style == "half-width":
        text = "".join(_TO_HALF.get(c, c) for c in text)
    return text


def apply_corrections(text: str, corrections: Sequence[tuple[str, str]]) -> str:
    for wrong, right in sorted(corrections, key=lambda kv: -len(kv[0])):
        text = text.replace(wrong, right)
    return text


def finish_text(
    text: str, profile: Profile, terms: Terms = NO_TERMS, script: str | None = None
) -> str:
    """Corrections, then script, punctuation and numbers, as the profile says.

    Corrections are applied before and after the script conversion (in that script too), so
    a term written in Simplified also corrects Traditional output and the other way round.
    """
    corrections = profile.corrections + terms.corrections
    script = script or profile.script
    text = text.strip().translate(_FULL_WIDTH_ALNUM)
    text = apply_corrections(text, corrections)
    text = convert_script(text, script)
    text = apply_corrections(
        text, [(convert_script(w, script), convert_script(r, script)) for w, r in corrections]
    )
    text = _punctuation(text, profile.punctuation)
    if profile.numbers == "arabic":
        text = _arabic_numbers(text)
    return text


def finish_segment(segment: Segment, profile: Profile, terms: Terms = NO_TERMS,
                   script: str | None = None) -> Segment:
    words = tuple(replace(w, text=convert_script(w.text, script or profile.script))
                  for w in segment.words)
    return replace(segment, text=finish_text(segment.text, profile, terms, script), words=words)


# -- auto mode -----------------------------------------------------------------------------


LANGUAGE_PRESENT = 0.05


@dataclass(frozen=True)
class AutoDecision:
    profile: str
    language: str
    probabilities: dict[str, float]
    """Whisper's language probabilities, averaged over several windows of speech."""
    varieties: dict[str, float] = field(default_factory=dict)
    """For varieties sharing a language code: the score each got in the first window of
    speech (see choose_auto_profile)."""
    windows: list = field(default_factory=list)
    """[start, profile]: from each start (seconds) on, the windows were decoded with that
    profile (auto mode decides per window, ``device.varieties``)."""
    votes: list = field(default_factory=list)
    """Each window's vote (None: another language), before hysteresis."""

    def languages(self, least: float = LANGUAGE_PRESENT) -> tuple[str, ...]:
        """The languages spoken in the recording, most likely first: a language heard in
        one of the (four) windows detection listened to averages well above ``least``."""
        return tuple(lang for lang, p in self.probabilities.items() if p >= least)


def variety_score(segments: Sequence[Segment], markers: str) -> tuple[float, float]:
    """(marker characters per 100 CJK characters, mean avg_logprob) of a trial decoding."""
    text = "".join(s.text for s in segments)
    cjk = len(re.findall(f"[{_CJK}]", text))
    hits = sum(text.count(m) for m in markers)
    logprob = float(np.mean([s.avg_logprob for s in segments])) if segments else -10.0
    return (100.0 * hits / cjk if cjk else 0.0), logprob


COVERAGE = 0.9


def _spoken_length(segments: Sequence[Segment]) -> int:
    """Characters of a decoding that stand for speech (not punctuation or spaces)."""
    return len(re.findall(r"\w", "".join(s.text for s in segments)))


def choose_auto_profile(
    language: str,
    profiles: dict[str, Profile],
    trials,
) -> tuple[str, dict[str, float]]:
    """Pick the profile for a detected language.

    Where several profiles share the language (Mandarin, Cantonese, Sichuanese all use zh),
    ``trials(candidates)`` decodes a sample of the speech with each candidate's prompt and
    returns their segments in order.  A variety with markers wins over the plain profile
    only when its decoding both uses its written forms (>= 3 marker characters per 100) and
    is more likely than every other candidate's decoding, the plain one and the other
    varieties', by a margin; with no clear winner it is the plain decoding.  (Beating only
    the plain decoding took Sichuanese clips for Cantonese, which the Cantonese prompt itself
    writes in Cantonese forms: measured on the dev set, auto's CER on Cantonese went from
    0.297 to 0.278 and on Sichuanese from 0.632 to 0.623 with this rule.)  Failing that, a
    variety that claims the speech the plain decoding is unsure of (``plain_logprob_below``)
    takes it, when the plain decoding has 8 characters or more: Whisper decodes standard
    Mandarin surely, Sichuanese not (on the dev set the plain decoding's mean log-prob was
    above -0.43 on every Mandarin clip and below -0.47 on every Sichuanese one; a
    four-character command "换一首歌" scored -0.56).

    Likelihoods are compared only between decodings of the same speech: a decoding with
    under ``COVERAGE`` of the longest one's characters left speech out (Whisper stopped
    early, or skipped what its prompt did not fit) and is surer for it, so it takes no part.
    On the dev set a Cantonese decoding of Cantonese speech was never shorter than the plain
    one, the Cantonese prompt made Sichuanese speech 15-21 % shorter on three clips of
    eight, and the plain decoding of one Cantonese clip stopped after 9 characters of 66.
    """
    candidates = [p for p in profiles.values() if p.language == language]
    plain = [p for p in candidates if not p.markers]
    varieties = [p for p in candidates if p.markers]
    if not candidates:
        return AUTO, {}
    if not varieties or not plain:
        return candidates[0].name, {}
    base = plain[0]
    base_segments, *variety_segments = trials([base, *varieties])
    _, base_logprob = variety_score(base_segments, "")
    scores = {base.name: round(base_logprob, 3)}
    logprobs = {base.name: base_logprob}
    lengths = {base.name: _spoken_length(base_segments)}
    densities = {}
    for variety, segments in zip(varieties, variety_segments, strict=True):
        densities[variety.name], logprobs[variety.name] = variety_score(segments,
                                                                         variety.markers)
        lengths[variety.name] = _spoken_length(segments)
        scores[variety.name] = round(logprobs[variety.name], 3)
        scores[f"{variety.name}_markers_per_100"] = round(densities[variety.name], 1)
    scores.update({f"{name}_characters": float(n) for name, n in lengths.items()})
    whole = [name for name, n in lengths.items() if n >= COVERAGE * max(lengths.values())]
    for variety in varieties:  # a variety must clearly beat every other candidate
        others = max((v for k, v in logprobs.items() if k != variety.name and k in whole),
                     default=-math.inf)
        if (variety.name in whole and densities[variety.name] >= 3.0
                and logprobs[variety.name] > others + 0.05):
            return variety.name, scores
    # A few words' mean log-probability says little: a short command is often unsure.
    long_enough = len(re.findall(f"[{_CJK}]", "".join(s.text for s in base_segments))) >= 8
    unsure = [v for v in varieties if long_enough and v.plain_logprob_below is not None
              and base_logprob < v.plain_logprob_below and v.name in whole]
    if unsure:
        return max(unsure, key=lambda v: logprobs[v.name]).name, scores
    return base.name, scores
