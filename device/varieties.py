"""Auto mode: the recording's languages, then the variety of each 30-second window of speech.

Mandarin, Cantonese and Sichuanese share Whisper's language code; what tells them apart is
how each profile's prompt decodes the speech (``profiles.choose_auto_profile``).  A
recording may change variety (an interview in Mandarin with a Cantonese answer), so every
window of speech in that language gets a vote, and the transcript follows the votes with
hysteresis: it changes variety only where two windows in a row vote against the current
one, so one ambiguous window does not flip the rest.  Each window is decoded with its
variety's prompt and its segments finished in its script; a window in another language
(English in the interview) with that language's profile.

Windows are detected and voted on a block at a time, just before the block is decoded: the
language detections and trial decodings keep each window's encoding, which the decoding
then reuses (the recogniser keeps as many as a block holds).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass

from device.audio import SAMPLE_RATE
from device.profiles import AUTO, AutoDecision, Profile, Terms, choose_auto_profile, load_profiles
from device.recognize import Timeline
from device.recognize.languages import decoded_in
from device.records import Segment
from device.settings import Settings
from device.vad import SpeechChunk

VOTE_SECONDS = 5.0
"""A window's vote compares the prompts' decodings of about this much of its speech (the
first window's, which decides where the recording starts, all of it)."""
BLOCK = 6
"""Windows voted on, then decoded, at a time: their encodings, the next window's and the
language detection's 4 fit in the 12 the recogniser keeps."""
DRAFT_BLOCK = 40
"""A quick draft's windows per pass (nothing voted on; 20 minutes of speech, a copy of ~77
MB): the cores wait for each other only where a pass ends."""


@dataclass(frozen=True)
class Block:
    """Speech decoded at once, and the profile from each start (seconds) on."""

    speech: list[SpeechChunk]
    profiles: list[tuple[float, Profile]]

    def profile_at(self, seconds: float) -> Profile:
        return profile_at(self.profiles, seconds)


def profile_at(profiles: Sequence[tuple[float, Profile]], seconds: float) -> Profile:
    """The profile at ``seconds`` of the recording, from each start on (the first's before
    it too)."""
    chosen = profiles[0][1]
    for start, profile in profiles:
        if start > seconds + 1e-3:
            break
        chosen = profile
    return chosen


def window_chunks(speech: Sequence[SpeechChunk]) -> list[list[SpeechChunk]]:
    """The speech chunks, grouped as the recogniser's first pass packs them into windows."""
    ends = iter(w.end for w in Timeline(speech).windows())
    groups: list[list[SpeechChunk]] = [[]]
    end, done = next(ends), 0.0
    for chunk in speech:
        if done >= end - 1e-6:
            groups.append([])
            end = next(ends)
        groups[-1].append(chunk)
        done += (chunk.end - chunk.start) / SAMPLE_RATE
    return groups


def blocks_of(speech: Sequence[SpeechChunk], profile: Profile, size: int = BLOCK
              ) -> list[Block]:
    """One profile's speech in blocks of ``size`` windows, as auto mode decodes it: a
    pass holds a copy of its speech, and a block's stays the same size however long the
    recording grows (the final pass during a recording decodes it all again each time,
    most windows taken from what it kept)."""
    groups = window_chunks(speech) if speech else []
    return [Block([c for group in groups[i : i + size] for c in group], [(0.0, profile)])
            for i in range(0, len(groups), size)]



def settle(votes: Sequence[str | None], current: str, end: int | None = None,
           plain: str | None = None, starts: Collection[int] = ()) -> list[str]:
    """The variety of the windows up to ``end`` from every window's vote (None: no vote,
    or another language; a window's variety depends on its vote and the next one's),
    ``current`` being the first window's: it holds until two windows in a row vote against
    it, and the second of them cannot start another change.  The new variety is theirs
    when they agree, else ``plain`` (when it cannot tell, the plain decoding).  A window
    in ``starts`` (the first of the language's after another language) starts its stretch
    in the variety it votes for, as the first window does the recording.

    >>> settle(["cantonese", "mandarin", "mandarin", "cantonese", "mandarin"], "cantonese")
    ['cantonese', 'mandarin', 'mandarin', 'mandarin', 'mandarin']
    >>> settle(["cantonese", "sichuanese", "mandarin", "cantonese"], "cantonese", plain="mandarin")
    ['cantonese', 'mandarin', 'mandarin', 'mandarin']
    """
    chosen, changed_at = [], None
    for i in range(len(votes) if end is None else end):
        vote = votes[i]
        following = votes[i + 1] if i + 1 < len(votes) else None
        if i in starts and vote is not None:
            if vote != current:
                current, changed_at = vote, i
        elif (i > 0 and None not in (vote, following) and current not in (vote, following)
                and changed_at != i - 1):
            new = vote if vote == following or plain is None else plain
            if new != current:
                current, changed_at = new, i
        chosen.append(current)
    return chosen


def plain_of(language: str | None, profiles: dict[str, Profile]) -> str:
    """The profile of a language that names no variety (English, Mandarin), else its
    first, else auto's (a language without a profile is finished as Whisper writes it)."""
    own = [p for p in profiles.values() if p.language == language]
    return next((p.name for p in own if not p.markers), own[0].name if own else AUTO)


def in_its_language(chosen: Profile, language: str | None,
                    profiles: dict[str, Profile]) -> Profile:
    """The profile a segment is finished with in auto mode: its window's, unless Whisper
    wrote the segment in another language with a profile of its own (it went on across a
    change of language): then that language's ``plain_of``."""
    if language is None or chosen.language == language:
        return chosen
    name = plain_of(language, profiles)
    return profiles[name] if name != AUTO else chosen


def decide(engines, samples, speech: Sequence[SpeechChunk], auto: Profile,
           settings: Settings, terms: Terms
           ) -> tuple[AutoDecision, Profile, Iterator[Block]]:
    """Auto mode's decision for one signal, the profile of its first window, and the
    blocks of its speech to decode.  ``decision.windows`` fills in as blocks are taken.

    The varieties voted on are those of the first language spoken in the recording that
    has them, the recording's own or not (Mandarin and Cantonese answers in an interview
    mostly in English): every window is decoded and finished with its own language's
    profile, and a window in that language with the variety the votes settle on.  So a
    window's profile depends on its own language, not on which language the recording
    turns out to be mostly in (during a recording, that can change)."""
    profiles = load_profiles(settings.data_dir)
    recognizer = engines.recognizer(auto.model)
    probabilities = recognizer.detect_language(samples, speech)
    language = next(iter(probabilities), None)
    spoken = AutoDecision(AUTO, language, probabilities).languages()
    varied = next((lang for lang in dict.fromkeys([language, *spoken])
                   if sum(p.language == lang for p in profiles.values()) >= 2), None)
    groups = window_chunks(speech)

    def trials(stretches: list[list[SpeechChunk]], candidates: list[Profile],
               seconds: float | None = None) -> list[list[list[Segment]]]:
        """Each stretch's greedy decodings, one per candidate: enough to compare written
        forms and likelihoods; candidates sharing a model are decoded together, the
        stretches side by side."""
        from device.pipeline import recognition_options

        decoded: list[dict[str, list[Segment]]] = [{} for _ in stretches]
        for model in dict.fromkeys(c.model for c in candidates):
            group = [c for c in candidates if c.model == model]
            options = [recognition_options(c, terms, settings) for c in group]
            each = engines.recognizer(model).compare_each(samples, stretches, options, seconds)
            for by_name, segments in zip(decoded, each, strict=True):
                by_name.update({c.name: trial for c, trial in zip(group, segments, strict=True)})
        return [[by_name[c.name] for c in candidates] for by_name in decoded]

    def profile_of(name: str) -> Profile:
        return profiles[name] if name != AUTO else auto

    def choose(in_language: str | None, window: int) -> tuple[str, dict[str, float]]:
        return choose_auto_profile(in_language, profiles,
                                   lambda candidates: trials([groups[window]], candidates)[0])

    if varied is None or len(groups) == 1:  # one profile for all of it
        first, scores = choose(language, 0)
        decision = AutoDecision(first, language, probabilities, scores)
        decision.windows.append([round(speech[0].start_s, 2), first])
        return decision, profile_of(first), iter(blocks_of(speech, profile_of(first)))

    own: list[str | None] = []
    """Each window's language, as the decoding takes it (detected side by side, ahead of
    the votes; the encodings are kept for the decoding)."""

    def detect_to(end: int) -> None:
        found = recognizer.detect_each(samples, groups[len(own):end])
        own.extend(decoded_in(list(ranking.items()), spoken) if ranking else None
                   for ranking in found)

    detect_to(1)
    first, scores = choose(varied, 0) if own[0] == varied else (plain_of(own[0], profiles), {})
    decision = AutoDecision(first, language, probabilities, scores)
    shared = [p for p in profiles.values() if p.language == varied]
    plain = next((p.name for p in shared if not p.markers), None)
    start_variety = decision.profile if own[0] == varied else plain
    votes: list[str | None] = [start_variety if own[0] == varied else None]
    # The candidates choose_auto_profile compares, decoded for every voting window at once
    # (it compares none without a plain profile and a variety).
    compared = plain is not None and any(p.markers for p in shared)
    order = {c.name: k for k, c in enumerate(shared)}

    def vote(windows: list[int], seconds: float | None = VOTE_SECONDS) -> list[str | None]:
        """The windows' votes, side by side: None where a window is in another language."""
        voting = [i for i in windows if own[i] == varied]
        decoded = dict(zip(voting, trials([groups[i] for i in voting], shared, seconds),
                           strict=True)) if compared and voting else {}
        return [choose_auto_profile(varied, profiles, lambda candidates, i=i: [
            decoded[i][order[c.name]] for c in candidates])[0] if i in voting else None
            for i in windows]

    opens: set[int] = set()
    """Windows opening a stretch of the language after another language."""

    def votes_to(end: int) -> None:
        """Votes up to window ``end``, side by side: each stretch's first window's, on all
        of its speech (it decides where the stretch starts, as the first window does the
        recording), and every other window's; then the window's after a vote against the
        variety so far, to confirm or not (a change needs two votes in a row)."""
        detect_to(end)
        opening = [i for i in range(len(votes), end) if own[i] == varied != own[i - 1]]
        opens.update(opening)
        odd = [i for i in range(len(votes) | 1, end, 2) if i not in opens]
        ahead = {**dict(zip(opening, vote(opening, None), strict=True)),
                 **dict(zip(odd, vote(odd), strict=True))}
        for i in range(len(votes), end):
            if i in ahead:
                votes.append(ahead[i])
            elif votes[i - 1] in (None, settle(votes, start_variety, plain=plain,
                                               starts=opens)[-1]):
                votes.append(None)
            else:
                votes.append(vote([i])[0])

    def blocks() -> Iterator[Block]:
        for start in range(0, len(groups), BLOCK):
            end = min(start + BLOCK, len(groups))
            # one window more than the block: a change at its last window needs the next
            votes_to(min(end + 1, len(groups)))
            settled = settle(votes, start_variety, end, plain, opens)[start:]
            changes = []
            for i, variety in zip(range(start, end), settled, strict=True):
                name = variety if own[i] == varied else plain_of(own[i], profiles)
                if not changes or changes[-1][1].name != name:
                    changes.append((groups[i][0].start_s, profile_of(name)))
                    if not decision.windows or decision.windows[-1][1] != name:
                        decision.windows.append([round(groups[i][0].start_s, 2), name])
            decision.votes.extend(votes[start:end])
            yield Block([c for i in range(start, end) for c in groups[i]], changes)

    return decision, profile_of(decision.profile), blocks()
