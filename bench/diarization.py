"""Diarization benchmark: who spoke when, on conversations of real voices.

    python bench/diarization.py [--seeds 4] [--out bench/results/diarization.json]

The dev set is the one ``bench/voices.py`` writes (conversations of 1-4 real people with
RTTM truth), rebuilt into bench/work/speakers-dev; ``python -m device.eval --speakers``
scores it: DER with the count given and counted, with no collar and a 0.25 s collar, and
how often the count was right.  Also measured in the same run:

- the stage's real-time factor, and its share of a whole transcription: the recogniser
  transcribes the first seed's conversations too;
- memory: the process's peak RSS added by loading the speaker model and diarizing everything,
  and the Python heap the stage itself holds (tracemalloc) on the whole dev set joined into
  one recording against half of it: what grows with length is the embeddings only.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import header, write  # noqa: E402
from bench.voices import write_devset  # noqa: E402
from device import audio  # noqa: E402
from device.settings import Settings  # noqa: E402

WORK = ROOT / "bench" / "work" / "speakers-dev"
TARGETS = {"der_known_max": 0.10, "der_auto_max": 0.15, "rtf_max": 0.01,
           "share_of_transcription_max": 0.05, "added_peak_rss_mb_max": 60}


def transcription_seconds(engines, settings, files: list[Path]) -> tuple[float, float]:
    """Seconds the recogniser takes on these recordings, and their length."""
    from device.pipeline import recognize, select_profile

    profile = select_profile(settings, "auto")
    spent = length = 0.0
    for path in files:
        samples = audio.decode(path)
        started = time.perf_counter()
        recognize(engines, settings, samples, engines.detector.speech_chunks(samples), profile)
        spent += time.perf_counter() - started
        length += samples.size / audio.SAMPLE_RATE
    return spent, length


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def heap_growth(encoder, detector, files: list[Path]) -> dict:
    """Peak Python heap of diarizing half the recordings joined, and all of them; and the
    peak RSS the stage adds to the process (Linux: the high-water mark is reset first)."""
    from device.speakers.diarize import diarize, windows

    out = {}
    for part, chosen in (("half", files[: len(files) // 2]), ("all", files)):
        samples = np.concatenate([audio.decode(f) for f in chosen])
        speech = detector.speech_chunks(samples)
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        rss_before = _status_kb("VmRSS")
        tracemalloc.start()
        diarize(encoder, samples, speech, None)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out[part] = {"minutes": round(samples.size / audio.SAMPLE_RATE / 60, 1),
                     "windows": len(windows(speech)), "peak_heap_mb": round(peak / 2**20, 2),
                     "stage_peak_rss_added_mb": round(
                         (_status_kb("VmHWM") - rss_before) / 1024, 1)}
    grown = out["all"]["peak_heap_mb"] - out["half"]["peak_heap_mb"]
    out["bytes_per_extra_window"] = round(
        grown * 2**20 / max(out["all"]["windows"] - out["half"]["windows"], 1))
    return out


def main() -> int:
    from device.eval import evaluate_speakers, summarise_speakers
    from device.jobs import load_engines

    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "bench" / "results" / "diarization.json")
    args = parser.parse_args()
    settings = Settings.load()
    shutil.rmtree(WORK, ignore_errors=True)
    names = write_devset(WORK, args.seeds)
    engines = load_engines(settings)
    engines.detector.speech_chunks(np.zeros(audio.SAMPLE_RATE, np.float32))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rows = evaluate_speakers(WORK, settings, engines)
    added_rss = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    summary = summarise_speakers(rows)
    first = [WORK / f"{n}.wav" for n in names if n.startswith("s1-")]
    spent, length = transcription_seconds(engines, settings, first)
    stage = sum(r["known_seconds"] for r in rows if r["file"].startswith("s1-"))
    summary.update({
        "transcription_rtf": round(spent / length, 4),
        "share_of_transcription": round(stage / (stage + spent), 4),
        "added_peak_rss_mb": round(added_rss, 1),
        "memory": heap_growth(engines.speaker_encoder(), engines.detector,
                              sorted(WORK.glob("*.wav"))),
    })
    write(args.out, {**header("diarization", settings), "targets": TARGETS,
                     "summary": summary, "conversations": rows})
    print(summary, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
