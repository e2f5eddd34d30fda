"""Ready at stop: how long after pressing stop the final transcript and the summary are there,
with the final pass running during the recording (``device.ready``) and without.

    python bench/ready.py [--seconds 600] [--out bench/results/ready.json]

A recording assembled from many real clips, each used once (every Mandarin, Cantonese and
Sichuanese clip of ../shared, then English prompts and readers, then French, Spanish,
Italian and Russian prompts, from Debian packages, see bench/longform.py), is played
through the file source in real time into the recorder with its live transcript, as on the
box; the worker's models are loaded before (the appliance's worker is running). Four runs:
``seconds`` without the final pass during the recording (today's box), the same with it (and
the summary's notes), the first again (live transcript only), and twice as long with it;
asked for by name, a fifth records an hour with it. Reported per run: the live
transcript's lag (p50/p95/max) and dropped frames, and in the runs with the final pass the
lag of the utterances it was busy during against those it was idle during (the same run:
the p95 of separate runs moves by a second on a shared machine); each utterance's lag, and
what a run added to the same utterances' lag and to their p95 against the runs without (the
second of them shows how far the same utterances move with no background work at all); the
final pass's backlog over time (seconds recorded but not yet final-passed); the peak memory
of the recorder, the final pass and the worker's models together, and every 5 s the memory
of this process (recorder and models) and of the final pass's (``rss_mb``: seconds
recorded, MB, MB), with the final pass's own peak between samples (its high-water mark);
the time from stop to the final transcript and to the summary, and the chunks noted during
the recording; and the final transcript's CER against the reference and against a pass
over the whole stored file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.longform import (  # noqa: E402
    assemble,
    chinese_clips,
    english_clips,
    french_clips,
    italian_clips,
    russian_clips,
    spanish_clips,
)
from bench.report import header, write  # noqa: E402
from device import audio  # noqa: E402
from device.capture import FileSource  # noqa: E402
from device.databases import open_store  # noqa: E402
from device.jobs import Runner, load_engines  # noqa: E402
from device.pipeline import recognize, select_profile  # noqa: E402
from device.recorder import Recorder  # noqa: E402
from device.settings import Settings  # noqa: E402
from device.text import character_error_rate  # noqa: E402

SR = audio.SAMPLE_RATE
TARGETS = {"stop_to_transcript_s_max": 30.0, "stop_to_summary_s_max": 90.0,
           "lag_p95_added_s_max": 0.2, "peak_rss_mb_max": 3072}


def build(path: Path, seconds: float) -> str:
    """The recording: the Chinese clips, then English ones, then French, Spanish, Italian
    and Russian ones, to ``seconds`` (about 68 minutes at most); its reference."""
    pieces, texts, rest = [], [], seconds
    for clips_of in (chinese_clips, english_clips, french_clips, spanish_clips, italian_clips,
                     russian_clips):
        if rest > 0:
            samples, text, _ = assemble(clips_of(), rest, seed=30)
            pieces.append(samples)
            texts.append(text)
            rest -= samples.size / SR
    audio.write_wav(path, np.concatenate(pieces))
    return " ".join(texts)


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """A process's resident memory now (or, ``VmHWM``, at its highest so far)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User and system time of a process, all its threads."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def lag_by_background(heard: list[tuple[float, float]],
                      used: list[tuple[float, float]]) -> dict:
    """The live lag of the utterances whose wait the final pass's process spent busy (half a
    core or more of CPU time over it) against those it spent idle (under a tenth), in the
    same run: the same machine at the same time, which separate runs are not."""
    if len(used) < 2:
        return {}
    times, cpu = np.array([t for t, _ in used]), np.array([c for _, c in used])
    kinds: dict[str, list[float]] = {"busy": [], "idle": []}
    for done, lag in heard:
        if lag <= 0:
            continue
        share = (np.interp(done, times, cpu) - np.interp(done - lag, times, cpu)) / lag
        if share >= 0.5:
            kinds["busy"].append(lag)
        elif share < 0.1:
            kinds["idle"].append(lag)
    return {kind: {"segments": len(lags),
                   "lag_p50_s": round(float(np.percentile(lags, 50)), 3) if lags else None,
                   "lag_p95_s": round(float(np.percentile(lags, 95)), 3) if lags else None}
            for kind, lags in kinds.items()}


def paired(without: list[list[float]], with_: list[list[float]]) -> dict:
    """The same utterances' live lag in two runs of the same recording (matched by where
    they start and end in it): what the second added to each, and to their p95."""
    before = {(round(start, 1), round(end, 1)): lag for start, end, lag in without}
    pairs = [(before[key], lag) for start, end, lag in with_
             if (key := (round(start, 1), round(end, 1))) in before]
    if not pairs:
        return {"utterances": 0}
    first, second = np.array(pairs).T
    added = second - first
    return {"utterances": len(pairs),
            "added_p50_s": round(float(np.percentile(added, 50)), 3),
            "added_p95_s": round(float(np.percentile(added, 95)), 3),
            "p95_added_s": round(float(np.percentile(second, 95) - np.percentile(first, 95)),
                                 3)}


