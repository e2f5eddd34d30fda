"""Who spoke when: speech windows -> voice embeddings -> clusters -> speaker turns.

Windows of 1.5 s every 0.75 s inside the VAD's speech chunks are embedded by the speaker
encoder (each window brought to the same level first).  Plain clustering of the windows
fails on stray ones (a laugh, two voices at once); what works:

1. over-cluster: spherical k-means into more clusters than there are speakers;
2. fold: a cluster holding under ``FOLD_SHARE`` of the windows joins the nearest large one;
3. merge: the two closest clusters (cosine of their centroids) merge, down to the count the
   user gave, or, counting automatically, while the closest pair is more alike than
   ``SAME_SPEAKER``;
4. refine: every window goes to its nearest centroid, a few times over.

Memory grows with the windows only (a 256-float embedding each, ~1 KB; ~4,800 an hour);
nothing is quadratic in them.  Less than ``MIN_SPEECH_SECONDS`` of speech is one speaker.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from device.audio import SAMPLE_RATE
from device.speakers.encoder import PARTIAL_FRAMES, level, mel_spectrogram
from device.vad import SpeechChunk

WINDOW_SECONDS = 1.5
HOP_SECONDS = 0.75
SHORTEST_WINDOW_SECONDS = 0.5
"""A speech chunk shorter than this gets no window of its own (its neighbours label it)."""
MIN_SPEECH_SECONDS = 3.0
OVER_CLUSTERS = 16
FOLD_SHARE = 0.05
SAME_SPEAKER = 0.82
"""Counting automatically, clusters whose centroids are at least this alike (cosine) are
one speaker.  Measured on 32 conversations of 1-4 real voices from Debian's voice-prompt
packages and LibriVox: right count in 28 with 0.80-0.83, 26 with 0.85, 4-6 with 0.75."""
BATCH = 64
SEED = 20261201


@dataclass(frozen=True)
class Turn:
    start: float
    end: float
    speaker: int
    """0, 1, … in order of first appearance."""


def windows(speech: Sequence[SpeechChunk]) -> list[tuple[int, int]]:
    """(start, end) samples of the windows to embed, inside the speech chunks."""
    size, hop = int(WINDOW_SECONDS * SAMPLE_RATE), int(HOP_SECONDS * SAMPLE_RATE)
    out = []
    for chunk in speech:
        length = chunk.end - chunk.start
        if length < SHORTEST_WINDOW_SECONDS * SAMPLE_RATE:
            continue
        if length <= size:
            out.append((chunk.start, chunk.end))
            continue
        starts = list(range(chunk.start, chunk.end - size + 1, hop))
        if starts[-1] + size < chunk.end:
            starts.append(chunk.end - size)
        out += [(s, s + size) for s in starts]
    return out


def embeddings(encoder, samples: np.ndarray, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """(len(spans), 256) unit embeddings, one per window, in batches."""
    out = np.zeros((len(spans), 256), dtype=np.float32)
    for first in range(0, len(spans), BATCH):
        batch = []
        for start, end in spans[first: first + BATCH]:
            mel = mel_spectrogram(level(samples[start:end]))[:PARTIAL_FRAMES]
            batch.append(np.pad(mel, ((0, PARTIAL_FRAMES - mel.shape[0]), (0, 0))))
        out[first: first + len(batch)] = encoder.forward(np.stack(batch))
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _kmeans(vectors: np.ndarray, k: int, rounds: int = 20) -> np.ndarray:
    """Spherical k-means (k-means++ seeding, fixed seed): a label per vector."""
    rng = np.random.default_rng(SEED)
    centres = [vectors[rng.integers(len(vectors))]]
    for _ in range(1, k):
        distance = np.maximum(1.0 - np.max(vectors @ np.stack(centres).T, axis=1), 0.0)
        if distance.sum() <= 0:
            break
        centres.append(vectors[rng.choice(len(vectors), p=distance / distance.sum())])
    centroids = np.stack(centres)
    labels = np.zeros(len(vectors), dtype=int)
    for _ in range(rounds):
        labels = np.argmax(vectors @ centroids.T, axis=1)
        moved = _unit(np.stack([vectors[labels == c].sum(axis=0) if np.any(labels == c)
                                else centroids[c] for c in range(len(centroids))]))
        if np.allclose(moved, centroids):
            break
        centroids = moved
    return labels


def cluster(vectors: np.ndarray, speakers: int | None = None, min_speakers: int = 1,
            max_speakers: int = 8) -> np.ndarray:
    """A speaker label (0, 1, … by first appearance) per embedding: the given number of
    speakers, or counted within ``min_speakers..max_speakers``."""
    n = len(vectors)
    if n == 0:
        return np.zeros(0, dtype=int)
    vectors = _unit(np.asarray(vectors, dtype=np.float64))
    labels = _kmeans(vectors, min(OVER_CLUSTERS, n))
    groups = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    # fold the small clusters into the nearest large one
    large = [c for c, members in groups.items() if len(members) >= FOLD_SHARE * n]
    if large:
        centroids = {c: _unit(vectors[groups[c]].sum(axis=0)) for c in large}
        for c in [c for c in groups if c not in large]:
            nearest = max(large, key=lambda big: float(vectors[groups[c]].mean(axis=0)
                                                       @ centroids[big]))
            groups[nearest] = np.concatenate([groups[nearest], groups.pop(c)])
    # merge the closest pair down to the count
    members = list(groups.values())
    low = max(1, min_speakers if speakers is None else speakers)
    high = max(low, max_speakers if speakers is None else speakers)
    while len(members) > 1:
        sums = np.stack([vectors[m].sum(axis=0) for m in members])
        centroids = _unit(sums)
        alike = centroids @ centroids.T
        np.fill_diagonal(alike, -np.inf)
        i, j = np.unravel_index(int(np.argmax(alike)), alike.shape)
        if len(members) <= low or (len(members) <= high and speakers is None
                                   and alike[i, j] < SAME_SPEAKER):
            break
        members[i] = np.concatenate([members[i], members[j]])
        del members[j]
    # refine: every window to its nearest centroid
    centroids = _unit(np.stack([vectors[m].sum(axis=0) for m in members]))
    for _ in range(5):
        labels = np.argmax(vectors @ centroids.T, axis=1)
        used = [c for c in range(len(centroids)) if np.any(labels == c)]
        centroids = _unit(np.stack([vectors[labels == c].sum(axis=0) for c in used]))
    labels = np.argmax(vectors @ centroids.T, axis=1)
    order = {old: new for new, old in enumerate(dict.fromkeys(labels.tolist()))}
    return np.array([order[x] for x in labels.tolist()], dtype=int)


def turns(spans: Sequence[tuple[int, int]], labels: Sequence[int],
          speech: Sequence[SpeechChunk]) -> list[Turn]:
    """Speaker turns over the speech chunks: each stretch of speech takes the label of the
    window whose centre is nearest (a chunk without a window, its nearest window's)."""
    if not len(spans):
        return []
    centres = np.array([(s + e) / 2 for s, e in spans]) / SAMPLE_RATE
    order = np.argsort(centres, kind="stable")
    centres, labels = centres[order], np.asarray(labels)[order]

    def nearest(t: float) -> int:
        i = int(np.searchsorted(centres, t))
        if i > 0 and (i == len(centres) or t - centres[i - 1] <= centres[i] - t):
            i -= 1
        return int(labels[i])

    step = 0.1
    out: list[Turn] = []
    for chunk in speech:
        t = chunk.start_s
        while t < chunk.end_s - 1e-9:
            end = min(t + step, chunk.end_s)
            speaker = nearest((t + end) / 2)
            if out and out[-1].speaker == speaker and abs(out[-1].end - t) < 1e-6:
                out[-1] = Turn(out[-1].start, end, speaker)
            else:
                out.append(Turn(round(t, 3), end, speaker))
            t = end
    return [Turn(round(x.start, 3), round(x.end, 3), x.speaker) for x in out]


def diarize(encoder, samples: np.ndarray, speech: Sequence[SpeechChunk],
            speakers: int | None = None, min_speakers: int = 1,
            max_speakers: int = 8) -> list[Turn]:
    """Speaker turns of a recording (``speech``: the VAD's chunks of ``samples``)."""
    spans = windows(speech)
    total = sum(c.end - c.start for c in speech) / SAMPLE_RATE
    if not spans:
        return []
    if total < MIN_SPEECH_SECONDS or speakers == 1:
        labels = np.zeros(len(spans), dtype=int)
    else:
        labels = cluster(embeddings(encoder, samples, spans), speakers, min_speakers,
                         max_speakers)
    return turns(spans, labels, speech)


def speaker_name(speaker: int) -> str:
    """The label a turn's speaker gets in the transcript (reviewers rename it)."""
    return f"说话人{speaker + 1}"


def is_automatic(name: str | None) -> bool:
    """A label diarization gave (or none), as opposed to a name a reviewer chose."""
    return name is None or (name.startswith("说话人") and name[3:].isdigit())


SHORTEST_RUN_SECONDS = 1.0
"""A segment is split where the speaker changes only if each part is this long."""


def _speaker_at(turns: Sequence[Turn], starts: list[float], t: float) -> int:
    """The speaker of the turn at ``t`` (turns in time order, ``starts`` theirs), else of
    the nearest turn."""
    i = bisect.bisect_right(starts, t)
    candidates = turns[max(i - 1, 0): i + 1]
    inside = next((turn for turn in candidates if turn.start <= t < turn.end), None)
    if inside is not None:
        return inside.speaker
    return min(candidates, key=lambda turn: min(abs(turn.start - t), abs(turn.end - t))).speaker


def _majority(turns: Sequence[Turn], starts: list[float], start: float, end: float) -> int:
    shares: dict[int, float] = {}
    for turn in turns[max(bisect.bisect_right(starts, start) - 1, 0):]:
        if turn.start >= end:
            break
        overlap = min(end, turn.end) - max(start, turn.start)
        if overlap > 0:
            shares[turn.speaker] = shares.get(turn.speaker, 0.0) + overlap
    return max(shares, key=shares.get) if shares else _speaker_at(turns, starts,
                                                                  (start + end) / 2)


def label(segments: Sequence, turns: Sequence[Turn], split: bool = True) -> list:
    """Every segment with the speaker of the turns covering most of it; a segment whose
    words change speaker (each part at least ``SHORTEST_RUN_SECONDS``) is split there, when
    its text is exactly its words (and ``split``).  Segments that already have a speaker
    keep it."""
    from dataclasses import replace

    if not turns:
        return list(segments)
    starts = [turn.start for turn in turns]
    out = []
    for segment in segments:
        if segment.speaker:
            out.append(segment)
            continue
        words = segment.words
        runs: list[list] = []
        if split and len(words) >= 2 and "".join(w.text for w in words) == segment.text:
            for word in words:
                speaker = _speaker_at(turns, starts, (word.start + word.end) / 2)
                if runs and runs[-1][0] == speaker:
                    runs[-1][1].append(word)
                else:
                    runs.append([speaker, [word]])
            # runs too short to be a turn join the one before (or after)
            merged: list[list] = []
            for speaker, run in runs:
                if merged and (run[-1].end - run[0].start < SHORTEST_RUN_SECONDS
                               or merged[-1][0] == speaker):
                    merged[-1][1].extend(run)
                else:
                    merged.append([speaker, run])
            if len(merged) > 1 and (merged[0][1][-1].end - merged[0][1][0].start
                                    < SHORTEST_RUN_SECONDS):
                merged[1][1][:0] = merged[0][1]
                merged.pop(0)
            runs = merged
        if len(runs) > 1:
            for n, (_, run) in enumerate(runs):
                start = segment.start if n == 0 else run[0].start
                end = segment.end if n == len(runs) - 1 else run[-1].end
                text = "".join(w.text for w in run).strip()
                out.append(replace(segment, start=start, end=end, text=text, words=tuple(run),
                                   speaker=speaker_name(_majority(turns, starts, start, end))))
        else:
            out.append(replace(segment, speaker=speaker_name(
                _majority(turns, starts, segment.start, segment.end))))
    return out
