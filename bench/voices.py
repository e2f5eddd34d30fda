"""Real voices of different people, and conversations made of them with exact speaker truth.

    python bench/voices.py OUT [--seeds 4]

writes the diarization dev set: OUT/<name>.wav (16 kHz mono) and OUT/<name>.rttm for every
conversation, which ``python -m device.eval OUT --speakers`` scores.  Nothing of it is
committed: the audio comes from Debian packages, fetched with ``apt-get download`` into
~/.cache/tingji/speech-debs, and from ../shared/speech and ../shared/speech-dev.

One person per voice prompt package: Allison (en-US, and the same Allison in es-MX: one
person speaking two languages, who must count as one), June (fr-CA), Carlo (it, a man),
the Russian IVR voice, Armelle (fr) and a Colombian Spanish voice (both 8 kHz GSM:
telephone-band), Menardi (it) and the LibriVox reader of pocketsphinx-testdata.  The
Mandarin speakers are the clips of ../shared, one person each, a few seconds each, so they
speak once per conversation.

A conversation takes 1-4 people in turns of 2-8 s (runs of different prompts of the voice,
each prompt used once), pauses of 0.2-1 s and a level offset per person of -8..+4 dB.
"""

from __future__ import annotations

import argparse
import csv
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from device import audio  # noqa: E402
from device.speakers.der import Turn, rttm_lines  # noqa: E402

DEBS = Path.home() / ".cache" / "tingji" / "speech-debs"
SHARED = ROOT.parent / "shared"
SR = audio.SAMPLE_RATE


@dataclass(frozen=True)
class Voice:
    person: str
    package: str = ""
    folder: str = ""
    pattern: str = ""
    clip: str = ""
    """A clip under ../shared instead of a package (one recording of one person)."""


VOICES = {
    "allison-en": Voice("allison", "asterisk-core-sounds-en-g722",
                        "usr/share/asterisk/sounds/en_US_f_Allison", "*.g722"),
    "allison-es": Voice("allison", "asterisk-core-sounds-es-g722",
                        "usr/share/asterisk/sounds/es_MX_f_Allison", "*.g722"),
    "june-fr": Voice("june", "asterisk-core-sounds-fr-g722",
                     "usr/share/asterisk/sounds/fr_CA_f_June", "*.g722"),
    "carlo-it": Voice("carlo", "asterisk-core-sounds-it-g722",
                      "usr/share/asterisk/sounds/it_IT_m_Carlo", "*.g722"),
    "ivr-ru": Voice("ivr-ru", "asterisk-core-sounds-ru-g722",
                    "usr/share/asterisk/sounds/ru_RU_f_IvrvoiceRU", "*.g722"),
    "armelle-fr-8k": Voice("armelle", "asterisk-prompt-fr-armelle",
                           "usr/share/asterisk/sounds/fr", "*.gsm"),
    "co-es-8k": Voice("co-es", "asterisk-prompt-es-co", "usr/share/asterisk/sounds/es",
                      "*.gsm"),
    "menardi-it": Voice("menardi", "asterisk-prompt-it-menardi-wav",
                        "usr/share/asterisk/sounds/it_IT_f_Menardi", "*.wav"),
    "reader-en": Voice("reader", "pocketsphinx-testdata",
                       "usr/share/pocketsphinx/test/data/librivox", "*.wav"),
    "zh-aishell-0764": Voice("zh-aishell-0764", clip="speech/zh_aishell_BAC009S0764W0121.wav"),
    "zh-aishell-0724": Voice("zh-aishell-0724",
                             clip="speech-dev/zh_wenet_aishell_BAC009S0724W0121.wav"),
    "zh-hours": Voice("zh-hours", clip="speech/zh_hours.wav"),
    "zh-funasr": Voice("zh-funasr", clip="speech-dev/zh_funasr_asr_example.wav"),
    "zh-paddle": Voice("zh-paddle", clip="speech-dev/zh_paddlespeech_zh.wav"),
    "zh-step": Voice("zh-step", clip="speech-dev/zh_stepaudio_tingting.wav"),
    "zh-cosy": Voice("zh-cosy", clip="speech-dev/zh_cosyvoice_zero_shot_prompt.wav"),
}
COMBINATIONS = [["allison-en", "reader-en"], ["june-fr", "menardi-it"],
                ["allison-en", "allison-es"], ["allison-en", "june-fr", "reader-en"],
                ["armelle-fr-8k", "menardi-it", "allison-es"],
                ["allison-en", "june-fr", "menardi-it", "reader-en"], ["reader-en"],
                ["allison-en"], ["carlo-it", "ivr-ru"], ["co-es-8k", "carlo-it", "june-fr"],
                ["zh-funasr", "zh-paddle", "zh-step"],
                ["reader-en", "zh-aishell-0764", "zh-hours"],
                ["carlo-it", "zh-aishell-0724", "zh-cosy"]]


