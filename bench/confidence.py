"""Confidence marks: do they point at the words Whisper got wrong?

    python bench/confidence.py [--out bench/results/confidence.json]

Every clip of ../shared/speech and ../shared/speech-dev is transcribed as the box does it
(auto mode).  Each recognised word is aligned to the reference (Chinese: by character, after
the harness's normalisation; English: by word) and counts as wrong if any of it is a
substitution or an insertion.  For each threshold: the share of wrong words a mark catches
(recall) and the share of right words it marks (false marks); the same for segments, by
mean log-probability (a segment counts as wrong when over 30 % of its words are).  The
thresholds in use (``device.confidence``) are reported with their rates.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import header, write  # noqa: E402
from device import audio  # noqa: E402
from device.settings import Settings  # noqa: E402

SHARED = ROOT.parent / "shared"


def clips() -> list[tuple[Path, dict]]:
    out = []
    for folder in (SHARED / "speech", SHARED / "speech-dev"):
        if (folder / "manifest.tsv").is_file():
            with open(folder / "manifest.tsv", encoding="utf-8") as f:
                out += [(folder / row["file"], row) for row in csv.DictReader(f, delimiter="\t")]
    return out


def labelled_words(segments, reference: str, spaced: bool) -> list[tuple[int, float, bool]]:
    """(segment index, probability, wrong) for every recognised word."""
    from device.text import score_form, words_form, wrong_in_hypothesis

    words = [(n, w) for n, s in enumerate(segments) for w in s.words]
    pieces = [words_form(w.text) if spaced else list(score_form(w.text)) for _, w in words]
    flat = [p for piece in pieces for p in piece]
    wrong = wrong_in_hypothesis(words_form(reference) if spaced else score_form(reference), flat)
    out, k = [], 0
    for (n, word), piece in zip(words, pieces, strict=True):
        if piece:
            out.append((n, word.probability, any(wrong[k:k + len(piece)])))
        k += len(piece)
    return out


def rates(items: list[tuple[float, bool]], threshold: float, below: bool = True) -> dict:
    wrong = [v for v, bad in items if bad]
    right = [v for v, bad in items if not bad]

    def marked(v: float) -> bool:
        return v < threshold if below else v > threshold

    return {"threshold": threshold,
            "catches_wrong": round(sum(map(marked, wrong)) / max(len(wrong), 1), 3),
            "marks_right": round(sum(map(marked, right)) / max(len(right), 1), 3)}


def main() -> int:
    from device import confidence
    from device.eval import SPACED_LANGUAGES
    from device.jobs import load_engines
    from device.pipeline import recognize, select_profile
    from device.text import character_error_rate, word_error_rate

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path,
                        default=ROOT / "bench" / "results" / "confidence.json")
    args = parser.parse_args()
    settings = Settings.load()
    engines = load_engines(settings)
    profile = select_profile(settings, "auto")
    words, segments, no_speech = [], [], []
    for path, row in clips():
        samples = audio.decode(path)
        outcome = recognize(engines, settings, samples, engines.detector.speech_chunks(samples),
                            profile)
        spaced = row["language"] in SPACED_LANGUAGES
        labelled = labelled_words(outcome.segments, row["reference"], spaced)
        words += [(p, bad) for _, p, bad in labelled]
        for n, segment in enumerate(outcome.segments):  # wrong: over 30 % of its words
            mine = [bad for k, _, bad in labelled if k == n]
            if mine:
                segments.append((segment.avg_logprob, sum(mine) / len(mine) > 0.3))
                no_speech.append((segment.no_speech_prob, sum(mine) / len(mine) > 0.3))
        text = (" " if spaced else "").join(s.text for s in outcome.segments)
        error = (word_error_rate if spaced else character_error_rate)(row["reference"], text)
        print(f"{path.name}: {len(outcome.segments)} segments, error {error:.3f}",
              file=sys.stderr)
    word_table = [rates(words, round(float(t), 2)) for t in np.arange(0.1, 0.95, 0.1)]
    segment_table = [rates(segments, round(float(t), 2))
                     for t in np.arange(-1.6, -0.15, 0.2)]
    report = {**header("confidence", settings),
              "words": {"count": len(words), "wrong": sum(b for _, b in words),
                        "in_use": rates(words, confidence.WORD_BELOW), "thresholds": word_table},
              "segments": {"count": len(segments), "wrong": sum(b for _, b in segments),
                           "in_use": rates(segments, confidence.SEGMENT_LOGPROB_BELOW),
                           "thresholds": segment_table,
                           "no_speech_in_use": {
                               **rates(no_speech, confidence.NO_SPEECH_ABOVE, below=False),
                               "segments_above": sum(p > confidence.NO_SPEECH_ABOVE
                                                     for p, _ in no_speech)}}}
    write(args.out, report)
    for row in word_table:
        print("word", row, file=sys.stderr)
    for row in segment_table:
        print("segment", row, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
