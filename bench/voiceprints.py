"""Voiceprint benchmark: how often a remembered voice names the wrong person, and how often
it misses the right one.

    python bench/voiceprints.py [--trials 6] [--out bench/results/voiceprints.json]

People with many recordings (``bench/voices.py``: the Debian voice prompts, the LibriVox
reader) are enrolled from 30 s of their recordings, as a reviewer would from an interview.
Each voiceprint is then compared, as the diarization stage compares a speaker, with:

- genuine trials: 5, 10 or 20 s of *other* recordings of the same person (Allison enrolled
  in English is also tried on her Spanish);
- impostor trials: the same amounts of every other person, and each clip of ../shared/speech
  and ../shared/speech-dev (Mandarin, Cantonese, Sichuanese and English speakers, a few
  seconds each).

Reported: the false-accept rate (impostor trials at or above the threshold) and the
false-reject rate per threshold and per test length, and the threshold in use
(``device.speakers.voiceprints.SAME_VOICE``) with its rates.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import header, write  # noqa: E402
from bench.voices import SHARED, VOICES, voice_files  # noqa: E402
from device import audio  # noqa: E402
from device.settings import Settings  # noqa: E402

ENROL_SECONDS = 30.0
TEST_SECONDS = (5.0, 10.0, 20.0)
PAUSE = np.zeros(int(0.3 * audio.SAMPLE_RATE), np.float32)


def take(files: list[Path], seconds: float) -> tuple[list[np.ndarray], list[Path]]:
    """Clips from the front of ``files`` until ``seconds`` of audio; the rest."""
    taken, total = [], 0.0
    while files and total < seconds:
        clip = audio.decode_clip(files[0])
        files = files[1:]
        taken.append(clip)
        total += clip.size / audio.SAMPLE_RATE
    return taken, files


def voice(encoder, detector, clips: list[np.ndarray]) -> tuple[np.ndarray, float]:
    """The centroid of the clips' speech windows, as diarization computes a speaker's."""
    from device.speakers.diarize import embeddings, windows
    from device.speakers.voiceprints import centroid

    samples = np.concatenate([x for clip in clips for x in (clip, PAUSE)])
    speech = detector.speech_chunks(samples)
    spans = windows(speech)
    seconds = sum(c.end - c.start for c in speech) / audio.SAMPLE_RATE
    if not spans:
        return np.zeros(256, np.float32), seconds
    return centroid(embeddings(encoder, samples, spans)[0]), seconds


def main() -> int:
    from device.jobs import load_engines
    from device.speakers.voiceprints import MATCH_SECONDS, SAME_VOICE

    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "bench" / "results" / "voiceprints.json")
    args = parser.parse_args()
    settings = Settings.load()
    engines = load_engines(settings)
    encoder, detector = engines.speaker_encoder(), engines.detector
    people: dict[str, list[str]] = {}
    for name, v in VOICES.items():
        if not v.clip:
            people.setdefault(v.person, []).append(name)
    rng = random.Random(7)
    enrolled, tests = [], []  # (person, vector); (person, voice name, seconds, vector)
    for person, names in people.items():
        files = list(voice_files(names[0]))
        rng.shuffle(files)
        made = 0
        for _ in range(args.trials):
            clips, files = take(files, ENROL_SECONDS)
            if sum(c.size for c in clips) < ENROL_SECONDS * audio.SAMPLE_RATE:
                break  # this person's recordings are used up
            enrolled.append((person, voice(encoder, detector, clips)[0]))
            made += 1
            for length in TEST_SECONDS:
                for name in names:
                    pool = files if name == names[0] else rng.sample(
                        voice_files(name), len(voice_files(name)))
                    clips, rest = take(pool, length)
                    if name == names[0]:
                        files = rest
                    if clips:
                        vector, seconds = voice(encoder, detector, clips)
                        tests.append((person, name, length, seconds, vector))
        print(f"{person}: {made} voiceprints", file=sys.stderr)
    for path in sorted([*SHARED.glob("speech/*.*"), *SHARED.glob("speech-dev/*.wav")]):
        if path.suffix in (".wav", ".flac"):
            vector, seconds = voice(encoder, detector, [audio.decode_clip(path)])
            tests.append((f"shared:{path.name}", path.name, "clip", seconds, vector))
    genuine, impostor = [], []
    for person, print_vector in enrolled:
        for other, name, length, seconds, vector in tests:
            if seconds < MATCH_SECONDS:
                continue
            score = float(print_vector @ vector)
            (genuine if other == person else impostor).append(
                (score, str(length), name, person, other))

    def rates(threshold: float) -> dict:
        out = {"threshold": threshold,
               "false_accept": round(sum(s >= threshold for s, *_ in impostor)
                                     / len(impostor), 4),
               "false_reject": round(sum(s < threshold for s, *_ in genuine) / len(genuine),
                                     4)}
        for length in {x[1] for x in genuine}:
            chosen = [s for s, n, *_ in genuine if n == length]
            out[f"false_reject_{length}s"] = round(sum(s < threshold for s in chosen)
                                                   / len(chosen), 4)
        return out

    table = [rates(round(float(t), 2)) for t in np.arange(0.70, 0.96, 0.01)]
    worst = sorted(impostor, reverse=True)[:5]
    summary = {
        "voiceprints": len(enrolled), "genuine_trials": len(genuine),
        "impostor_trials": len(impostor), "enrol_seconds": ENROL_SECONDS,
        "genuine_mean": round(float(np.mean([s for s, *_ in genuine])), 4),
        "impostor_mean": round(float(np.mean([s for s, *_ in impostor])), 4),
        "in_use": rates(SAME_VOICE),
        "most_alike_impostors": [{"similarity": round(s, 4), "voiceprint_of": p,
                                  "test": n, "test_person": o} for s, _, n, p, o in worst],
    }
    same_language = [s for s, _l, n, *_ in genuine if n != "allison-es"]
    summary["in_use"]["false_reject_same_language"] = round(
        sum(s < SAME_VOICE for s in same_language) / len(same_language), 4)
    spanish = [s for s, _l, n, *_ in genuine if n == "allison-es"]
    summary["cross_language"] = {  # enrolled in English, heard in Spanish
        "trials": len(spanish),
        "false_reject": round(sum(s < SAME_VOICE for s in spanish) / max(len(spanish), 1), 4)}
    write(args.out, {**header("voiceprints", settings), "summary": summary,
                     "thresholds": table})
    print(summary, file=sys.stderr)
    for row in table:
        print(row, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
