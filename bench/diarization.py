"""Diarization benchmark: who spoke when, on conversations of real voices.

    python bench/diarization.py [--seeds 4] [--out bench/results/diarization.json]

The dev set is built here, not stored: Debian's voice packages are fetched with ``apt-get
download`` into ~/.cache/tingji/speech-debs, one person each — Allison (en-US, and the same
Allison in es-MX: one person speaking two languages, who must count as one), June (fr-CA),
Armelle (fr, 8 kHz GSM: a telephone-band voice), Menardi (it) and the LibriVox reader of
pocketsphinx-testdata.  Each conversation takes 1-4 of them in turns of 2-8 s (runs of
different prompts of the voice, each prompt once), pauses of 0.2-1 s and a level offset per
person of -8..+4 dB.  Eight voice combinations per seed.

For each conversation the VAD's speech is diarized with the count given and counted
(``settings.min_speakers..max_speakers``).  Reported: DER in 10 ms frames (missed speech,
false alarm and confusion over the reference speech, the best mapping of labels to people;
with no collar and with 0.25 s around every reference boundary left out), the confusion
alone, how often the count was right, the stage's real-time factor and the memory it added.
"""

from __future__ import annotations

import argparse
import itertools
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import header, write  # noqa: E402
from device import audio  # noqa: E402
from device.settings import Settings  # noqa: E402

DEBS = Path.home() / ".cache" / "tingji" / "speech-debs"
SR = audio.SAMPLE_RATE
VOICES = {  # name: (package, folder inside it, glob, person)
    "allison-en": ("asterisk-core-sounds-en-g722",
                   "usr/share/asterisk/sounds/en_US_f_Allison", "*.g722", "allison"),
    "allison-es": ("asterisk-core-sounds-es-g722",
                   "usr/share/asterisk/sounds/es_MX_f_Allison", "*.g722", "allison"),
    "june-fr": ("asterisk-core-sounds-fr-g722",
                "usr/share/asterisk/sounds/fr_CA_f_June", "*.g722", "june"),
    "armelle-fr-8k": ("asterisk-prompt-fr-armelle", "usr/share/asterisk/sounds/fr", "*.gsm",
                      "armelle"),
    "menardi-it": ("asterisk-prompt-it-menardi-wav",
                   "usr/share/asterisk/sounds/it_IT_f_Menardi", "*.wav", "menardi"),
    "reader-en": ("pocketsphinx-testdata", "usr/share/pocketsphinx/test/data/librivox",
                  "*.wav", "reader"),
}
COMBINATIONS = [["allison-en", "reader-en"], ["june-fr", "menardi-it"],
                ["allison-en", "allison-es"], ["allison-en", "june-fr", "reader-en"],
                ["armelle-fr-8k", "menardi-it", "allison-es"],
                ["allison-en", "june-fr", "menardi-it", "reader-en"], ["reader-en"],
                ["allison-en"]]
TARGETS = {"der_known_max": 0.10, "der_auto_max": 0.15, "rtf_max": 0.01}


def voice_files(name: str) -> list[Path]:
    package, folder, pattern, _ = VOICES[name]
    target = DEBS / package
    if not target.is_dir():
        DEBS.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", package], cwd=DEBS, capture_output=True)
        debs = sorted(DEBS.glob(f"{package}_*.deb"))
        if not debs:
            raise SystemExit(f"bench/diarization.py: {package} could not be fetched")
        subprocess.run(["dpkg", "-x", str(debs[-1]), str(target)], check=True)
    return sorted((target / folder).glob(pattern))


def conversation(names: list[str], rng: random.Random):
    files = {n: rng.sample(voice_files(n), len(voice_files(n))) for n in names}
    gains = {n: 10 ** (rng.uniform(-8, 4) / 20) for n in names}
    pieces, truth, t, previous = [], [], 0.0, None
    for _ in range(8 if len(names) > 1 else 4):
        name = rng.choice([n for n in names if n != previous] or names)
        previous = name
        wanted, said = rng.uniform(2, 8) * SR, []
        while files[name] and sum(x.size for x in said) < wanted:
            said.append(audio.decode_clip(files[name].pop()))
        if not said:
            continue
        part = np.concatenate(said) * gains[name]
        pause = np.zeros(int(rng.uniform(0.2, 1.0) * SR), np.float32)
        pieces += [part, pause]
        truth.append((t, t + part.size / SR, VOICES[name][3]))
        t += (part.size + pause.size) / SR
    return np.concatenate(pieces), truth


