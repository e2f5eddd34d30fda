"""Scoring who-spoke-when against a reference: RTTM files and the diarization error rate.

DER is the standard one, in 10 ms frames: (missed speech + false alarm + speaker confusion)
over the reference speech, after the one-to-one mapping of hypothesis speakers to reference
speakers that matches the most speech (as NIST's md-eval does; found by trying every
mapping, up to 8 speakers a side, greedily beyond).  A
frame where several people speak counts once per person.  With a collar, frames within that
many seconds of any reference boundary are left out of the score.

    >>> ref = [Turn(0.0, 2.0, "ana"), Turn(2.0, 4.0, "bo")]
    >>> error_rates(ref, [Turn(0.0, 2.5, "x"), Turn(2.5, 4.0, "y")]).der
    0.125
    >>> error_rates(ref, [Turn(0.0, 2.5, "x"), Turn(2.5, 4.0, "y")], collar=0.5).der
    0.0
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FRAME = 0.01


@dataclass(frozen=True)
class Turn:
    start: float
    end: float
    speaker: str


class RttmError(ValueError):
    """An RTTM file that cannot be read (the message names the file and line)."""


def read_rttm(path: Path) -> dict[str, list[Turn]]:
    """The SPEAKER lines of an RTTM file, per file id (other line types are skipped)."""
    out: dict[str, list[Turn]] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split()
        if not fields or fields[0] != "SPEAKER":
            continue
        try:
            start, duration = float(fields[3]), float(fields[4])
            speaker = fields[7]
        except (IndexError, ValueError):
            raise RttmError(f"{path}:{number}: not an RTTM SPEAKER line: {line!r}") from None
        if duration < 0 or start < 0:
            raise RttmError(f"{path}:{number}: negative time in {line!r}")
        out.setdefault(fields[1], []).append(Turn(start, start + duration, speaker))
    return out


def rttm_lines(file_id: str, turns: Iterable[Turn]) -> str:
    return "".join(f"SPEAKER {file_id} 1 {t.start:.3f} {t.end - t.start:.3f} <NA> <NA> "
                   f"{t.speaker} <NA> <NA>\n" for t in turns)


@dataclass(frozen=True)
class ErrorRates:
    der: float
    missed: float
    false_alarm: float
    confusion: float
    """Each a share of the scored reference speech."""
    speakers: int
    """How many speakers the hypothesis has."""
    reference_speakers: int
    scored_seconds: float


def _frames(turns: Sequence[Turn], names: list[str], count: int) -> np.ndarray:
    grid = np.zeros((len(names), count), dtype=bool)
    for turn in turns:
        grid[names.index(turn.speaker),
             int(round(turn.start / FRAME)):int(round(turn.end / FRAME))] = True
    return grid


def best_mapping(overlap: np.ndarray) -> list[tuple[int, int]]:
    """(reference, hypothesis) pairs, one-to-one, with the most frames in common."""
    n_ref, n_hyp = overlap.shape
    if not n_ref or not n_hyp:
        return []
    if max(n_ref, n_hyp) > 8:  # greedy: the largest overlaps first
        pairs, used_r, used_h = [], set(), set()
        for flat in np.argsort(-overlap, axis=None):
            r, h = divmod(int(flat), n_hyp)
            if r not in used_r and h not in used_h:
                pairs.append((r, h))
                used_r.add(r)
                used_h.add(h)
        return pairs
    flip = n_ref > n_hyp
    matrix = overlap.T if flip else overlap
    perms = np.array(list(itertools.permutations(range(matrix.shape[1]), matrix.shape[0])))
    best = perms[int(np.argmax(matrix[np.arange(matrix.shape[0]), perms].sum(axis=1)))]
    pairs = [(i, int(j)) for i, j in enumerate(best)]
    return [(j, i) for i, j in pairs] if flip else pairs


def error_rates(reference: Sequence[Turn], hypothesis: Sequence[Turn],
                collar: float = 0.0) -> ErrorRates:
    """DER of ``hypothesis`` against ``reference`` (speaker names need not match)."""
    end = max([t.end for t in (*reference, *hypothesis)], default=0.0)
    count = int(round(end / FRAME)) + 1
    ref_names = sorted({t.speaker for t in reference})
    hyp_names = sorted({str(t.speaker) for t in hypothesis})
    ref = _frames(reference, ref_names, count)
    hyp = _frames([Turn(t.start, t.end, str(t.speaker)) for t in hypothesis], hyp_names, count)
    scored = np.ones(count, dtype=bool)
    if collar > 0:
        for turn in reference:
            for edge in (turn.start, turn.end):
                scored[max(0, int(round((edge - collar) / FRAME))):
                       int(round((edge + collar) / FRAME))] = False
    ref, hyp = ref[:, scored], hyp[:, scored]
    overlap = ref.astype(np.int64) @ hyp.T.astype(np.int64)
    correct = np.zeros(ref.shape[1], dtype=np.int64)
    for r, h in best_mapping(overlap):
        correct += ref[r] & hyp[h]
    n_ref, n_hyp = ref.sum(axis=0), hyp.sum(axis=0)
    total = max(int(n_ref.sum()), 1)

    def share(frames: np.ndarray) -> float:
        return round(float(frames.sum()) / total, 4)

    missed = np.maximum(n_ref - n_hyp, 0)
    false_alarm = np.maximum(n_hyp - n_ref, 0)
    confusion = np.minimum(n_ref, n_hyp) - correct
    return ErrorRates(der=share(missed + false_alarm + confusion), missed=share(missed),
                      false_alarm=share(false_alarm), confusion=share(confusion),
                      speakers=len(hyp_names), reference_speakers=len(ref_names),
                      scored_seconds=round(float(n_ref.sum()) * FRAME, 2))
