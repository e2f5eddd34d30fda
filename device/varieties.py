"""Auto mode: the recording's languages, then the variety of each 30-second window of speech.

Mandarin, Cantonese and Sichuanese share Whisper's language code; what tells them apart is
how each profile's prompt decodes the speech (``profiles.choose_auto_profile``).  A
recording may change variety (an interview in Mandarin with a Cantonese answer), so every
window of speech in the recording's language gets a vote, and the transcript follows the
votes with hysteresis: it changes variety only where two windows in a row vote against the
current one, so one ambiguous window does not flip the rest.  Each window is decoded with its
variety's prompt and its segments finished in its script.

Windows are voted on a block at a time, just before the block is decoded: the vote's
language detection and trial decodings keep each window's encoding, which the decoding then
reuses (the recogniser keeps as many as a block holds).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from device.audio import SAMPLE_RATE
from device.profiles import AUTO, AutoDecision, Profile, Terms, choose_auto_profile, load_profiles
from device.recognize import Timeline
from device.records import Segment
from device.settings import Settings
from device.vad import SpeechChunk

VOTE_SECONDS = 5.0
"""A window's vote compares the prompts' decodings of about this much of its speech (the
first window's, which decides where the recording starts, all of it)."""
BLOCK = 6
"""Windows voted on, then decoded, at a time: their encodings, the next window's and the
language detection's 4 fit in the 12 the recogniser keeps."""


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


def settle(votes: Sequence[str | None], current: str, end: int | None = None,
           plain: str | None = None) -> list[str]:
    """The variety of the windows up to ``end`` from every window's vote (None: no vote,
    or another language; a window's variety depends on its vote and the next one's),
    ``current`` being the first window's: it holds until two windows in a row vote against
    it, and the second of them cannot start another change.  The new variety is theirs
    when they agree, else ``plain`` (when it cannot tell, the plain decoding).

    >>> settle(["cantonese", "mandarin", "mandarin", "cantonese", "mandarin"], "cantonese")
    ['cantonese', 'mandarin', 'mandarin', 'mandarin', 'mandarin']
    >>> settle(["cantonese", "sichuanese", "mandarin", "cantonese"], "cantonese", plain="mandarin")
    ['cantonese', 'mandarin', 'mandarin', 'mandarin']
    """
    chosen, changed_at = [], None
    for i in range(len(votes) if end is None else end):
        vote = votes[i]
        following = votes[i + 1] if i + 1 < len(votes) else None
        if (i > 0 and None not in (vote, following) and current not in (vote, following)
                and changed_at != i - 1):
            new = vote if vote == following or plain is None else plain
            if new != current:
                current, changed_at = new, i
        chosen.append(current)
    return chosen


def decide(engines, samples, speech: Sequence[SpeechChunk], auto: Profile,
           settings: Settings, terms: Terms
           ) -> tuple[AutoDecision, Profile, Iterator[Block]]:
    """Auto mode's decision for one signal, the profile of its first window, and the
    blocks of its speech to decode.  ``decision.windows`` fills in as blocks are taken."""
    profiles = load_profiles(settings.data_dir)
    recognizer = engines.recognizer(auto.model)
    probabilities = recognizer.detect_language(samples, speech)
    language = next(iter(probabilities), None)
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

    first, varieties = choose_auto_profile(
        language, profiles, lambda candidates: trials([groups[0]], candidates)[0])
    decision = AutoDecision(profile=first, language=language, probabilities=probabilities,
                            varieties=varieties)

    def profile_of(name: str) -> Profile:
        return profiles[name] if name != AUTO else auto

    shared = [p for p in profiles.values() if p.language == language]
    if len(groups) == 1 or len(shared) < 2:
        decision.windows.append([round(speech[0].start_s, 2), first])
        return decision, profile_of(first), iter([Block(list(speech), [(0.0, profile_of(first))])])

    votes: list[str | None] = [first]
    plain = next((p.name for p in shared if not p.markers), None)
    # The candidates choose_auto_profile compares, decoded for every voting window at once
    # (it compares none without a plain profile and a variety).
    compared = plain is not None and any(p.markers for p in shared)
    order = {c.name: k for k, c in enumerate(shared)}

    def vote(windows: list[int]) -> list[str | None]:
        """The windows' votes, side by side: None where a window is in another language."""
        own = recognizer.detect_each(samples, [groups[i] for i in windows])
        voting = [i for i, languages in zip(windows, own, strict=True)
                  if next(iter(languages), None) == language]
        decoded = dict(zip(voting, trials([groups[i] for i in voting], shared, VOTE_SECONDS),
                           strict=True)) if compared else {}
        return [choose_auto_profile(language, profiles, lambda candidates, i=i: [
            decoded[i][order[c.name]] for c in candidates])[0] if i in voting else None
            for i in windows]

    def votes_to(end: int) -> None:
        """Votes up to window ``end``: every other window's, and the window's after a vote
        against the variety so far, to confirm or not (a change needs two votes in a
        row).  Every other window's are taken side by side first."""
        ahead = dict(zip(odd := range(len(votes) | 1, end, 2), vote(list(odd)), strict=True))
        for i in range(len(votes), end):
            if i in ahead:
                votes.append(ahead[i])
            elif votes[i - 1] in (None, settle(votes, first, plain=plain)[-1]):
                votes.append(None)
            else:
                votes.append(vote([i])[0])

    def blocks() -> Iterator[Block]:
        for start in range(0, len(groups), BLOCK):
            end = min(start + BLOCK, len(groups))
            # one window more than the block: a change at its last window needs the next
            votes_to(min(end + 1, len(groups)))
            chosen = settle(votes, first, end, plain)[start:]
            changes = []
            for i, name in zip(range(start, end), chosen, strict=True):
                if not changes or changes[-1][1].name != name:
                    changes.append((groups[i][0].start_s, profile_of(name)))
                    if not decision.windows or decision.windows[-1][1] != name:
                        decision.windows.append([round(groups[i][0].start_s, 2), name])
            decision.votes.extend(votes[start:end])
            yield Block([c for i in range(start, end) for c in groups[i]], changes)

    return decision, profile_of(first), blocks()