def fetch(package: str) -> Path:
    """The package's files, extracted (downloaded once into the cache)."""
    target = DEBS / package
    if not target.is_dir():
        DEBS.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", package], cwd=DEBS, capture_output=True)
        debs = sorted(DEBS.glob(f"{package}_*.deb"))
        if not debs:
            raise SystemExit(f"bench/voices.py: the Debian package {package} could not be "
                             "fetched (apt-get download)")
        subprocess.run(["dpkg", "-x", str(debs[-1]), str(target)], check=True)
    return target


def voice_files(name: str) -> list[Path]:
    """The recordings of a voice ([] for a clip of ../shared that is not there)."""
    voice = VOICES[name]
    if voice.clip:
        path = SHARED / voice.clip
        return [path] if path.is_file() else []
    return sorted((fetch(voice.package) / voice.folder).glob(voice.pattern))


def available(names: list[str]) -> bool:
    return all(voice_files(n) for n in names)


def spoken(samples: np.ndarray, floor_db: float = -35.0) -> tuple[int, int]:
    """The first and last sample of a clip's speech: 10 ms frames within ``floor_db`` of
    its loudest frame (prompts carry silence at both ends, which is not speech)."""
    hop = SR // 100
    frames = samples[: samples.size // hop * hop].reshape(-1, hop)
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    loud = np.flatnonzero(rms > rms.max() * 10 ** (floor_db / 20)) if rms.size else []
    if not len(loud):
        return 0, 0
    return int(loud[0]) * hop, min(int(loud[-1] + 1) * hop, samples.size)


JOIN_SECONDS = 0.5
"""Pauses shorter than this inside a person's turn count as part of the turn."""


def conversation(names: list[str], rng: random.Random) -> tuple[np.ndarray, list[Turn]]:
    """Samples and the true turns of a conversation of these voices (speech only: the
    silence at the ends of each clip, and pauses of ``JOIN_SECONDS`` or more, are not)."""
    files = {n: rng.sample(voice_files(n), len(voice_files(n))) for n in names}
    gains = {n: 10 ** (rng.uniform(-8, 4) / 20) for n in names}
    pieces, truth, t, previous = [], [], 0.0, None
    for _ in range(8 if len(names) > 1 else 4):
        name = rng.choice([n for n in names if n != previous and files[n]]
                          or [n for n in names if files[n]] or names)
        previous = name
        wanted, said = rng.uniform(2, 8) * SR, []
        while files[name] and sum(x.size for x in said) < wanted:
            said.append(audio.decode_clip(files[name].pop()))
        if not said:
            break
        part = np.concatenate(said) * gains[name]
        pause = np.zeros(int(rng.uniform(0.2, 1.0) * SR), np.float32)
        pieces += [part, pause]
        offset = t
        for clip in said:
            first, last = spoken(clip)
            start, end = round(offset + first / SR, 3), round(offset + last / SR, 3)
            person = VOICES[name].person
            if truth and truth[-1].speaker == person and start - truth[-1].end < JOIN_SECONDS:
                truth[-1] = Turn(truth[-1].start, end, person)
            elif end > start:
                truth.append(Turn(start, end, person))
            offset += clip.size / SR
        t += (part.size + pause.size) / SR
    return np.concatenate(pieces).astype(np.float32), truth


def write_devset(out: Path, seeds: int = 4) -> list[str]:
    """Write the conversations; returns their names (a combination whose voices are not
    all here is left out, and said so)."""
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for seed in range(1, seeds + 1):
        rng = random.Random(seed)
        for voices in COMBINATIONS:
            if not available(voices):
                if seed == 1:
                    print(f"bench/voices.py: left out {'+'.join(voices)} (not all of its "
                          "voices are here)", file=sys.stderr)
                continue
            samples, truth = conversation(voices, rng)
            name = f"s{seed}-{'+'.join(voices)}"
            audio.write_wav(out / f"{name}.wav", samples)
            (out / f"{name}.rttm").write_text(rttm_lines(name, truth))
            names.append(name)
    with open(out / "conversations.tsv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(["file", "rttm", "voices"])
        writer.writerows([f"{n}.wav", f"{n}.rttm", n.split("-", 1)[1]] for n in names)
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seeds", type=int, default=4)
    args = parser.parse_args(argv)
    names = write_devset(args.out, args.seeds)
    print(f"{len(names)} conversations in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
