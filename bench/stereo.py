"""Stereo benchmark: what a plain mean of the channels loses, next to tingji's arrangement.

    python bench/stereo.py [--out bench/results/stereo.json]

Conversations of about a minute are assembled from the real Mandarin clips of many
different speakers in ../shared/speech and ../shared/speech-dev (each clip used once per
conversation), in five channel layouts users bring:
  lapel-mics         one person per lapel microphone, each hearing the other 20 dB down and
                     1 ms late; turns, some started before the other has finished
  phone-call         one side of a call per channel, no cross-talk; the same turns
  reversed-polarity  one microphone on both channels, the right wired backwards (each input
                     with its own hiss at -50 dBFS)
  hissing-channel    a quiet microphone (-30 dBFS) on the left, the right input hissing
  same-on-both       one microphone copied to both channels
Each layout is transcribed twice with the same recogniser, in auto mode: from the mean of
the channels (what FFmpeg's mono downmix gives, and what tingji did before), and from the
tracks ``device.channels.arrange`` makes.  Reported per layout: the character error rate
of the whole conversation (segments in time order), the time the arrangement took, and the
layout it found.  The baseline (the mean) is measured in the same run.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import header, write  # noqa: E402
from device import audio, channels  # noqa: E402
from device.jobs import load_engines  # noqa: E402
from device.pipeline import Heard, recognize_tracks, select_profile  # noqa: E402
from device.settings import Settings  # noqa: E402
from device.text import character_error_rate  # noqa: E402

SHARED = ROOT.parent / "shared"
SR = audio.SAMPLE_RATE


def mandarin_clips() -> list[tuple[str, np.ndarray, str]]:
    """(name, samples at a common speech level, reference) of every single-speaker
    Mandarin clip shared with the project."""
    clips = []
    for folder in (SHARED / "speech", SHARED / "speech-dev"):
        manifest = folder / "manifest.tsv"
        if not manifest.is_file():
            continue
        with open(manifest, encoding="utf-8") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                if row["dialect"] == "mandarin" and "2spk" not in row["file"]:
                    samples = audio.decode(folder / row["file"])
                    clips.append((row["file"], _level(samples), row["reference"]))
    return clips


def _level(samples: np.ndarray, rms: float = 0.1) -> np.ndarray:
    speech = samples[np.abs(samples) > 0.01]
    return (samples * rms / np.sqrt(np.mean(speech ** 2))).astype(np.float32)


def turns(clips, seed: int) -> tuple[float, list[tuple[int, float, np.ndarray, str]]]:
    """Clips said in turns by two people: (person, start, samples, reference); about one
    turn in three starts 0.5-1.5 s before the previous one ends."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(clips))
    said, t = [], 0.5
    for n, i in enumerate(order):
        _, samples, reference = clips[i]
        said.append((n % 2, t, samples, reference))
        end = t + samples.size / SR
        t = end - rng.uniform(0.5, 1.5) if rng.random() < 0.35 else end + rng.uniform(0.4, 1.5)
    return max(at + s.size / SR for _, at, s, _ in said) + 1.0, said


def place(seconds: float, parts) -> np.ndarray:
    out = np.zeros(int(seconds * SR), dtype=np.float32)
    for at, samples in parts:
        out[int(at * SR): int(at * SR) + samples.size] += samples
    return out


def hiss(seconds: float, rms: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, rms, int(seconds * SR)).astype(np.float32)


def delayed(x: np.ndarray, samples: int) -> np.ndarray:
    return np.concatenate([np.zeros(samples, np.float32), x[:-samples]])


def layouts(clips) -> dict[str, tuple[np.ndarray, str]]:
    """Each layout's channels (int16) and the reference of the whole conversation."""
    out = {}
    seconds, said = turns(clips, seed=1)
    reference = "".join(r for _, _, _, r in sorted(said, key=lambda s: s[1]))
    person = [place(seconds, [(at, s) for p, at, s, _ in said if p == who]) for who in (0, 1)]
    noise = [hiss(seconds, 10 ** (-50 / 20), seed) for seed in (1, 2)]
    out["lapel-mics"] = ([person[0] + 0.1 * delayed(person[1], 16) + noise[0],
                          person[1] + 0.1 * delayed(person[0], 16) + noise[1]], reference)
    out["phone-call"] = ([person[0] + noise[0], person[1] + noise[1]], reference)
    seconds, said = turns(clips, seed=2)
    one = place(seconds, [(at, s) for _, at, s, _ in said])
    reference_one = "".join(r for _, _, _, r in sorted(said, key=lambda s: s[1]))
    noise = [hiss(seconds, 10 ** (-50 / 20), seed) for seed in (3, 4)]
    out["reversed-polarity"] = ([one + noise[0], -one + noise[1]], reference_one)
    out["hissing-channel"] = ([one * 10 ** (-10 / 20) + noise[0],
                               hiss(seconds, 10 ** (-26 / 20), 5)], reference_one)
    out["same-on-both"] = ([one + noise[0], one + noise[0]], reference_one)
    return {name: ((np.clip(np.stack(pair), -1, 1) * 32767).astype(np.int16), reference)
            for name, (pair, reference) in out.items()}


def transcribe(engines, settings, profile, tracks) -> tuple[str, float]:
    started = time.perf_counter()
    heard = [Heard(t, engines.detector.speech_chunks(t.samples)) for t in tracks]
    result = recognize_tracks(engines, settings, heard, profile)
    return "".join(s.text for s in result.segments), time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "stereo.json")
    args = parser.parse_args()
    clips = mandarin_clips()
    if len(clips) < 4:
        print(f"bench/stereo.py: needs the shared Mandarin clips under {SHARED}; skipped",
              file=sys.stderr)
        return 0
    settings = Settings.load()
    engines = load_engines(settings)
    profile = select_profile(settings, "auto")
    results = {}
    for name, (pcm, reference) in layouts(clips).items():
        seconds = pcm.shape[1] / SR
        started = time.perf_counter()
        mean = channels.mean_mix(pcm)
        mean_seconds = time.perf_counter() - started
        started = time.perf_counter()
        layout, tracks = channels.arrange(pcm)
        arrange_seconds = time.perf_counter() - started
        mean_text, mean_asr = transcribe(engines, settings, profile,
                                         [channels.Track(mean, None)])
        text, asr = transcribe(engines, settings, profile, tracks)
        results[name] = {
            "seconds": round(seconds, 1),
            "layout": layout.as_dict(),
            "mean": {"cer": round(character_error_rate(reference, mean_text), 4),
                     "mix_seconds": round(mean_seconds, 4),
                     "asr_seconds": round(mean_asr, 2), "text": mean_text},
            "tingji": {"cer": round(character_error_rate(reference, text), 4),
                       "arrange_seconds": round(arrange_seconds, 4),
                       "arrange_rtf": round(arrange_seconds / seconds, 5),
                       "asr_seconds": round(asr, 2), "text": text},
            "reference": reference,
        }
        print(f"{name:18} mean CER {results[name]['mean']['cer']:.3f}  tingji CER "
              f"{results[name]['tingji']['cer']:.3f}  ({layout.mode})", file=sys.stderr)
    report = {**header("stereo", settings), "clips": [c[0] for c in clips],
              "layouts": results}
    write(args.out, report)
    print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
