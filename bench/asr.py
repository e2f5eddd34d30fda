"""ASR benchmark: tingji's pipeline next to plain faster-whisper on the same >= 5 min of speech.

    python bench/asr.py [--seconds 300] [--out bench/results/asr.json]

Each variant runs in its own process so its peak RSS is its own:
  plain-sequential  WhisperModel.transcribe(vad_filter=True)
  plain-batched     BatchedInferencePipeline.transcribe(batch_size=settings.batch_size)
  tingji            import_audio + the job runner: decode + VAD + ASR + SQLite store
All use the same model files, int8, one thread per core and word timestamps.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from device import audio  # noqa: E402
from device.settings import Settings, hardware_profile  # noqa: E402

SPEECH_DIR = ROOT.parent / "shared" / "speech"
VARIANTS = ("plain-sequential", "plain-batched", "tingji")
TARGETS = {"rtf_max": 0.04, "peak_rss_mb_max": 600, "ratio_to_fastest_plain_max": 1.1}


def build_audio(seconds: float, path: Path) -> tuple[float, list[str]]:
    """Real clips from shared/speech joined with 0.4-2 s pauses until ``seconds``."""
    manifest = SPEECH_DIR / "manifest.tsv"
    if manifest.is_file():
        with open(manifest, encoding="utf-8") as f:
            sources = [SPEECH_DIR / row["file"] for row in csv.DictReader(f, delimiter="\t")]
    else:
        generated = path.with_suffix(".espeak.wav")
        subprocess.run(["espeak-ng", "-w", str(generated),
                        "The committee will meet again next Tuesday to review the budget."],
                       check=True)
        sources = [generated]
    clips = [audio.decode(p) for p in sources]
    rng = np.random.default_rng(7)
    pieces, total, i = [], 0, 0
    while total < seconds * audio.SAMPLE_RATE:
        pause = np.zeros(int(rng.uniform(0.4, 2.0) * audio.SAMPLE_RATE), dtype=np.float32)
        pieces += [clips[i % len(clips)], pause]
        total += clips[i % len(clips)].size + pause.size
        i += 1
    audio.write_wav(path, np.concatenate(pieces))
    return total / audio.SAMPLE_RATE, [p.name for p in sources]


def run_variant(name: str, wav: Path) -> dict:
    """Runs inside the child process."""
    settings = Settings.load()
    profile = hardware_profile(settings)
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from models.store import get_spec, verify

    model_dir = str(verify(get_spec(settings.asr_model), settings.models_dir))
    start = time.perf_counter()
    if name == "tingji":
        from device.jobs import Runner
        from device.pipeline import import_audio
        from device.store import Store

        with tempfile.TemporaryDirectory() as data:
            local = settings.replace(data_dir=Path(data))
            runner = Runner(local)
            runner.prepare()  # load the models before the clock starts
            loaded = time.perf_counter()
            with Store(local.database_path) as store:
                recording, job = import_audio(store, local, wav)
                runner.run(store, runner.claim(store, job.id))
                segments = store.segments(recording.id)
                assert store.get_job(job.id).status == "done"
            texts = [s.text for s in segments]
            done = time.perf_counter()
    else:
        model = WhisperModel(model_dir, device="cpu", compute_type=profile.compute_type,
                             cpu_threads=profile.cpu_threads, local_files_only=True)
        loaded = time.perf_counter()
        if name == "plain-batched":
            segments, _ = BatchedInferencePipeline(model).transcribe(
                str(wav), batch_size=settings.batch_size, word_timestamps=True)
        else:
            segments, _ = model.transcribe(str(wav), vad_filter=True, word_timestamps=True)
        texts = [s.text for s in segments]
        done = time.perf_counter()
    return {
        "load_s": round(loaded - start, 2),
        "wall_s": round(done - loaded, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "segments": len(texts),
        "characters": sum(len(t) for t in texts),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "asr.json")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--wav", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.wav)))
        return 0

    work = ROOT / "bench" / "work"
    work.mkdir(parents=True, exist_ok=True)
    wav = work / f"speech-{int(args.seconds)}s.wav"
    duration, sources = build_audio(args.seconds, wav)
    print(f"benchmark audio: {duration:.0f} s from {len(sources)} clip(s)", file=sys.stderr)
    results = {}
    for name in VARIANTS:
        child = subprocess.run(
            [sys.executable, __file__, "--variant", name, "--wav", str(wav)],
            capture_output=True, text=True, cwd=ROOT,
            env={**os.environ, "TINGJI_LOG_LEVEL": "ERROR"},
        )
        if child.returncode != 0:
            print(child.stderr, file=sys.stderr)
            return 1
        result = json.loads(child.stdout.strip().splitlines()[-1])
        result["rtf"] = round(result["wall_s"] / duration, 4)
        results[name] = result
        print(f"{name:>17}: {result['wall_s']:7.1f} s  RTF {result['rtf']:.3f}  "
              f"peak RSS {result['peak_rss_mb']:.0f} MB", file=sys.stderr)
    fastest_plain = min(results["plain-sequential"]["wall_s"], results["plain-batched"]["wall_s"])
    ours = results["tingji"]
    ratio = round(ours["wall_s"] / fastest_plain, 3)
    report = {
        "benchmark": "asr",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": hardware_profile(Settings.load()).as_dict() | {
            "python": platform.python_version(), "processor": platform.processor()},
        "audio": {"seconds": round(duration, 1), "clips": sources},
        "results": results,
        "tingji_vs_fastest_plain": ratio,
        "targets": TARGETS,
        "targets_met": {
            "rtf": ours["rtf"] <= TARGETS["rtf_max"],
            "peak_rss": ours["peak_rss_mb"] <= TARGETS["peak_rss_mb_max"],
            "ratio_to_fastest_plain": ratio <= TARGETS["ratio_to_fastest_plain_max"],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"tingji / fastest plain = {ratio}; written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