def run(settings: Settings, wav: Path, reference: str, ahead: bool, live_engines,
        worker_engines, after_stop: bool = True) -> dict:
    with tempfile.TemporaryDirectory() as data:
        local = settings.replace(data_dir=Path(data))
        recorder = Recorder(local, live_engines, ahead=ahead)
        heard: list[tuple[float, float]] = []  # (when, lag) of each live segment
        utterances: list[list[float]] = []  # [start, end, lag] of each, in the recording
        recorder.subscribe(lambda event: (
            heard.append((time.monotonic(), event["lag"])),
            utterances.append([event["start"], event["end"], round(event["lag"], 3)]))
            if event.get("type") == "segment" else None)
        recording = recorder.start(FileSource(wav, speed=1.0), title="bench")
        backlog, peak, used, memory, ahead_peak = [], 0.0, [], [], 0.0
        done = threading.Event()

        def sample() -> None:  # the final pass's process's CPU time, four times a second
            while not done.wait(0.25):
                child = recorder._ahead.pid if recorder._ahead else None
                if child:
                    used.append((time.monotonic(), cpu_seconds(child)))

        def watch() -> None:
            nonlocal peak, ahead_peak
            with open_store(local) as store:
                while not done.wait(5.0):
                    seconds = recorder.status()["seconds"]
                    final = store.get_recording(recording.id).final_pass_until or 0.0
                    backlog.append([round(seconds, 1), round(seconds - final, 1)])
                    child = recorder._ahead.pid if recorder._ahead else None
                    box, ahead_mb = rss_mb(os.getpid()), rss_mb(child) if child else 0.0
                    memory.append([round(seconds, 1), round(box, 1), round(ahead_mb, 1)])
                    peak = max(peak, box + ahead_mb)
                    ahead_peak = max(ahead_peak, rss_mb(child, "VmHWM") if child else 0.0)

        watcher = threading.Thread(target=watch, daemon=True)
        sampler = threading.Thread(target=sample, daemon=True)
        watcher.start()
        sampler.start()
        recording = recorder.wait()
        stopped = time.monotonic()
        done.set()
        watcher.join()
        sampler.join()
        with open_store(local) as store:
            stored = audio.decode(local.audio_dir / store.get_recording(recording.id).audio_file)
        lags = sorted(recorder.live_lags)
        measured = {
            "final_pass_during_recording": ahead,
            "seconds": round(stored.size / SR, 1),
            "live": {"segments": len(lags),
                     "lag_p50_s": round(float(np.percentile(lags, 50)), 3) if lags else None,
                     "lag_p95_s": round(float(np.percentile(lags, 95)), 3) if lags else None,
                     "lag_max_s": round(max(lags), 3) if lags else None,
                     "dropped_frames": recorder.frames_received - stored.size},
            "live_by_final_pass": lag_by_background(heard, used) if ahead else None,
            "utterances": utterances,
            "backlog_s": backlog if ahead else None,
            "peak_rss_mb": round(peak, 1),
            "rss_mb": memory,
            "final_pass_peak_rss_mb": round(ahead_peak, 1) if ahead else None,
        }
        if not after_stop:
            return measured
        with open_store(local) as store:
            runner = Runner(local, worker_engines)
            [job] = store.jobs_for(recording.id)
            ok = runner.run(store, runner.claim(store, job.id))
            transcribed = time.monotonic() - stopped
            summary_jobs = [j for j in store.jobs_for(recording.id) if j.kind == "summarize"]
            summarised, summary = None, {}
            noted = len(store.noted_chunks(recording.id))
            if ok and summary_jobs:
                if runner.run(store, runner.claim(store, summary_jobs[0].id)):
                    summarised = time.monotonic() - stopped
                    content = store.summaries(recording.id)[0].content
                    summary = {k: content.get(k)
                               for k in ("chunks", "notes_kept", "retries", "read_ahead")}
                else:
                    summary = {"error": str(store.get_job(summary_jobs[0].id).error)}
            final = "".join(s.text for s in store.segments(recording.id))
        whole = recognize(worker_engines, local, stored,
                          worker_engines.detector.speech_chunks(stored),
                          select_profile(local, "auto"))
        return measured | {
            "stop_to_transcript_s": round(transcribed, 1),
            "stop_to_summary_s": round(summarised, 1) if summarised else None,
            "summary": {"chunks_noted_during_recording": noted, **summary},
            "cer_vs_reference": round(character_error_rate(reference, final), 4),
            "cer_vs_whole_file_pass": round(character_error_rate(
                "".join(s.text for s in whole.segments), final), 4),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/ready.json")
    parser.add_argument("--again", action="append", default=[], metavar="RUN",
                        help="do only this run (by name, e.g. 'with, twice as long') and "
                        "keep the others from --out; may be given more than once; 'with, "
                        "an hour' (an hour recorded, over an hour to run) is done only so")
    args = parser.parse_args()
    settings = Settings.load()
    live_engines = load_engines(settings, live=True)
    worker_engines = load_engines(settings)
    runs = json.loads(args.out.read_text())["runs"] if args.again else {}
    with tempfile.TemporaryDirectory() as scratch:
        # The baseline again after the run with the final pass (live transcript only): how
        # far the same utterances' lag moves between runs without any background work.
        for name, seconds, ahead, after_stop in (
                ("without", args.seconds, False, True),
                ("with", args.seconds, True, True),
                ("without, again", args.seconds, False, False),
                ("with, twice as long", 2 * args.seconds, True, True),
                ("with, an hour", 3600.0, True, True)):
            if name not in args.again and (args.again or name == "with, an hour"):
                continue
            wav = Path(scratch) / f"{int(seconds)}.wav"
            reference = build(wav, seconds)
            runs[name] = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z")} | run(
                settings, wav, reference, ahead, live_engines, worker_engines, after_stop)
            print(name, {k: v for k, v in runs[name].items()
                         if k not in ("backlog_s", "utterances", "rss_mb")}, file=sys.stderr,
                  flush=True)
    added = {f"{second} against {first}": paired(runs[first]["utterances"],
                                                 runs[second]["utterances"])
             for first, second in (("without", "with"), ("without, again", "with"),
                                   ("without", "without, again"),
                                   ("without", "with, twice as long"),
                                   ("without", "with, an hour")) if second in runs}
    report = header("ready", settings) | {"targets": TARGETS, "live_lag_added": added,
                                          "runs": runs}
    write(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
