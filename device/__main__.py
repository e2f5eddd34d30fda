"""python -m device: a thin command line over the pipeline.

    transcribe PATH [--language auto|zh|en|…] [--title T] [--json]
    search QUERY [--limit N] [--json]
    jobs [--status S]
    worker              run queued jobs until stopped
    run                 the appliance: web UI + worker
    info                hardware profile, settings and models
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

from device.errors import TingjiError
from device.jobs import Runner, Worker, process_alive
from device.pipeline import import_audio
from device.records import Recording, Segment
from device.settings import Settings, SettingsError, hardware_profile
from device.store import Store
from models.store import ModelError


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.load()
        # Services log at the configured level; one-shot commands only say what went wrong.
        level = settings.log_level if args.command in ("worker", "run") else "ERROR"
        logging.basicConfig(
            level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s"
        )
        return args.func(settings, args)
    except (TingjiError, ModelError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m device", description="tingji appliance")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("transcribe", help="import an audio file and transcribe it")
    p.add_argument("path", type=Path)
    p.add_argument("--language", default=None, help="auto (default), or zh, en, yue, …")
    p.add_argument("--title")
    p.add_argument("--json", action="store_true", help="print the transcript as JSON")
    p.set_defaults(func=cmd_transcribe)

    p = commands.add_parser("search", help="full-text search over all transcripts")
    p.add_argument("query")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_search)

    p = commands.add_parser("jobs", help="list jobs")
    p.add_argument("--status", choices=["queued", "running", "done", "failed"])
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_jobs)

    p = commands.add_parser("worker", help="run queued jobs until stopped")
    p.set_defaults(func=cmd_worker)

    p = commands.add_parser("run", help="start the appliance: web UI and worker")
    p.set_defaults(func=cmd_run)

    p = commands.add_parser("info", help="hardware profile, settings and models as JSON")
    p.set_defaults(func=cmd_info)
    return parser


def cmd_transcribe(settings: Settings, args: argparse.Namespace) -> int:
    runner = Runner(settings)
    runner.prepare()  # a missing model fails here, before anything is imported
    with Store(settings.database_path) as store:
        recording, job = import_audio(
            store, settings, args.path, title=args.title,
            language=args.language or settings.language,
        )
        claimed = runner.claim(store, job.id)
        with _progress_bar(args.path.name) as show:
            if claimed is not None:
                runner.run(store, claimed, show)
            else:  # a running worker took it first: follow its progress
                _follow(store, job.id, show)
        job = store.get_job(job.id)
        if job.status != "done":
            print(f"error: {job.error}", file=sys.stderr)
            return 1
        recording = store.get_recording(recording.id)
        segments = store.segments(recording.id)
    if args.json:
        print(json.dumps(transcript_json(recording, segments), ensure_ascii=False, indent=2))
    else:
        for s in segments:
            print(f"[{_clock(s.start)} → {_clock(s.end)}] {s.text}")
        print(f"recording {recording.id}: {recording.language}, {recording.duration:.1f} s, "
              f"{len(segments)} segments", file=sys.stderr)
    return 0


def transcript_json(recording: Recording, segments: list[Segment]) -> dict:
    return {
        "recording_id": recording.id,
        "title": recording.title,
        "language": recording.language,
        "duration": recording.duration,
        "model": recording.model_id,
        "segments": [
            {**{k: v for k, v in asdict(s).items() if k != "words"},
             "words": [asdict(w) for w in s.words]}
            for s in segments
        ],
    }


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


def _clock(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes):02d}:{secs:05.2f}"


def cmd_search(settings: Settings, args: argparse.Namespace) -> int:
    with Store(settings.database_path) as store:
        hits = store.search(args.query, limit=args.limit)
    if args.json:
        print(json.dumps([asdict(h) for h in hits], ensure_ascii=False, indent=2))
    for h in [] if args.json else hits:
        print(f"#{h.recording_id} {h.recording_title} [{_clock(h.start)}] {h.text}")
    return 0 if hits else 1


def cmd_jobs(settings: Settings, args: argparse.Namespace) -> int:
    with Store(settings.database_path) as store:
        jobs = store.list_jobs(args.status, args.limit)
    for j in jobs:
        error = f"  {j.error}" if j.error else ""
        print(f"{j.id:>5} {j.kind:<11} recording {j.recording_id:<5} {j.status:<8} "
              f"{j.progress:5.1f}%  attempts {j.attempts}{error}")
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    Worker(settings).serve(stop)
    return 0


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from web.app import create_app

    # uvicorn re-raises SIGTERM/SIGINT after its own shutdown, so the finally below may not
    # run: the kernel also stops the worker when this process dies (PR_SET_PDEATHSIG).
    worker = subprocess.Popen([sys.executable, "-m", "device", "worker"],
                              preexec_fn=_stop_with_parent)
    try:
        print(f"tingji: web UI on http://{settings.host}:{settings.port}", file=sys.stderr)
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                    log_level=settings.log_level.lower())
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
    return 0


def _stop_with_parent() -> None:
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def cmd_info(settings: Settings, args: argparse.Namespace) -> int:
    from models.store import load_manifest, status

    info = {
        "settings": {k: str(v) for k, v in asdict(settings).items()},
        "hardware": hardware_profile(settings).as_dict(),
        "models": {m.id: status(m, settings.models_dir) for m in load_manifest().values()},
    }
    print(json.dumps(info, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
