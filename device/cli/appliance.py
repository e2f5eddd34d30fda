"""The long-running processes: the worker, the web UI, and both together."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading

from device.jobs import Worker
from device.libc import die_with_parent
from device.settings import Settings


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


def _serve(settings: Settings) -> None:
    """The web UI, until stopped.  No Server header: it would tell anyone what to attack."""
    import uvicorn

    from web.app import create_app

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level=settings.log_level.lower(), server_header=False)


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    # uvicorn re-raises SIGTERM/SIGINT after its own shutdown, so the finally below may not
    # run: the kernel also stops the worker when this process dies (PR_SET_PDEATHSIG).
    worker = subprocess.Popen([sys.executable, "-m", "device", "worker"],
                              preexec_fn=die_with_parent)
    try:
        print(f"tingji: web UI on http://{settings.host}:{settings.port}", file=sys.stderr)
        _serve(settings)
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
    return 0


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    _serve(settings)
    return 0
