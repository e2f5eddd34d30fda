"""Transcribing files, summaries, search and the job queue from the console."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict

from device import export
from device.databases import open_store
from device.errors import TingjiError
from device.jobs import Runner, process_alive
from device.pipeline import import_audio, requeue_recording
from device.profiles import SCRIPTS
from device.records import Job, Recording
from device.settings import Settings
from device.store import Store


def profile_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", help="dialect profile (see `profiles`); default auto")
    p.add_argument("--script", choices=SCRIPTS, help="output script, overriding the profile")
    p.add_argument("--term", action="append", default=[], metavar="TERM",
                   help="a hotword for this recording; misheard=right also corrects")


def fast_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fast", action="store_true",
                   help="a quick draft: one greedy pass, no dialect trials, speech a window "
                        "loses stays lost (`retranscribe ID` later gives the accurate one)")


def cmd_transcribe(settings: Settings, args: argparse.Namespace) -> int:
    runner = Runner(settings)
    runner.prepare()  # a missing model fails here, before anything is imported
    language = args.language or (None if settings.language == "auto" else settings.language)
    with open_store(settings) as store:
        recording, job = import_audio(
            store, settings, args.path, title=args.title, language=language,
            profile=args.profile, script=args.script, terms=args.term, speakers=args.speakers,
            fast=args.fast,
        )
        return run_and_print(store, runner, recording, job, args)


def cmd_retranscribe(settings: Settings, args: argparse.Namespace) -> int:
    runner = Runner(settings)
    runner.prepare()
    with open_store(settings) as store:
        recording, job = requeue_recording(store, settings, args.recording_id,
                                           profile=args.profile, script=args.script,
                                           terms=args.term or None, fast=args.fast)
        return run_and_print(store, runner, recording, job, args)


def run_and_print(store: Store, runner: Runner, recording: Recording, job, args) -> int:
    """Run the job here (or follow a running worker that took it), then print the result."""
    job = _run_here(store, runner, job, recording.source_name)
    if job.status != "done":
        print(f"error: {job.error}", file=sys.stderr)
        return 1
    recording = store.get_recording(recording.id)
    segments = store.segments(recording.id)
    if args.json:
        print(export.as_json(recording, segments))
    else:
        for s in segments:
            print(f"[{export.clock(s.start)} → {export.clock(s.end)}] {s.text}")
        print(f"recording {recording.id}: {recording.language}, profile {recording.profile}, "
              f"{recording.duration:.1f} s, {len(segments)} segments", file=sys.stderr)
    return 0


def _run_here(store: Store, runner: Runner, job: Job, label: str) -> Job:
    """Run a queued job in this process with a progress bar, or follow the worker that
    took it first; the job as it ended."""
    claimed = runner.claim(store, job.id)
    with _progress_bar(label) as show:
        if claimed is not None:
            runner.run(store, claimed, show)
        else:
            _follow(store, job.id, show)
    return store.get_job(job.id)


def _follow(store: Store, job_id: int, show) -> None:
    while (job := store.get_job(job_id)).status in ("queued", "running"):
        show(job.progress)
        if job.status == "running" and not process_alive(job.worker_pid, job.worker_started):
            raise TingjiError(f"the worker running job {job_id} died; it resumes on restart")
        time.sleep(0.5)


class _progress_bar:
    """A tqdm bar on a terminal; silent otherwise (logs and pipes stay clean)."""

    def __init__(self, label: str):
        self.label = label
        self.bar = None

    def __enter__(self):
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=100, desc=self.label, unit="%", bar_format=
                            "{desc}: {percentage:3.0f}%|{bar}| {elapsed}")
        return self.update

    def update(self, percent: float) -> None:
        if self.bar is not None:
            self.bar.n = round(percent, 1)
            self.bar.refresh()

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def cmd_diarize(settings: Settings, args: argparse.Namespace) -> int:
    runner = Runner(settings)
    with open_store(settings) as store:
        recording = store.get_recording(args.recording_id)
        params = {"speakers": args.speakers, "overwrite": args.overwrite}
        job = _run_here(store, runner, store.enqueue("diarize", recording.id, params),
                        f"speakers of {recording.title}")
        if job.status != "done":
            print(f"error: {job.error or job.status}", file=sys.stderr)
            return 1
        names = sorted({s.speaker or "(none)" for s in store.segments(recording.id,
                                                                      with_words=False)})
    print(f"{recording.title}: {len(names)} speaker(s): {', '.join(names)}")
    return 0


def cmd_summarize(settings: Settings, args: argparse.Namespace) -> int:
    runner = Runner(settings, engines=None)
    with open_store(settings) as store:
        recording = store.get_recording(args.recording_id)
        params = {k: v for k, v in (("model", args.model), ("notes_model", args.notes_model))
                  if v}
        job = _run_here(store, runner, store.enqueue("summarize", recording.id, params),
                        f"summary of {recording.title}")
        if job.status != "done":
            print(f"error: {job.error or job.status}", file=sys.stderr)
            return 1
        summary = store.latest_summary(recording.id)
        store_segments = store.segments(recording.id, with_words=False)
    if args.json:
        print(json.dumps(asdict(summary), ensure_ascii=False, indent=2))
        return 0
    print(f"# {summary.content['title']}\n")
    print(export.summary_markdown(summary, store_segments))
    print(f"(version {summary.version}, {summary.model_id})", file=sys.stderr)
    return 0


def cmd_cancel(settings: Settings, args: argparse.Namespace) -> int:
    with open_store(settings) as store:
        if not store.cancel_job(args.job_id):
            raise TingjiError(f"job {args.job_id} is not queued or running")
    return 0


def cmd_search(settings: Settings, args: argparse.Namespace) -> int:
    with open_store(settings) as store:
        hits = store.search(args.query, limit=args.limit)
    if args.json:
        print(json.dumps([asdict(h) for h in hits], ensure_ascii=False, indent=2))
    for h in [] if args.json else hits:
        print(f"#{h.recording_id} {h.recording_title} [{export.clock(h.start)}] {h.text}")
    return 0 if hits else 1


def cmd_jobs(settings: Settings, args: argparse.Namespace) -> int:
    with open_store(settings) as store:
        jobs = store.list_jobs(args.status, args.limit)
    for j in jobs:
        error = f"  {j.error}" if j.error else ""
        print(f"{j.id:>5} {j.kind:<11} recording {j.recording_id:<5} {j.status:<8} "
              f"{j.progress:5.1f}%  attempts {j.attempts}{error}")
    return 0
