"""Who spoke when: speech windows -> voice embeddings -> clusters -> speaker turns.

Windows of 1.5 s every 0.75 s inside the VAD's speech chunks are embedded by the speaker
encoder (each window brought to the same level first).  Plain clustering of the windows
fails on stray ones (a laugh, two voices at once); what works:

1. over-cluster: spherical k-means into more clusters than there are speakers;
2. fold: a cluster holding under ``FOLD_SHARE`` of the windows, or under ``FOLD_WINDOWS``,
   joins the nearest large one;
3. merge: the two closest clusters (cosine of their centroids) merge, down to the count the
   user gave, or, counting automatically, while the closest pair is more alike than
   ``SAME_SPEAKER``;
4. refine: every window goes to its nearest centroid, a few times over.

Memory grows with the windows only (a 256-float embedding each, ~1 KB; ~4,800 an hour);
nothing is quadratic in them.  Less than ``MIN_SPEECH_SECONDS`` of speech is one speaker.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from device.audio import SAMPLE_RATE
from device.speakers.encoder import PARTIAL_FRAMES, level, mel_spectrogram, unit
from device.vad import SpeechChunk

WINDOW_SECONDS = 1.5
HOP_SECONDS = 0.75
SHORTEST_WINDOW_SECONDS = 0.5
"""A speech chunk shorter than this gets no window of its own (its neighbours label it)."""
MIN_SPEECH_SECONDS = 3.0
OVER_CLUSTERS = 16
FOLD_SHARE = 0.05
FOLD_WINDOWS = 3
"""About 3 s of speech: less is not enough to be told apart as a person of its own."""
SAME_SPEAKER = 0.84
"""Counting automatically, clusters whose centroids are at least this alike (cosine) are
one speaker.  Measured on the 52 conversations of 1-4 real voices of ``bench/voices.py``
(Debian's voice prompts, LibriVox, Mandarin clips): right count in 33 with 0.83, 35 with
0.84-0.85, 29 with 0.86, 30 with 0.79, 12 with 0.90."""
BATCH = 16
"""Windows per run of the encoder: as fast as 64, and onnxruntime's arena stays ~6 MB
instead of ~60 MB (measured)."""
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


def embeddings(encoder, samples: np.ndarray, spans: Sequence[tuple[int, int]],
               memo=None, keep: bool = False, workers: int = 1) -> tuple[np.ndarray, int]:
    """(len(spans), 256) unit embeddings, one per window, in batches (``workers`` at a
    time: the encoder runs on one core), and how many of them ``memo`` (a
    ``recognize.memo.WindowMemo``: the final pass during the recording embeds the windows
    it has decided) held; ``keep``: those it did not are kept in it."""
    out = np.zeros((len(spans), 256), dtype=np.float32)
    keys = [_key(samples[start:end]) if memo is not None else "" for start, end in spans]
    missing = []
    for i, key in enumerate(keys):
        if key and (kept := memo.get(key)) is not None:
            out[i] = np.frombuffer(base64.b64decode(kept["voice"]), dtype=np.float32)
        else:
            missing.append(i)

    def embed(batch: list[int]) -> None:
        mels = []
        for i in batch:
            start, end = spans[i]
            mel = mel_spectrogram(level(samples[start:end]))[:PARTIAL_FRAMES]
            mels.append(np.pad(mel, ((0, PARTIAL_FRAMES - mel.shape[0]), (0, 0))))
        out[batch] = encoder.forward(np.stack(mels))

    batches = [missing[first: first + BATCH] for first in range(0, len(missing), BATCH)]
    if workers > 1 and len(batches) > 1:
        with ThreadPoolExecutor(min(workers, len(batches))) as pool:
            list(pool.map(embed, batches))
    else:
        for batch in batches:
            embed(batch)
    for i in missing if keep else []:
        memo.put(keys[i], {"voice": base64.b64encode(out[i].tobytes()).decode()})
    return out, len(spans) - len(missing)


def _key(window: np.ndarray) -> str:
    """A window's samples, and the encoder that embeds them."""
    digest = hashlib.sha256(b"ge2e-speaker-encoder\0")
    digest.update(np.ascontiguousarray(window, dtype=np.float32).tobytes())
    return "voice:" + digest.hexdigest()


def _centroids(vectors: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """The unit mean of each label's vectors (k rows; a label without any is zeros),
    without copying the vectors: a (k, n) indicator matrix times them."""
    indicator = np.zeros((k, len(vectors)), dtype=vectors.dtype)
    indicator[labels, np.arange(len(vectors))] = 1.0
    return unit(indicator @ vectors)


def _kmeans(vectors: np.ndarray, k: int, rounds: int = 20) -> np.ndarray:
    """Spherical k-means (k-means++ seeding, fixed seed): a label per vector."""
    rng = np.random.default_rng(SEED)
    centres = [vectors[rng.integers(len(vectors))]]
    nearest = np.full(len(vectors), -np.inf, dtype=vectors.dtype)
    for _ in range(1, k):
        nearest = np.maximum(nearest, vectors @ centres[-1])
        distance = np.maximum(1.0 - nearest.astype(np.float64), 0.0)
        if distance.sum() <= 0:
            break
        centres.append(vectors[rng.choice(len(vectors), p=distance / distance.sum())])
    centroids = np.stack(centres)
    labels = np.zeros(len(vectors), dtype=int)
    for _ in range(rounds):
        labels = np.argmax(vectors @ centroids.T, axis=1)
        moved = _centroids(vectors, labels, len(centroids))
        empty = ~np.any(moved, axis=1)
        moved[empty] = centroids[empty]
        if np.allclose(moved, centroids):
            break
        centroids = moved
    return labels


def cluster(vectors: np.ndarray, speakers: int | None = None, min_speakers: int = 1,
            max_speakers: int = 8) -> np.ndarray:
    """A speaker label (0, 1, … by first appearance) per embedding: the given number of
    speakers, or counted within ``min_speakers..max_speakers``.  Works in float32 on the
    embeddings without copying them per cluster: memory stays ~1 KB a window."""
    n = len(vectors)
    if n == 0:
        return np.zeros(0, dtype=int)
    vectors = np.asarray(vectors, dtype=np.float32)
    if not np.allclose(np.einsum("ij,ij->i", vectors, vectors), 1.0, atol=2e-3):
        vectors = unit(vectors)  # the encoder's are unit already: no copy of those
    labels = _kmeans(vectors, min(OVER_CLUSTERS, n))
    # a cluster is a label; fold the small ones into the nearest large one
    sizes = np.bincount(labels, minlength=labels.max() + 1)
    large = [c for c in range(len(sizes)) if sizes[c] >= max(FOLD_SHARE * n, FOLD_WINDOWS)]
    if large:
        centroids = _centroids(vectors, labels, len(sizes))
        for c in [c for c in range(len(sizes)) if sizes[c] and c not in large]:
            labels[labels == c] = max(large, key=lambda big: float(centroids[c]
                                                                   @ centroids[big]))
    # merge the closest pair down to the count
    groups = sorted(set(labels.tolist()))
    labels = np.searchsorted(np.array(groups), labels)
    low = max(1, min_speakers if speakers is None else speakers)
    high = max(low, max_speakers if speakers is None else speakers)
    while (count := labels.max() + 1) > 1:
        centroids = _centroids(vectors, labels, count)
        alike = centroids @ centroids.T
        np.fill_diagonal(alike, -np.inf)
        i, j = sorted(np.unravel_index(int(np.argmax(alike)), alike.shape))
        if count <= low or (count <= high and speakers is None
                            and alike[i, j] < SAME_SPEAKER):
            break
        labels[labels == j] = i
        labels[labels > j] -= 1
    # refine: every window to its nearest centroid
    for _ in range(5):
        centroids = _centroids(vectors, labels, labels.max() + 1)
        labels = np.argmax(vectors @ centroids.T, axis=1)
        used = np.unique(labels)
        labels = np.searchsorted(used, labels)
    centroids = _centroids(vectors, labels, labels.max() + 1)
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


@dataclass(frozen=True)
class Speakers:
    """Who spoke when, and what each speaker's voice is like."""

    turns: list[Turn]
    voices: np.ndarray
    """(speakers, 256): the unit mean of each speaker's window embeddings."""
    seconds: list[float]
    """About how much speech each speaker has (their windows times the hop)."""
    taken: int = 0
    """Windows whose embeddings were taken from the ones made during the recording."""


def find_speakers(encoder, samples: np.ndarray, speech: Sequence[SpeechChunk],
                  speakers: int | None = None, min_speakers: int = 1,
                  max_speakers: int = 8, memo=None, workers: int = 1) -> Speakers:
    """The speakers of a recording (``speech``: the VAD's chunks of ``samples``; ``memo``
    and ``workers``: see ``embeddings``)."""
    spans = windows(speech)
    total = sum(c.end - c.start for c in speech) / SAMPLE_RATE
    if not spans:
        return Speakers([], np.zeros((0, 256), np.float32), [])
    vectors, taken = embeddings(encoder, samples, spans, memo, workers=workers)
    if total < MIN_SPEECH_SECONDS or speakers == 1:
        labels = np.zeros(len(spans), dtype=int)
    else:
        labels = cluster(vectors, speakers, min_speakers, max_speakers)
    count = int(labels.max()) + 1
    return Speakers(turns(spans, labels, speech), _centroids(vectors, labels, count),
                    [float(n) * HOP_SECONDS for n in np.bincount(labels, minlength=count)],
                    taken)


def diarize(encoder, samples: np.ndarray, speech: Sequence[SpeechChunk],
            speakers: int | None = None, min_speakers: int = 1,
            max_speakers: int = 8) -> list[Turn]:
    """Speaker turns of a recording (``speech``: the VAD's chunks of ``samples``)."""
    return find_speakers(encoder, samples, speech, speakers, min_speakers,
                         max_speakers).turns


def speaker_name(speaker: int) -> str:
    """The label a turn's speaker gets in the transcript (reviewers rename it)."""
    return f"说话人{speaker + 1}"


def is_automatic(name: str | None) -> bool:
    """A label diarization gave (or none, or a name suggested from a voiceprint: "李明?"),
    as opposed to a name a reviewer chose."""
    return (name is None or (name.startswith("说话人") and name[3:].isdigit())
            or name.endswith("?"))


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


def label(segments: Sequence, turns: Sequence[Turn], split: bool = True,
          names: Mapping[int, str] | None = None) -> list:
    """Every segment with the speaker of the turns covering most of it; a segment whose
    words change speaker (each part at least ``SHORTEST_RUN_SECONDS``) is split there, when
    its text is exactly its words (and ``split``).  Segments that already have a speaker
    keep it.  ``names``: labels for some speakers (else 说话人N)."""
    from dataclasses import replace

    def name(speaker: int) -> str:
        return (names or {}).get(speaker) or speaker_name(speaker)

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
                                   speaker=name(_majority(turns, starts, start, end))))
        else:
            out.append(replace(segment, speaker=name(
                _majority(turns, starts, segment.start, segment.end))))
    return out
