"""Work killed (SIGKILL, by itself) at each of its file operations in turn: the n-th file
opened, renamed or removed, or database opened, for n = 1, 2, … until a run finishes."""

from __future__ import annotations

import select
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

_SERVER = """\
import os, signal, sys, traceback
{setup}
def hook(event, args):
    global left
    if event in ('open', 'os.rename', 'os.remove', 'sqlite3.connect'):
        left -= 1
        if left == 0: os.kill(os.getpid(), signal.SIGKILL)
work = compile({work!r}, '<work>', 'exec')
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        os.dup2(2, 1)  # the work's prints stay out of the answers
        status = 1
        try:
            left = int(line)
            sys.addaudithook(hook)
            exec(work, globals())
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(status)
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


def killed_at_each_step(setup: str, work: str, data_dir: Path,
                        after_each: Callable[[int], None], limit: int = 200) -> int:
    """Run ``setup`` (not counted: imports, and what loads modules on first use) once in a
    new Python whose ``sys.argv[1]`` is ``data_dir``, then for each step ``work`` in a
    process forked from it (as a new Python would run it after ``setup``, without the
    half second of starting and importing), killed at its n-th operation; ``work`` may call
    ``hook(event, args)`` to count more.  ``after_each(n)`` after every run.  The step at
    which a run finished."""
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER.format(setup=setup, work=work), str(data_dir)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        for step in range(1, limit):
            server.stdin.write(f"{step}\n")
            server.stdin.flush()
            ready, _, _ = select.select([server.stdout], [], [], 60)
            assert ready, f"step {step} still running after 60 s"
            returncode = int(server.stdout.readline())
            after_each(step)
            if returncode == 0:
                return step
            assert returncode == -9, (step, returncode)
        raise AssertionError(f"still killed after {limit} steps")
    finally:
        server.kill()
        server.wait()
