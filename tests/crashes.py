"""Work killed (SIGKILL, by itself) at each of its file operations in turn: the n-th file
opened, renamed or removed, or database opened, for n = 1, 2, … until a run finishes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

_HOOK = (
    "left = int(sys.argv[2])\n"
    "def hook(event, args):\n"
    "    global left\n"
    "    if event in ('open', 'os.rename', 'os.remove', 'sqlite3.connect'):\n"
    "        left -= 1\n"
    "        if left == 0: os.kill(os.getpid(), signal.SIGKILL)\n"
    "sys.addaudithook(hook)\n")


def killed_at_each_step(setup: str, work: str, data_dir: Path,
                        after_each: Callable[[int], None], limit: int = 200) -> int:
    """Run ``setup`` (not counted: imports, and what loads modules on first use) then
    ``work`` (which may call ``hook(event, args)`` to count more) in a new Python whose
    ``sys.argv[1]`` is ``data_dir``, killed at its n-th operation; ``after_each(n)`` after
    every run.  The step at which a run finished."""
    code = "import os, signal, sys\n" + setup + _HOOK + work
    for step in range(1, limit):
        done = subprocess.run([sys.executable, "-c", code, str(data_dir), str(step)],
                              timeout=60)
        after_each(step)
        if done.returncode == 0:
            return step
        assert done.returncode == -9, done
    raise AssertionError(f"still killed after {limit} steps")
