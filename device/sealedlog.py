"""Sealed logs: audio appended as it is recorded (``device.vault`` for the keys and the
chunked files).

A recording in progress cannot wait for 64 KiB to fill a chunk: what the recorder was
handed must reach the kernel at once (kill -9) and the disk within a second (power cut).
So its segments are logs of small records, each block of audio one AES-256-GCM record:
a 4-byte length, then the ciphertext; nonce = the file's random prefix and the record's
number; associated data = the header and that number.  A record cut short by a crash is
cut off (``repair_log``) without the key, so a locked box recovers its recordings.
"""

from __future__ import annotations

import bisect
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from device.vault import TAG, SealedFileError, SealedReader, chunk_nonce

LOG_MAGIC = b"TJLOG1\n\0"
_LOG_HEADER = struct.Struct(">8s8s")  # magic, nonce prefix
LOG_HEADER = _LOG_HEADER.size
_LENGTH = struct.Struct(">I")


class SealedLogWriter:
    """Appends records to a new sealed log on an open file descriptor (one ``os.write``
    per record)."""

    def __init__(self, fd: int, data_key: bytes):
        self._fd = fd
        self._aead = AESGCM(data_key)
        self._prefix = os.urandom(8)
        self._header = _LOG_HEADER.pack(LOG_MAGIC, self._prefix)
        self._index = 0
        os.write(fd, self._header)

    def append(self, data: bytes) -> None:
        sealed = self._aead.encrypt(chunk_nonce(self._prefix, self._index), data,
                                    self._header + _LENGTH.pack(self._index))
        os.write(self._fd, _LENGTH.pack(len(sealed)) + sealed)
        self._index += 1


def log_records(path: Path) -> tuple[list[tuple[int, int]], int]:
    """((offset, length) of every whole record, the end of the last one) of a sealed log;
    reads lengths only (no key needed)."""
    records = []
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if f.read(8) != LOG_MAGIC:
            raise SealedFileError(f"{path.name}: not a sealed log")
        position = LOG_HEADER
        while position + _LENGTH.size <= size:
            f.seek(position)
            (length,) = _LENGTH.unpack(f.read(_LENGTH.size))
            if length < TAG or position + _LENGTH.size + length > size:
                break
            records.append((position + _LENGTH.size, length))
            position += _LENGTH.size + length
    return records, position


def repair_log(path: Path) -> int:
    """Cut off a record a crash left half-written (or a header never completed); returns
    the plaintext bytes the log holds.  Idempotent; needs no key."""
    if path.stat().st_size < LOG_HEADER:
        path.unlink()
        return 0
    records, end = log_records(path)
    if end != path.stat().st_size:
        with open(path, "r+b") as f:
            f.truncate(end)
            os.fsync(f.fileno())
    return sum(length - TAG for _, length in records)


class SealedLogReader:
    """The plaintext of sealed logs one after the other, after ``prefix`` (a WAV header),
    with random access: the same interface as ``SealedReader``."""

    def __init__(self, paths: list[Path], data_key: bytes,
                 prefix: Callable[[int], bytes] | None = None):
        """``prefix(size)``: the bytes before the logs' plaintext, given its size (a WAV
        header); the logs are scanned once."""
        self.path = Path(paths[0]).parent if paths else Path(".")
        self._aead = AESGCM(data_key)
        records = []
        for path in paths:
            with open(path, "rb") as f:
                header = f.read(LOG_HEADER)
            for number, (offset, length) in enumerate(log_records(path)[0]):
                records.append((path, header, number, offset, length))
        plain = sum(length - TAG for *_, length in records)
        self._prefix = prefix(plain) if prefix else b""
        self._index: list[tuple[int, Path, bytes, int, int, int]] = []
        start = len(self._prefix)
        for record in records:
            self._index.append((start, *record))
            start += record[-1] - TAG
        self.size = start
        self._starts = [entry[0] for entry in self._index]
        self._position = 0
        self._last: tuple[int, bytes] | None = None
        self._files: dict[Path, BinaryIO] = {}

    def _record(self, i: int) -> bytes:
        if self._last is not None and self._last[0] == i:
            return self._last[1]
        _, path, header, number, offset, length = self._index[i]
        if path not in self._files:  # segments stay open while the reader is
            self._files[path] = open(path, "rb")
        f = self._files[path]
        f.seek(offset)
        body = f.read(length)
        try:
            plain = self._aead.decrypt(header[8:] + _LENGTH.pack(number), body,
                                       header + _LENGTH.pack(number))
        except InvalidTag:
            raise SealedFileError(f"{path.name}: record {number + 1} is damaged; the rest of "
                                  "the recording is not affected") from None
        self._last = (i, plain)
        return plain

    def read_range(self, start: int, end: int) -> bytes:
        start, end = max(0, start), min(end, self.size)
        if start >= end:
            return b""
        out = bytearray()
        if start < len(self._prefix):
            out += self._prefix[start:end]
            start = len(self._prefix)
        i = max(bisect.bisect_right(self._starts, start) - 1, 0)
        while start < end and i < len(self._index):
            first = self._index[i][0]
            plain = self._record(i)
            out += plain[start - first : end - first]
            start = first + len(plain)
            i += 1
        return bytes(out)

    def chunks(self) -> Iterator[bytes]:
        yield self._prefix
        for i in range(len(self._index)):
            yield self._record(i)

    def records(self, first: int = 0) -> Iterator[bytes]:
        """The plaintext of each whole record from number ``first`` on (a log still being
        written: the records written since the last look)."""
        for i in range(first, len(self._index)):
            yield self._record(i)

    def __len__(self) -> int:
        """Whole records."""
        return len(self._index)

    read = SealedReader.read
    seek = SealedReader.seek
    tell = SealedReader.tell
    seekable = SealedReader.seekable
    readable = SealedReader.readable

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    def __enter__(self) -> SealedLogReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
