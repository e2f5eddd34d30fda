"""python -m device: a thin command line over the pipeline.

    transcribe PATH [--profile P | --language L] [--script S] [--term T]… [--title T] [--json]
    retranscribe ID [--profile P] [--script S] [--term T]…   queue it again, e.g. after a fix
    search QUERY [--limit N] [--json]
    jobs [--status S]
    record [--title T] [--source mic|file:PATH] [--device D] [--profile P] [--duration S]
                        record with a live transcript; on a terminal: p pause, r resume,
                        m NOTE marker, q (or Enter, Ctrl-C) stop
    devices             input devices
    profiles            dialect profiles and where they come from
    glossary [add TERM [--misheard M] | remove ID]
    users [add NAME --role R | passwd NAME | remove NAME]
                        accounts (the password is read from standard input, or asked
                        for on a terminal); passwd also ends the user's sessions
    worker              run queued jobs until stopped
    run                 the appliance: web UI + worker
    serve               the web UI alone (the update health check starts a new slot so)
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

from device import export
from device.errors import TingjiError
from device.jobs import Runner, Worker, process_alive
from device.libc import die_with_parent
from device.pipeline import import_audio, requeue_recording
from device.profiles import SCRIPTS, load_profiles
from device.records import ROLES, Recording
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
    _profile_arguments(p)
    p.add_argument("--language", default=None,
                   help="a Whisper language code (zh, en, …): its plain profile")
    p.add_argument("--title")
    p.add_argument("--json", action="store_true", help="print the transcript as JSON")
    p.set_defaults(func=cmd_transcribe)

    p = commands.add_parser("retranscribe", help="transcribe a stored recording again")
    p.add_argument("recording_id", type=int)
    _profile_arguments(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_retranscribe)

    p = commands.add_parser("record", help="record with a live transcript")
    p.add_argument("--title")
    p.add_argument("--source", default="mic", help="mic (default) or file:PATH")
    p.add_argument("--device", help="input device name or index (see `devices`)")
    p.add_argument("--profile", help="dialect profile for the transcript; default auto")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--speed", type=float, default=1.0,
                   help="file source: times real time (0 = as fast as it decodes)")
    p.add_argument("--no-live", action="store_true", help="no live transcript")
    p.add_argument("--no-final", action="store_true",
                   help="leave the final transcription to the worker")
    p.add_argument("--json", action="store_true", help="print the final transcript as JSON")
    p.add_argument("--fsync-trace", type=Path, help=argparse.SUPPRESS)  # power-cut tests
    p.set_defaults(func=cmd_record)

    p = commands.add_parser("devices", help="list audio input devices")
    p.set_defaults(func=cmd_devices)

    p = commands.add_parser("profiles", help="list the dialect profiles")
    p.set_defaults(func=cmd_profiles)

    p = commands.add_parser("glossary", help="the admin's hotwords and corrections")
    actions = p.add_subparsers(dest="action")
    add = actions.add_parser("add", help="add a term (with --misheard: also a correction)")
    add.add_argument("term")
    add.add_argument("--misheard", help="what the recogniser writes instead")
    remove = actions.add_parser("remove", help="remove an entry by id")
    remove.add_argument("id", type=int)
    p.set_defaults(func=cmd_glossary)

    p = commands.add_parser("users", help="web accounts (e.g. reset a lost admin password)")
    actions = p.add_subparsers(dest="action")
    add = actions.add_parser("add", help="create an account")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, default="reviewer")
    actions.add_parser("passwd", help="set a new password").add_argument("name")
    actions.add_parser("remove", help="delete an account").add_argument("name")
    p.set_defaults(func=cmd_users)

    p = commands.add_parser("search", help="full-text search over all transcripts")
    p.add_argument("query")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_search)

    p = commands.add_parser("summarize", help="summarise a transcribed recording")
    p.add_argument("recording_id", type=int)
    p.add_argument("--model", help="summariser model id (default: settings summary_model)")
    p.add_argument("--notes-model", help="model that reads a long transcript into notes "
                   "(default: settings summary_notes_model, else the summariser)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_summarize)

    p = commands.add_parser("cancel", help="cancel a queued or running job")
    p.add_argument("job_id", type=int)
    p.set_defaults(func=cmd_cancel)

    p = commands.add_parser("jobs", help="list jobs")
    p.add_argument("--status", choices=["queued", "running", "done", "failed"])
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_jobs)

    p = commands.add_parser("worker", help="run queued jobs until stopped")
    p.set_defaults(func=cmd_worker)

    p = commands.add_parser("run", help="start the appliance: web UI and worker")
    p.set_defaults(func=cmd_run)

    p = commands.add_parser("serve", help="the web UI alone (no worker)")
    p.set_defaults(func=cmd_serve)

    p = commands.add_parser("info", help="hardware profile, settings and models as JSON")
    p.set_defaults(func=cmd_info)
    return parser


def _profile_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", help="dialect profile (see `profiles`); default auto")
    p.add_argument("--script", choices=SCRIPTS, help="output script, overriding the profile")
    p.add_argument("--term", action="append", default=[], metavar="TERM",
                   help="a hotword for this recording; misheard=right also corrects")


def cmd_transcribe(settings: Settings, args: argparse.Namespace) -> int:
    runner = Runner(settings)
    runner.prepare()  # a missing model fails here, before anything is imported
    language = args.language or (None if settings.language == "auto" else settings.language)
    with Store(settings.database_path) as store:
        recording, job = import_audio(
            store, settings, args.path, title=args.title, language=language,
            profile=args.profile, script=args.script, terms=args.term,
        )
        return _run_and_print(store, runner, recording, job, args)


def cmd_retranscribe(settings: Settings, args: argparse.Namespace) -> int:
    runner = Runner(settings)
    runner.prepare()
    with Store(settings.database_path) as store:
        recording, job = requeue_recording(store, settings, args.recording_id,
                                           profile=args.profile, script=args.script,
                                           terms=args.term or None)
        return _run_and_print(store, runner, recording, job, args)


def _run_and_print(store: Store, runner: Runner, recording: Recording, job, args) -> int:
    """Run the job here (or follow a running worker that took it), then print the result."""
    claimed = runner.claim(store, job.id)
    with _progress_bar(recording.source_name) as show:
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
        print(export.as_json(recording, segments))
    else:
        for s in segments:
            print(f"[{export.clock(s.start)} → {export.clock(s.end)}] {s.text}")
        print(f"recording {recording.id}: {recording.language}, profile {recording.profile}, "
              f"{recording.duration:.1f} s, {len(segments)} segments", file=sys.stderr)
    return 0


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


def cmd_record(settings: Settings, args: argparse.Namespace) -> int:
    from device.capture import open_source
    from device.recorder import Recorder, recover_interrupted

    for recording_id in recover_interrupted(settings):
        print(f"recording {recording_id} was cut off earlier: recovered and queued",
              file=sys.stderr)
    source = open_source(args.source, args.device, args.speed)
    runner = Runner(settings)
    recorder = Recorder(settings, None if args.no_live else runner.prepare(),
                        fsync_trace=args.fsync_trace)
    events = recorder.subscribe()
    stop = stop_on_signals()
    recording = recorder.start(source, title=args.title, profile=args.profile)
    print(f"recording {recording.id} from {source.name}"
          + (" — p pause, r resume, m NOTE marker, q stop" if sys.stdin.isatty() else ""),
          file=sys.stderr)
    if sys.stdin.isatty():
        threading.Thread(target=_keyboard, args=(recorder, stop), daemon=True).start()
    started = time.monotonic()
    while recorder.capturing and not stop.is_set():
        if args.duration and time.monotonic() - started >= args.duration:
            break
        _print_events(events)
        time.sleep(0.1)
    recording = recorder.stop() if recorder.capturing else recorder.wait()
    _print_events(events)
    detail = f" — {recording.error}" if recording.error else ""
    print(f"recording {recording.id}: {recording.duration or 0.0:.1f} s, {recording.status}"
          f"{detail}", file=sys.stderr)
    if recorder.stop_reason:
        return 1
    if args.no_final or recording.status not in ("queued", "recovered"):
        return 0
    with Store(settings.database_path) as store:  # the final transcript, in batch
        [job] = [j for j in store.jobs_for(recording.id) if j.status == "queued"][-1:] or [None]
        if job is None:
            return 0
        return _run_and_print(store, runner, recording, job, args)


def _keyboard(recorder, stop: threading.Event) -> None:
    for line in sys.stdin:
        command, _, note = line.strip().partition(" ")
        try:
            if command == "p":
                recorder.pause()
            elif command == "r":
                recorder.resume()
            elif command == "m":
                marker = recorder.marker(note)
                print(f"marker at {export.clock(marker.t)} {note}", file=sys.stderr)
            elif command in ("q", ""):
                break
        except TingjiError as exc:
            print(f"error: {exc}", file=sys.stderr)
    stop.set()


def _print_events(events) -> None:
    import queue

    while True:
        try:
            event = events.get_nowait()
        except queue.Empty:
            return
        if event["type"] == "segment":
            print(f"[{export.clock(event['start'])}] {event['text']}", flush=True)


def cmd_devices(settings: Settings, args: argparse.Namespace) -> int:
    from device.capture import CaptureError, input_devices

    try:
        devices = input_devices()
    except OSError as exc:
        raise CaptureError(f"no audio input available ({exc}); install libportaudio2") from exc
    for index, name in devices:
        print(f"{index}: {name}")
    return 0 if devices else 1


def cmd_summarize(settings: Settings, args: argparse.Namespace) -> int:
    runner = Runner(settings, engines=None)
    with Store(settings.database_path) as store:
        recording = store.get_recording(args.recording_id)
        params = {k: v for k, v in (("model", args.model), ("notes_model", args.notes_model))
                  if v}
        job = store.enqueue("summarize", recording.id, params)
        claimed = runner.claim(store, job.id)
        with _progress_bar(f"summary of {recording.title}") as show:
            if claimed is not None:
                runner.run(store, claimed, show)
            else:
                _follow(store, job.id, show)
        job = store.get_job(job.id)
        if job.status != "done":
            print(f"error: {job.error or job.status}", file=sys.stderr)
            return 1
        summary = store.latest_summary(recording.id)
    if args.json:
        print(json.dumps(asdict(summary), ensure_ascii=False, indent=2))
        return 0
    print(f"# {summary.content['title']}\n")
    print(export.summary_markdown(summary))
    print(f"(version {summary.version}, {summary.model_id})", file=sys.stderr)
    return 0


def cmd_cancel(settings: Settings, args: argparse.Namespace) -> int:
    with Store(settings.database_path) as store:
        if not store.cancel_job(args.job_id):
            raise TingjiError(f"job {args.job_id} is not queued or running")
    return 0


def cmd_profiles(settings: Settings, args: argparse.Namespace) -> int:
    for p in load_profiles(settings.data_dir).values():
        print(f"{p.name:<12} {p.language:<5} {p.model:<14} {p.script:<11} {p.title}  ({p.source})")
    return 0


def _read_password() -> str:
    from device.accounts import check_new_password

    if sys.stdin.isatty():
        import getpass

        password = getpass.getpass("new password: ")
        if getpass.getpass("again: ") != password:
            raise TingjiError("the passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\n")
    check_new_password(password)  # InvalidInput is a TingjiError: one line, exit 1
    return password


def cmd_users(settings: Settings, args: argparse.Namespace) -> int:
    from device.accounts import hash_password

    with Store(settings.database_path) as store:
        if args.action is None:
            for user in store.list_users():
                print(f"{user.id:>4} {user.username:<20} {user.role}")
            return 0
        user = store.find_user(args.name)
        if args.action == "add":
            if user is not None:
                raise TingjiError(f"the user name {args.name!r} is taken")
            password = _read_password()
            store.create_user(args.name, hash_password(password), args.role)
            return 0
        if user is None:
            raise TingjiError(f"no user named {args.name!r}")
        if args.action == "passwd":
            password = _read_password()
            store.update_user(user.id, password_hash=hash_password(password))
            store.end_sessions(user.id)
        else:
            store.delete_user(user.id)
    return 0


def cmd_glossary(settings: Settings, args: argparse.Namespace) -> int:
    with Store(settings.database_path) as store:
        if args.action == "add":
            print(store.add_glossary(args.term, args.misheard))
        elif args.action == "remove":
            if not store.remove_glossary(args.id):
                raise TingjiError(f"no glossary entry with id {args.id}")
        else:
            for g in store.glossary():
                fix = f"  (corrects {g.misheard})" if g.misheard else ""
                print(f"{g.id:>4} {g.term}{fix}")
    return 0


def cmd_search(settings: Settings, args: argparse.Namespace) -> int:
    with Store(settings.database_path) as store:
        hits = store.search(args.query, limit=args.limit)
    if args.json:
        print(json.dumps([asdict(h) for h in hits], ensure_ascii=False, indent=2))
    for h in [] if args.json else hits:
        print(f"#{h.recording_id} {h.recording_title} [{export.clock(h.start)}] {h.text}")
    return 0 if hits else 1


def cmd_jobs(settings: Settings, args: argparse.Namespace) -> int:
    with Store(settings.database_path) as store:
        jobs = store.list_jobs(args.status, args.limit)
    for j in jobs:
        error = f"  {j.error}" if j.error else ""
        print(f"{j.id:>5} {j.kind:<11} recording {j.recording_id:<5} {j.status:<8} "
              f"{j.progress:5.1f}%  attempts {j.attempts}{error}")
    return 0


def stop_on_signals() -> threading.Event:
    """An event SIGTERM and SIGINT set.

    Python runs a signal handler in the main thread between two bytecodes: inside the
    event's own ``set()`` when a second signal follows the first (`make run` stopping
    terminates its worker, and the kernel signals the worker again as the parent dies).
    Setting the event there again waited for the lock the main thread held, for ever, and
    left the worker running; a thread of its own sets it instead.
    """
    stop = threading.Event()

    def handler(signum, frame) -> None:
        threading.Thread(target=stop.set, daemon=True).start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)
    return stop


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    Worker(settings).serve(stop_on_signals())
    return 0


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from web.app import create_app

    # uvicorn re-raises SIGTERM/SIGINT after its own shutdown, so the finally below may not
    # run: the kernel also stops the worker when this process dies (PR_SET_PDEATHSIG).
    worker = subprocess.Popen([sys.executable, "-m", "device", "worker"],
                              preexec_fn=die_with_parent)
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


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from web.app import create_app

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level=settings.log_level.lower())
    return 0


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
