"""Faithfulness benchmark: do stored summaries say what the transcript says?

    python bench/faithfulness.py [--model ID] [--out bench/results/faithfulness.json]

Transcripts of real speech, transcribed here by tingji (auto mode) from recordings assembled
of many different real clips, each clip once:
  zh-dialects      the 22 Mandarin, Cantonese and Sichuanese clips of ../shared/speech-dev
                   and the 4 Chinese clips of ../shared/speech (many speakers, unrelated
                   topics: the kind of recording on which the model invented one story)
  en-prompts       80 of the recorded prompts of Debian's asterisk-core-sounds-en-g722 (one
                   speaker, unrelated sentences)
  en-librivox      the LibriVox reading of Debian's pocketsphinx-testdata (one story)
The Debian packages are fetched with ``apt-get download`` into ~/.cache/tingji/speech-debs
(a layout is skipped when its package cannot be had).

Each transcript is summarised twice by the summariser as the box runs it: writing straight
from the transcript ("direct"), and first picking the lines that carry the content, then
writing from them ("extract", the setting summary_extract).  Reported: the claims
(key points, decisions, action items) as the model wrote them and how many of those their
own citations support — the baseline, measured in the same run — then, after tingji's
checks, how many were re-cited, left out or flagged, the share of stored claims supported,
the degenerate answers caught (retries, summaries refused), and the time.  Targets: >= 90 %
of stored claims supported, no degenerate summary stored.
"""

from __future__ import annotations

import argparse
import csv
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import header, write  # noqa: E402
from device import audio  # noqa: E402
from device.databases import open_store  # noqa: E402
from device.faithfulness import degeneracy  # noqa: E402
from device.settings import Settings  # noqa: E402

SHARED = ROOT.parent / "shared"
DEBS = Path.home() / ".cache" / "tingji" / "speech-debs"
TARGETS = {"stored_claims_supported_min": 0.9, "degenerate_stored_max": 0}


def _manifest_clips(folder: Path, languages: set[str]) -> list[Path]:
    manifest = folder / "manifest.tsv"
    if not manifest.is_file():
        return []
    with open(manifest, encoding="utf-8") as f:
        return [folder / row["file"] for row in csv.DictReader(f, delimiter="\t")
                if row["language"] in languages]


def _debian(package: str) -> Path | None:
    """The package's files, extracted once into the cache; None when it cannot be had."""
    target = DEBS / package
    if target.is_dir():
        return target
    DEBS.mkdir(parents=True, exist_ok=True)
    fetched = subprocess.run(["apt-get", "download", package], cwd=DEBS,
                             capture_output=True, text=True)
    debs = sorted(DEBS.glob(f"{package}_*.deb"))
    if fetched.returncode != 0 or not debs:
        print(f"bench/faithfulness.py: {package} could not be fetched; its layout is skipped",
              file=sys.stderr)
        return None
    subprocess.run(["dpkg", "-x", str(debs[-1]), str(target)], check=True)
    return target


def sources() -> dict[str, list[Path]]:
    found = {"zh-dialects": _manifest_clips(SHARED / "speech-dev", {"zh", "yue"})
             + _manifest_clips(SHARED / "speech", {"zh", "yue"})}
    prompts = _debian("asterisk-core-sounds-en-g722")
    if prompts:
        files = sorted(prompts.glob("usr/share/asterisk/sounds/en_US_f_Allison/*.g722"))
        found["en-prompts"] = random.Random(5).sample(files, min(80, len(files)))
    readings = _debian("pocketsphinx-testdata")
    if readings:
        found["en-librivox"] = sorted(
            readings.glob("usr/share/pocketsphinx/test/data/librivox/*.wav"))
    return {name: files for name, files in found.items() if files}


def transcribe(settings: Settings, files: list[Path], work: Path):
    """One recording of the clips with 0.8 s pauses, transcribed as the box would."""
    from device.jobs import Runner
    from device.pipeline import import_audio

    pause = np.zeros(int(0.8 * audio.SAMPLE_RATE), dtype=np.float32)
    pieces = []
    for path in files:
        pieces += [audio.decode_clip(path), pause]
    wav = work / "recording.wav"
    audio.write_wav(wav, np.concatenate(pieces))
    store = open_store(settings)
    recording, job = import_audio(store, settings, wav, profile="auto")
    runner = Runner(settings)
    assert runner.run(store, runner.claim(store, job.id)), store.get_job(job.id).error
    recording = store.get_recording(recording.id)
    return recording, store.segments(recording.id, with_words=False)


