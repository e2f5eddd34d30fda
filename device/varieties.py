"""Auto mode: the recording's languages, then its variety.

Mandarin, Cantonese and Sichuanese share Whisper's language code; what tells them apart is
how each profile's prompt decodes the speech (``profiles.choose_auto_profile``), tried on
the first 30-second window of speech (its encoding is kept and reused by the decoding).

Deciding per window, with hysteresis, was built and measured: on a 6-minute Chinese
recording it took 1.8x the time (a language detection and three trial decodings per window,
and a decoding per stretch of one variety) and did not recognise the Cantonese windows it was
meant for (docs/benchmarks.md), so the decision is made once per recording.
"""

from __future__ import annotations

from collections.abc import Sequence

from device.profiles import AUTO, AutoDecision, Profile, Terms, choose_auto_profile, load_profiles
from device.records import Segment
from device.settings import Settings
from device.vad import SpeechChunk


def decide(engines, samples, speech: Sequence[SpeechChunk], auto: Profile,
           settings: Settings, terms: Terms) -> tuple[AutoDecision, Profile]:
    """Auto mode's decision for one signal and the profile it chose."""
    profiles = load_profiles(settings.data_dir)
    recognizer = engines.recognizer(auto.model)
    probabilities = recognizer.detect_language(samples, speech)
    language = next(iter(probabilities), None)

    def trials(chunks: list[SpeechChunk]):
        def decode(candidates: list[Profile]) -> list[list[Segment]]:
            # Greedy decodings of one window are enough to compare written
            # forms and likelihoods; candidates sharing a model are decoded together.
            from device.pipeline import recognition_options

            decoded: dict[str, list[Segment]] = {}
            for model in dict.fromkeys(c.model for c in candidates):
                group = [c for c in candidates if c.model == model]
                options = [recognition_options(c, terms, settings) for c in group]
                for candidate, segments in zip(group, engines.recognizer(model).compare(
                        samples, chunks, options), strict=True):
                    decoded[candidate.name] = segments
            return [decoded[c.name] for c in candidates]
        return decode

    first, varieties = choose_auto_profile(language, profiles, trials(list(speech)))
    decision = AutoDecision(profile=first, language=language, probabilities=probabilities,
                            varieties=varieties)
    return decision, profiles[first] if first != AUTO else auto
