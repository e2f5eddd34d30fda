"""The few glibc calls the appliance needs, in one place (none of them exist on musl)."""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# glibc's malloc.h
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -3, -4, -8
_DEFAULT_MMAP_MAX = 65536
_MMAP_THRESHOLD_MAX = 32 << 20  # where glibc's own threshold stops growing on 64 bits
_PR_SET_PDEATHSIG = 1  # linux/prctl.h

_keeping = 0
_keeping_lock = threading.Lock()


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:  # not glibc (musl): nothing to do
        return None


def share_one_malloc_arena() -> None:
    """Have every thread allocate from glibc's main arena.

    Each decoding worker thread would otherwise get an arena of its own, and pages freed in
    one cannot serve the others: decoding side by side raised the peak by about a fifth
    (docs/benchmarks.md).  Call it before a model starts its worker threads.
    """
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_ARENA_MAX, 1)


def release_freed_memory() -> None:
    """Hand the pages freed by the last batch back to the system.

    A batch of beam searches allocates a few hundred MB and frees it; glibc keeps the freed
    pages resident and later batches do not fit into the holes, so the peak grows window by
    window.  Trimming after each batch keeps the peak near one batch's worth; lowering
    glibc's mmap threshold instead halves the speed.  Nothing while memory is kept
    (``keeping_freed_memory``).
    """
    libc = _glibc()
    if libc is not None and not _keeping:
        libc.malloc_trim(0)


@contextmanager
def keeping_freed_memory() -> Iterator[None]:
    """While the body runs, memory the process frees stays in its heap for the next
    allocation: nothing is mapped or unmapped for a large block, nothing trimmed.

    The live transcript decodes one short utterance after another, each allocating and
    freeing the same few hundred MB; handed back every time, they came back as ~170,000
    page faults per utterance, a quarter of its decoding time in the kernel, and slower
    still while another process filled fresh memory (docs/benchmarks.md).  The heap then
    stays at the largest utterance's size; the body's end hands it back.  Process-wide, as
    glibc's settings are: for a stretch of work that repeats, like a recording's."""
    global _keeping
    libc = _glibc()
    if libc is None:
        yield
        return
    with _keeping_lock:
        _keeping += 1
        libc.mallopt(_M_MMAP_MAX, 0)
        libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    try:
        yield
    finally:
        with _keeping_lock:
            _keeping -= 1
            if not _keeping:
                # Setting either ends glibc's own adjustment of both: set them where
                # that adjustment leads.
                libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
                libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
                libc.mallopt(_M_TRIM_THRESHOLD, 2 * _MMAP_THRESHOLD_MAX)
                libc.malloc_trim(0)


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn`` that has the kernel send ``sig`` to the child when this process (its
    parent) dies, even by kill -9, so no child outlives the process that started it.

    The child sets that up after the fork; a parent killed in between would never signal it,
    so the child then checks that its parent is still the process that forked it, and sends
    itself ``sig`` if not (prctl(2) gives this recipe): otherwise a flash killed at that
    moment would leave its migration running on, unknown to the recovery."""
    parent = os.getpid()

    def preexec() -> None:
        libc = _glibc()
        if libc is not None:
            libc.prctl(_PR_SET_PDEATHSIG, sig)
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return preexec
