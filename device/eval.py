"""Accuracy harness.

    python -m device.eval DIR [--profiles auto,dialect] [--out FILE.json]

DIR holds audio clips and a manifest.tsv (file, language, dialect, reference, …) like
../shared/speech.  Every clip is transcribed with each chosen profile ("auto", "dialect" =
the profile named by the clip's dialect column, "raw" = Whisper with no profile at all, or
any profile name); the character error
rate (Chinese and other unspaced scripts) or word error rate (English and other spaced
languages) and the real-time factor are written per clip and per dialect, as JSON and as a
readable table.

    python -m device.eval DIR --speakers [--out FILE.json]

scores who-spoke-when instead: every ``NAME.rttm`` in DIR (reference speaker turns, as
``bench/voices.py`` writes them) with its audio ``NAME.wav`` (or .flac, .mp3, …) is
diarized twice, told the number of speakers in the reference and counting them itself
(within the settings' min_speakers..max_speakers).  Reported per recording and overall:
DER in 10 ms frames with no collar and with a 0.25 s collar, its parts (missed speech,
false alarm, confusion), and how often the count was right.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from device import audio
from device.jobs import load_engines
from device.pipeline import Engines, recognize, select_profile
from device.profiles import ProfileError
from device.settings import Settings
from device.text import SCORING, character_error_rate, word_error_rate

SPACED_LANGUAGES = {"en", "fr", "de", "es", "it", "pt", "nl", "ru"}


@dataclass(frozen=True)
class ClipResult:
    file: str
    dialect: str
    mode: str
    profile: str
    """The profile used (auto mode: the one it chose)."""
    language: str | None
    metric: str
    error_rate: float
    rtf: float
    hypothesis: str
    reference: str


def read_manifest(directory: Path) -> list[dict]:
    with open(directory / "manifest.tsv", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def check_manifest(directory: Path, rows: list[dict], modes: list[str],
                   settings: Settings) -> None:
    """ProfileError naming the manifest line whose dialect has no profile (when the
    ``dialect`` mode needs one), before anything is transcribed."""
    from device.profiles import ProfileError, load_profiles

    known = load_profiles(settings.data_dir)
    for number, row in enumerate(rows, start=2):
        for column in ("file", "language", "dialect", "reference"):
            if not row.get(column):
                raise ProfileError(f"{directory / 'manifest.tsv'}:{number}: no {column}")
        if "dialect" in modes and row["dialect"] not in known:
            raise ProfileError(
                f"{directory / 'manifest.tsv'}:{number}: unknown dialect {row['dialect']!r} "
                f"(profiles: {', '.join(sorted(known))})")


def evaluate(
    directory: Path, modes: list[str], settings: Settings, engines: Engines
) -> list[ClipResult]:
    results = []
    for row in read_manifest(directory):
        samples = audio.decode(directory / row["file"])
        duration = samples.size / audio.SAMPLE_RATE
        for mode in modes:
            name = {"dialect": row["dialect"], "raw": "auto"}.get(mode, mode)
            profile = select_profile(settings, name)
            started = time.perf_counter()
            speech = engines.detector.speech_chunks(samples)
            outcome = recognize(engines, settings, samples, speech, profile,
                                decide=mode != "raw")
            elapsed = time.perf_counter() - started
            spaced = row["language"] in SPACED_LANGUAGES
            joiner = " " if spaced else ""
            hypothesis = joiner.join(s.text for s in outcome.segments)
            score = word_error_rate if spaced else character_error_rate
            results.append(ClipResult(
                file=row["file"], dialect=row["dialect"], mode=mode,
                profile=outcome.profile.name, language=outcome.language,
                metric="wer" if spaced else "cer",
                error_rate=round(score(row["reference"], hypothesis), 4),
                rtf=round(elapsed / duration, 4), hypothesis=hypothesis,
                reference=row["reference"],
            ))
    return results


def summarise(results: list[ClipResult]) -> dict:
    groups: dict[str, list[ClipResult]] = {}
    for r in results:
        groups.setdefault(f"{r.dialect}/{r.mode}", []).append(r)
    return {
        key: {
            "clips": len(items),
            "metric": items[0].metric,
            "mean_error_rate": round(sum(r.error_rate for r in items) / len(items), 4),
            "mean_rtf": round(sum(r.rtf for r in items) / len(items), 4),
            "profiles_chosen": sorted({r.profile for r in items}),
        }
        for key, items in sorted(groups.items())
    }


def auto_decisions(results: list[ClipResult]) -> dict[str, dict[str, int]]:
    """Auto mode's choices per dialect: {dialect: {profile chosen: clips}} (a confusion
    matrix of its variety decisions)."""
    out: dict[str, dict[str, int]] = {}
    for r in results:
        if r.mode == "auto":
            row = out.setdefault(r.dialect, {})
            row[r.profile] = row.get(r.profile, 0) + 1
    return out


def table(results: list[ClipResult]) -> str:
    lines = [f"{'clip':<34} {'mode':<10} {'profile':<11} {'lang':<5} {'error':>12} "
             f"{'RTF':>6}  text"]
    for r in results:
        lines.append(f"{r.file:<34} {r.mode:<10} {r.profile:<11} {r.language or '-':<5} "
                     f"{r.metric.upper()} {r.error_rate:>7.3f} {r.rtf:>6.3f}  {r.hypothesis}")
    return "\n".join(lines)


AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".m4a", ".opus")
COLLAR = 0.25


def evaluate_speakers(directory: Path, settings: Settings, engines: Engines) -> list[dict]:
    """Diarize every recording of DIR that has an RTTM; one row each."""
    from device.speakers.der import error_rates, read_rttm
    from device.speakers.diarize import diarize

    rows = []
    encoder = engines.speaker_encoder()  # loaded before anything is timed
    for rttm in sorted(directory.glob("*.rttm")):
        for file_id, truth in read_rttm(rttm).items():
            path = next((directory / f"{file_id}{s}" for s in AUDIO_SUFFIXES
                         if (directory / f"{file_id}{s}").is_file()), None)
            if path is None:
                raise SystemExit(f"error: {rttm}: no audio named {file_id}.wav (or "
                                 f"{', '.join(AUDIO_SUFFIXES[1:])}) beside it")
            samples = audio.decode(path)
            speech = engines.detector.speech_chunks(samples)
            people = len({t.speaker for t in truth})
            row = {"file": path.name, "seconds": round(samples.size / audio.SAMPLE_RATE, 1),
                   "speakers": people}
            for mode, count in (("known", people), ("auto", None)):
                started = time.perf_counter()
                turns = diarize(encoder, samples, speech, count,
                                settings.min_speakers, settings.max_speakers)
                row[f"{mode}_seconds"] = round(time.perf_counter() - started, 3)
                for key, collar in ((mode, 0.0), (f"{mode}_collar", COLLAR)):
                    row[key] = asdict(error_rates(truth, turns, collar))
            rows.append(row)
    return rows


def summarise_speakers(rows: list[dict]) -> dict:
    def mean(key: str, field: str) -> float:
        return round(sum(r[key][field] for r in rows) / max(len(rows), 1), 4)

    out = {"recordings": len(rows), "collar_seconds": COLLAR}
    for key in ("known", "known_collar", "auto", "auto_collar"):
        out[key] = {field: mean(key, field)
                    for field in ("der", "missed", "false_alarm", "confusion")}
    out["count_right"] = sum(r["auto"]["speakers"] == r["speakers"] for r in rows)
    out["rtf"] = round(sum(r["known_seconds"] for r in rows)
                       / max(sum(r["seconds"] for r in rows), 1e-9), 5)
    return out


def speaker_table(rows: list[dict], summary: dict) -> str:
    lines = [f"{'recording':<52} {'people':>6} {'DER known':>9} {'(collar)':>8} "
             f"{'DER auto':>8} {'(collar)':>8} {'counted':>7}"]
    for r in rows:
        lines.append(f"{r['file']:<52} {r['speakers']:>6} {r['known']['der']:>9.3f} "
                     f"{r['known_collar']['der']:>8.3f} {r['auto']['der']:>8.3f} "
                     f"{r['auto_collar']['der']:>8.3f} {r['auto']['speakers']:>7}")
    lines.append(
        f"mean DER: known count {summary['known']['der']:.3f} "
        f"({summary['known_collar']['der']:.3f} with a {COLLAR} s collar), counted "
        f"{summary['auto']['der']:.3f} ({summary['auto_collar']['der']:.3f}); confusion "
        f"{summary['known']['confusion']:.3f} / {summary['auto']['confusion']:.3f}; count "
        f"right in {summary['count_right']} of {summary['recordings']}; real-time factor "
        f"{summary['rtf']:.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m device.eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--profiles", default="auto,dialect",
                        help="comma-separated: auto, dialect, or profile names")
    parser.add_argument("--speakers", action="store_true",
                        help="score diarization against the RTTM files in DIR instead")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.speakers:
        return _main_speakers(args)
    if not (args.directory / "manifest.tsv").is_file():
        print(f"error: {args.directory}: no manifest.tsv", file=sys.stderr)
        return 1
    settings = Settings.load()
    modes = [m.strip() for m in args.profiles.split(",") if m.strip()]
    try:
        check_manifest(args.directory, read_manifest(args.directory), modes, settings)
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    results = evaluate(args.directory, modes, settings, load_engines(settings))
    report = {"directory": str(args.directory), "scoring": SCORING,
              "summary": summarise(results), "auto_decisions": auto_decisions(results),
              "clips": [asdict(r) for r in results]}
    print(f"scored {SCORING}")
    print(table(results))
    for dialect, chosen in report["auto_decisions"].items():
        print(f"auto chose for {dialect}: " + ", ".join(f"{p} ×{n}" for p, n in
                                                        sorted(chosen.items())))
    for key, s in report["summary"].items():
        print(f"{key:<24} {s['metric'].upper()} {s['mean_error_rate']:.3f}  "
              f"RTF {s['mean_rtf']:.3f}  profiles {', '.join(s['profiles_chosen'])}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n")
    return 0


def _main_speakers(args: argparse.Namespace) -> int:
    from device.speakers.der import RttmError

    if not any(args.directory.glob("*.rttm")):
        print(f"error: {args.directory}: no .rttm files", file=sys.stderr)
        return 1
    settings = Settings.load()
    try:
        rows = evaluate_speakers(args.directory, settings, load_engines(settings))
    except RttmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    summary = summarise_speakers(rows)
    print(speaker_table(rows, summary))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"directory": str(args.directory), "summary": summary,
                                        "recordings": rows}, ensure_ascii=False, indent=2)
                            + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
