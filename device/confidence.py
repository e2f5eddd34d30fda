"""Where Whisper was unsure: words and segments a reviewer should listen to first.

A word is unsure when Whisper's probability for it is below ``WORD_BELOW``; a segment when
its mean log-probability is below ``SEGMENT_LOGPROB_BELOW`` or Whisper thought it likely
there was no speech at all (``NO_SPEECH_ABOVE``).  The thresholds are measured by
``bench/confidence.py`` on real speech with reference transcripts (the dialect dev set and
../shared/speech): what share of the wrongly recognised words the marks catch, and what share
of the right ones they mark (``bench/results/confidence.json``, docs/benchmarks.md).

A segment a reviewer has changed (any revision) is theirs: no longer marked.
"""

from __future__ import annotations

from device.records import Segment

WORD_BELOW = 0.6
"""Measured: marks 54 % of the wrongly recognised words and 15 % of the right ones (0.5: 41 %
and 10 %; 0.7: 68 % and 22 %)."""
SEGMENT_LOGPROB_BELOW = -0.6
"""Measured: marks 67 % of the segments with over 30 % of their words wrong and 6 % of the
others (-0.4: 95 % and 18 %; -0.8: 5 % and 0 %)."""
NO_SPEECH_ABOVE = 0.6
"""Whisper's own guess that a stretch held no speech at all (its default cut-off); too rare
in the measured clips to tune."""


def word_unsure(probability: float | None) -> bool:
    return probability is not None and probability < WORD_BELOW


def segment_unsure(segment: Segment) -> bool:
    if segment.revision:
        return False
    return (segment.avg_logprob < SEGMENT_LOGPROB_BELOW
            or segment.no_speech_prob > NO_SPEECH_ABOVE)