def der(truth, turns, seconds: float, collar: float = 0.0) -> dict:
    frames = int(seconds * 100) + 1
    people = sorted({p for _, _, p in truth})
    ref, hyp = np.full(frames, -1), np.full(frames, -1)
    scored = np.ones(frames, bool)
    for start, end, person in truth:
        ref[int(start * 100):int(end * 100)] = people.index(person)
        for edge in (start, end):
            scored[max(0, int((edge - collar) * 100)):int((edge + collar) * 100)] = False
    for turn in turns:
        hyp[int(turn.start * 100):int(turn.end * 100)] = turn.speaker
    speech = (ref >= 0) & scored
    missed = np.sum(speech & (hyp < 0))
    false_alarm = np.sum(~(ref >= 0) & scored & (hyp >= 0))
    labels = sorted(set(hyp[hyp >= 0].tolist()))
    both = speech & (hyp >= 0)
    confusion = min(
        (np.sum(both & (np.array([dict(zip(labels, perm, strict=True)).get(h, -2)
                                  for h in hyp]) != ref))
         for perm in itertools.permutations(range(max(len(people), len(labels))),
                                            len(labels))),
        default=np.sum(both))
    total = max(int(speech.sum()), 1)
    return {"der": round(float((missed + false_alarm + confusion) / total), 4),
            "confusion": round(float(confusion / total), 4), "speakers": len(labels)}


def main() -> int:
    from device.jobs import load_engines
    from device.speakers.diarize import diarize

    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "bench" / "results" / "diarization.json")
    args = parser.parse_args()
    settings = Settings.load()
    engines = load_engines(settings)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    encoder = engines.speaker_encoder()
    rows = []
    stage_seconds = audio_seconds = 0.0
    for seed in range(1, args.seeds + 1):
        rng = random.Random(seed)
        for names in COMBINATIONS:
            samples, truth = conversation(names, rng)
            seconds = samples.size / SR
            speech = engines.detector.speech_chunks(samples)
            people = len({p for _, _, p in truth})
            started = time.perf_counter()
            known = diarize(encoder, samples, speech, people)
            stage_seconds += time.perf_counter() - started
            audio_seconds += seconds
            counted = diarize(encoder, samples, speech, None, settings.min_speakers,
                              settings.max_speakers)
            rows.append({
                "seed": seed, "voices": names, "people": people, "seconds": round(seconds, 1),
                "known": der(truth, known, seconds), "known_collar": der(truth, known, seconds,
                                                                         0.25),
                "auto": der(truth, counted, seconds), "auto_collar": der(truth, counted,
                                                                        seconds, 0.25)})
            print(f"seed {seed} {'+'.join(names)}: known DER {rows[-1]['known']['der']:.3f}, "
                  f"auto DER {rows[-1]['auto']['der']:.3f} "
                  f"({rows[-1]['auto']['speakers']}/{people} speakers)", file=sys.stderr)

    def mean(key: str, field: str) -> float:
        return round(float(np.mean([r[key][field] for r in rows])), 4)

    summary = {
        "conversations": len(rows),
        "der_known": mean("known", "der"), "der_known_collar": mean("known_collar", "der"),
        "confusion_known": mean("known", "confusion"),
        "der_auto": mean("auto", "der"), "der_auto_collar": mean("auto_collar", "der"),
        "confusion_auto": mean("auto", "confusion"),
        "count_right": sum(r["auto"]["speakers"] == r["people"] for r in rows),
        "rtf": round(stage_seconds / audio_seconds, 5),
        "added_peak_rss_mb": round(
            (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024, 1),
    }
    write(args.out, {**header("diarization", settings), "targets": TARGETS,
                     "summary": summary, "conversations": rows})
    print(summary, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
