"""Live-transcript benchmark: >= 3 min of real speech (different clips, each once, as in
bench/asr.py) recorded through the file source at real-time speed.

    python bench/live.py [--seconds 180] [--out bench/results/live.json]

Measured in one run, on the same audio:
  recorder            capture + crash-safe storage only (no live transcript): CPU share
  recorder + live     the same with the live transcript: lag from the speaker stopping to the
                      segment being shown (p50/p95), dropped frames, CPU share, and the live
                      transcript's CER against the reference
  plain faster-whisper  WhisperModel.transcribe on each utterance the live pass closed, one
                      after another: the time Whisper alone needs per utterance (p50/p95)
Dropped frames = samples the source delivered that did not reach the recording file.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from asr import scenario_audio  # noqa: E402

from bench.report import header, write  # noqa: E402
from device import audio  # noqa: E402
from device.capture import FileSource  # noqa: E402
from device.jobs import load_engines  # noqa: E402
from device.recorder import Recorder  # noqa: E402
from device.settings import Settings, hardware_profile  # noqa: E402
from device.text import character_error_rate  # noqa: E402

TARGETS = {"lag_p95_max_s": 1.5, "dropped_frames": 0}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def record(settings: Settings, wav: Path, engines, reference: str = "") -> dict:
    with tempfile.TemporaryDirectory() as data:
        local = settings.replace(data_dir=Path(data))
        recorder = Recorder(local, engines)
        shown: list[str] = []  # the live transcript's text, as the page is sent it
        recorder.subscribe(lambda event: event["type"] == "segment"
                           and shown.append(event["text"]))
        source = FileSource(wav, speed=1.0)
        cpu, wall = cpu_seconds(), time.monotonic()
        recorder.start(source, title="bench", profile="auto")
        recording = recorder.wait()
        wall, cpu = time.monotonic() - wall, cpu_seconds() - cpu
        stored = audio.decode(local.audio_dir / recording.audio_file).size
    lags = sorted(recorder.live_lags)
    result = {
        "wall_s": round(wall, 1),
        "cpu_share_of_one_core": round(cpu / wall, 3),
        "samples_from_source": recorder.frames_received,
        "samples_recorded": stored,
        "dropped_frames": recorder.frames_received - stored,
    }
    if engines is not None:
        result |= {
            "segments": len(lags),
            "lag_p50_s": round(float(np.percentile(lags, 50)), 3) if lags else None,
            "lag_p95_s": round(float(np.percentile(lags, 95)), 3) if lags else None,
            "lag_max_s": round(max(lags), 3) if lags else None,
        }
        result["cer_vs_reference"] = round(character_error_rate(reference, "".join(shown)),
                                           3)
    return result


def plain_per_utterance(settings: Settings, wav: Path, engines) -> dict:
    from faster_whisper import WhisperModel

    from models.store import get_spec, verify

    profile = hardware_profile(settings)
    model = WhisperModel(str(verify(get_spec(settings.asr_model), settings.models_dir)),
                         device="cpu", compute_type="int8", cpu_threads=profile.cpu_threads,
                         local_files_only=True)
    samples = audio.decode(wav)
    times = []
    for chunk in engines.detector.speech_chunks(samples):
        started = time.perf_counter()
        segments, _ = model.transcribe(samples[chunk.start : chunk.end], vad_filter=False,
                                       word_timestamps=True)
        list(segments)
        times.append(time.perf_counter() - started)
    return {"utterances": len(times),
            "transcribe_p50_s": round(float(np.percentile(times, 50)), 3),
            "transcribe_p95_s": round(float(np.percentile(times, 95)), 3)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "live.json")
    args = parser.parse_args()
    settings = Settings.load()
    work = ROOT / "bench" / "work"
    work.mkdir(parents=True, exist_ok=True)
    wav = work / f"live-{int(args.seconds)}s.wav"
    # real clips each used once: the Chinese ones of ../shared, then English ones
    duration, clips, reference = scenario_audio(("chinese", "english"), args.seconds, wav)
    engines = load_engines(settings, live=True)  # as the web app's recorder loads them
    print(f"live: {duration:.0f} s of speech, real time", file=sys.stderr)
    baseline = record(settings, wav, None)
    print(f"  recorder only: CPU {baseline['cpu_share_of_one_core']:.1%} of a core, "
          f"dropped {baseline['dropped_frames']}", file=sys.stderr)
    live = record(settings, wav, engines, reference)
    print(f"  recorder + live: lag p50 {live['lag_p50_s']} s, p95 {live['lag_p95_s']} s, "
          f"CER {live['cer_vs_reference']}, "
          f"CPU {live['cpu_share_of_one_core']:.1%} of a core, dropped {live['dropped_frames']}",
          file=sys.stderr)
    plain = plain_per_utterance(settings, wav, engines)
    print(f"  plain faster-whisper per utterance: p50 {plain['transcribe_p50_s']} s, "
          f"p95 {plain['transcribe_p95_s']} s", file=sys.stderr)
    report = {
        **header("live", settings),
        "audio": {"seconds": round(duration, 1), "clips": clips},
        "recorder_only": baseline,
        "recorder_with_live_transcript": live,
        "plain_faster_whisper_per_utterance": plain,
        "targets": TARGETS,
        "targets_met": {
            "lag_p95": live["lag_p95_s"] is not None
            and live["lag_p95_s"] <= TARGETS["lag_p95_max_s"],
            "dropped_frames": live["dropped_frames"] == 0,
        },
    }
    write(args.out, report)
    print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
