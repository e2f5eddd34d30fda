"""Recording on the box's console, with the live transcript and keyboard controls."""

from __future__ import annotations

import argparse
import sys
import threading
import time

from device import export
from device.cli.appliance import stop_on_signals
from device.cli.transcripts import run_and_print
from device.databases import open_store
from device.errors import TingjiError
from device.jobs import Runner
from device.settings import Settings


def cmd_record(settings: Settings, args: argparse.Namespace) -> int:
    from device.capture import open_source
    from device.recorder import Recorder, recover_interrupted

    for recording_id in recover_interrupted(settings):
        print(f"recording {recording_id} was cut off earlier: recovered and queued",
              file=sys.stderr)
    source = open_source(args.source, args.device, args.speed)
    runner = Runner(settings)
    recorder = Recorder(settings, None if args.no_live else runner.prepare(),
                        fsync_trace=args.fsync_trace, ahead=True)
    events = recorder.subscribe()
    stop = stop_on_signals()
    recording = recorder.start(source, title=args.title, profile=args.profile,
                               speakers=args.speakers)
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
    with open_store(settings) as store:  # the final transcript, in batch
        [job] = [j for j in store.jobs_for(recording.id) if j.status == "queued"][-1:] or [None]
        if job is None:
            return 0
        return run_and_print(store, runner, recording, job, args)


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