def measure(settings: Settings, files: list[Path], model: str) -> dict:
    with tempfile.TemporaryDirectory() as work:
        local = replace(settings, data_dir=Path(work) / "data")
        started = time.perf_counter()
        recording, segments = transcribe(local, files, Path(work))
        transcribed = time.perf_counter() - started
    result = {"clips": len(files), "seconds": round(recording.duration, 1),
              "language": recording.language, "segments": len(segments),
              "characters": sum(len(s.text) for s in segments),
              "transcription_s": round(transcribed, 1)}
    for mode, extract in (("direct", False), ("extract", True)):
        result[mode] = summarise(settings, segments, recording.language, model, extract)
    return result


def summarise(settings, segments, language, model: str, extract: bool) -> dict:
    from device.summarize import UnreliableSummary
    from device.summary_job import summarize

    started = time.perf_counter()
    try:
        summary = summarize(settings, segments, language, model, extract=extract)
    except UnreliableSummary as exc:
        return {"summary_s": round(time.perf_counter() - started, 1), "stored": False,
                "refused": str(exc)}
    elapsed = time.perf_counter() - started
    checked = summary.checked
    kept = sum(len(getattr(summary, k)) for k in ("key_points", "decisions", "action_items"))
    written_supported = (checked["claims"] - checked["recited"] - checked["left_out"]
                         - checked["weak"])
    return {
        "summary_s": round(elapsed, 1),
        "stored": True,
        "retries": summary.retries,
        "as_written": {"claims": checked["claims"],
                       "supported_by_own_citations": written_supported,
                       "share": round(written_supported / max(checked["claims"], 1), 3)},
        "after_checks": {"claims": kept, "recited": checked["recited"],
                         "left_out": checked["left_out"], "flagged_weak": checked["weak"],
                         "supported_share": round((kept - checked["weak"]) / max(kept, 1), 3),
                         "number_or_name_flags": sum(1 for f in summary.flags if f.term)},
        "degenerate": degeneracy(summary.as_dict(), len(segments)),
        "title": summary.title, "summary": summary.summary,
        "key_points": [p.get("text") for p in summary.key_points],
        "unsupported": summary.unsupported,
    }


def _totals(runs: list[dict]) -> dict:
    stored = [r for r in runs if r["stored"]]
    claims = sum(r["after_checks"]["claims"] for r in stored)
    written = sum(r["as_written"]["claims"] for r in stored)
    return {
        "claims_written": written,
        "written_supported_share": round(sum(r["as_written"]["supported_by_own_citations"]
                                             for r in stored) / max(written, 1), 3),
        "stored_claims": claims,
        "stored_supported_share": round(sum(
            r["after_checks"]["claims"] - r["after_checks"]["flagged_weak"] for r in stored)
            / max(claims, 1), 3),
        "left_out": sum(r["after_checks"]["left_out"] for r in stored),
        "retries": sum(r["retries"] for r in stored),
        "degenerate_stored": sum(bool(r.get("degenerate")) for r in stored),
        "refused": sum(not r["stored"] for r in runs),
        "summary_s": round(sum(r["summary_s"] for r in runs), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None, help="summariser (default: the setting)")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "bench" / "results" / "faithfulness.json")
    args = parser.parse_args()
    settings = Settings.load()
    model = args.model or settings.summary_model
    results = {}
    for name, files in sources().items():
        results[name] = r = measure(settings, files, model)
        for mode in ("direct", "extract"):
            m = r[mode]
            print(f"{name} ({mode}): {r['seconds']} s of speech, summary {m['summary_s']} s, "
                  + (f"as written {m['as_written']['share']:.0%} supported, stored "
                     f"{m['after_checks']['supported_share']:.0%}" if m["stored"]
                     else f"refused: {m['refused']}"), file=sys.stderr)
    totals = {mode: _totals([r[mode] for r in results.values()])
              for mode in ("direct", "extract")}
    report = {**header("faithfulness", settings), "model": model, "targets": TARGETS,
              "totals": totals, "transcripts": results}
    write(args.out, report)
    print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
