"""Voiceprints: a speaker's voice remembered under a name, and recognised in later recordings.

A voiceprint is the centroid of a speaker's windows (the unit mean of their embeddings),
made from the segments a reviewer assigned to that speaker.  A later recording's speakers are
compared with every voiceprint by cosine; a speaker whose centroid is at least ``SAME_VOICE``
alike to one, and has at least ``MATCH_SECONDS`` of speech, is shown under that name with a
question mark ("李明?") until a reviewer confirms it.  Each voiceprint names at most one
speaker of a recording (the most alike pairs first).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from device.audio import SAMPLE_RATE
from device.speakers.diarize import embeddings, windows
from device.speakers.encoder import unit
from device.vad import SpeechChunk

SAME_VOICE = 0.88
"""Measured by ``bench/voiceprints.py`` (bench/results/voiceprints.json): voiceprints of 7
people from 30 s each, tried on 5-20 s of their other recordings and on ~6,000 impostor
trials (other people, and Chinese speakers).  At 0.88 no impostor was accepted; 1.7 % of
the genuine trials in the language enrolled were missed (62 % of one woman speaking another
language).  0.86 accepted 0.1 % of impostors, always the two most alike voices."""
MATCH_SECONDS = 4.0
"""A speaker with less speech than this is not named from a voiceprint (too little to tell)."""
ENROL_SECONDS = 8.0
"""Least speech of the speaker that makes a voiceprint."""
ENROL_WINDOWS = 400
"""At most this many windows (5 minutes of speech, spread over the recording) make one."""


def suggestion(name: str) -> str:
    """The label of a speaker the box named from a voiceprint, until a reviewer confirms."""
    return f"{name}?"


def is_suggestion(label: str | None) -> bool:
    return bool(label) and label.endswith("?")


def centroid(vectors: np.ndarray) -> np.ndarray:
    """The unit mean of unit embeddings (as diarization's clusters have theirs)."""
    return unit(np.asarray(vectors, dtype=np.float64).sum(axis=0)).astype(np.float32)


def voice_of(encoder, samples: np.ndarray, spans: Sequence[tuple[float, float]]
             ) -> tuple[np.ndarray, float]:
    """The centroid of the speech in ``spans`` (seconds) and how many seconds it had;
    long speech is sampled evenly (``ENROL_WINDOWS`` at most)."""
    chunks = [SpeechChunk(int(s * SAMPLE_RATE), min(int(e * SAMPLE_RATE), samples.size))
              for s, e in sorted(spans) if e > s]
    spoken = sum(max(c.end - c.start, 0) for c in chunks) / SAMPLE_RATE
    found = windows([c for c in chunks if c.end > c.start])
    if len(found) > ENROL_WINDOWS:
        found = [found[int(i)] for i in np.linspace(0, len(found) - 1, ENROL_WINDOWS)]
    if not found:
        return np.zeros(256, np.float32), spoken
    return centroid(embeddings(encoder, samples, found)[0]), spoken


def match(voices: np.ndarray, seconds: Sequence[float], prints: Sequence,
          vectors: np.ndarray) -> dict[int, tuple[object, float]]:
    """speaker index -> (voiceprint, similarity) for the speakers a voiceprint names."""
    if not len(voices) or not len(prints):
        return {}
    alike = np.asarray(voices, dtype=np.float64) @ np.asarray(vectors, dtype=np.float64).T
    out: dict[int, tuple[object, float]] = {}
    used: set[int] = set()
    for flat in np.argsort(-alike, axis=None):
        speaker, v = divmod(int(flat), alike.shape[1])
        if alike[speaker, v] < SAME_VOICE:
            break
        if speaker in out or v in used or seconds[speaker] < MATCH_SECONDS:
            continue
        out[speaker] = (prints[v], float(alike[speaker, v]))
        used.add(v)
    return out
