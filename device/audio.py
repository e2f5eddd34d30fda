"""Decode any common audio file to 16 kHz (mono float32, or its channels), refusing what
cannot be used.

PyAV bundles FFmpeg, so WAV, FLAC, MP3, M4A/AAC, OGG/Opus and WebM all decode with no
system packages.  Every refusal is an AudioError naming the file and the reason.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import struct
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np

from device.errors import AudioDecodeError, AudioTooLargeError, DiskFullError, is_disk_full

SAMPLE_RATE = 16_000
# Decoded audio may fall short of the container's declared length by a few frames of
# codec delay; more than this means the file was cut off.
_TRUNCATION_TOLERANCE = 0.05
_TRUNCATION_SLACK_SECONDS = 0.5
# Extensions kept when the audio is stored under its recording id; anything else is ".audio".
KNOWN_SUFFIXES = {".wav", ".flac", ".mp3", ".m4a", ".aac", ".mp4", ".ogg", ".oga", ".opus",
                  ".webm", ".mka", ".wma", ".amr", ".3gp"}


def from_pcm16(samples: np.ndarray) -> np.ndarray:
    """16-bit samples as float32 in [-1, 1), as a 16-bit file decodes."""
    return samples.astype(np.float32) / 32768.0


@dataclass(frozen=True)
class AudioInfo:
    format_name: str
    codec: str
    sample_rate: int
    channels: int
    declared_seconds: float | None


def check_size(path: Path, max_bytes: int) -> int:
    """The file's size, after refusing a missing, empty or oversized file."""
    if not path.exists():
        raise AudioDecodeError(path, "no such file")
    if not path.is_file():
        raise AudioDecodeError(path, "not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise AudioDecodeError(path, "empty file (0 bytes)")
    if size > max_bytes:
        raise AudioTooLargeError(
            path, f"file is {size / 1e9:.1f} GB, larger than the {max_bytes / 1e9:.1f} GB limit"
        )
    return size


@dataclass(frozen=True)
class SealedAudio:
    """A stored recording sealed with its data key (``device.vault``): every function here
    that takes a path takes this too, and decodes the plaintext without writing it
    anywhere."""

    path: Path
    key: bytes

    def __str__(self) -> str:
        return self.path.name

    def open(self):
        """A reader of the plaintext: a sealed file, or a recording's folder of sealed
        segments (``device.storage``) read as one WAV file."""
        from device.vault import SealedReader

        if self.path.is_dir():
            from device import storage
            from device.sealedlog import SealedLogReader

            return SealedLogReader(storage.segment_files(self.path, storage.SEALED_SUFFIX),
                                   self.key, prefix=storage.wav_header)
        return SealedReader(self.path, self.key)


@contextlib.contextmanager
def _opened(path: Path | SealedAudio) -> Iterator:
    """The container of a file or a sealed recording, for PyAV."""
    if isinstance(path, SealedAudio):
        from device.vault import SealedFileError

        try:
            with path.open() as reader, av.open(reader, metadata_errors="ignore") as container:
                yield container
        except SealedFileError as exc:
            raise AudioDecodeError(path, str(exc).split(": ", 1)[-1]) from exc
        return
    with av.open(str(path), metadata_errors="ignore") as container:
        yield container


def probe(path: Path | SealedAudio) -> AudioInfo:
    """Open the container and describe its first audio stream."""
    try:
        with _opened(path) as container:
            return _describe(path, container)
    except av.FFmpegError as exc:
        raise AudioDecodeError(path, f"not a readable audio file ({_reason(exc)})") from exc


def _describe(path: Path, container) -> AudioInfo:
    if not container.streams.audio:
        raise AudioDecodeError(path, f"no audio stream in this {container.format.name} file")
    stream = container.streams.audio[0]
    if stream.codec_context is None or not stream.codec_context.name:
        raise AudioDecodeError(path, "unsupported audio codec")
    declared = None
    if stream.duration is not None and stream.time_base is not None:
        declared = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        declared = container.duration / av.time_base
    return AudioInfo(
        format_name=container.format.name,
        codec=stream.codec_context.name,
        sample_rate=stream.codec_context.sample_rate or 0,
        channels=stream.codec_context.channels or 0,
        declared_seconds=declared,
    )


def decode(path: Path, max_seconds: float = float("inf")) -> np.ndarray:
    """Decode to 16 kHz mono float32 in [-1, 1].

    Raises AudioDecodeError for unreadable, silent-by-corruption or truncated files and
    AudioTooLargeError for audio longer than ``max_seconds``.
    """
    audio = _decode(path if isinstance(path, SealedAudio) else Path(path), max_seconds, "mono",
                    "flt")[0]
    if not np.isfinite(audio).all():
        raise AudioDecodeError(path, "decoded audio contains invalid samples")
    return np.clip(audio, -1.0, 1.0, out=audio)


def decode_channels(path: Path, max_seconds: float = float("inf")) -> np.ndarray:
    """Decode to 16 kHz int16 keeping the channels: shape (1, n) for a mono file, else
    (2, n), left first (FFmpeg folds a surround layout into two).  Integers take half the
    memory of float32; ``device.channels`` makes the tracks to transcribe of them.

    Refuses what ``decode`` refuses.
    """
    path = path if isinstance(path, SealedAudio) else Path(path)
    layout = "mono" if probe(path).channels <= 1 else "stereo"
    return _decode(path, max_seconds, layout, "s16p")


def _decode(path: Path, max_seconds: float, layout: str, sample_format: str) -> np.ndarray:
    """(channels, samples) at 16 kHz in the given FFmpeg layout and sample format."""
    max_samples = int(max_seconds * SAMPLE_RATE) if max_seconds != float("inf") else None
    channels = 1 if layout == "mono" else 2
    pieces: list[np.ndarray] = []
    total = 0
    bad_packets = 0
    try:
        with _opened(path) as container:
            info = _describe(path, container)
            if info.declared_seconds and info.declared_seconds > max_seconds:
                raise _too_long(path, info.declared_seconds, max_seconds)
            resampler = av.AudioResampler(format=sample_format, layout=layout, rate=SAMPLE_RATE)
            for packet in container.demux(container.streams.audio[0]):
                try:
                    frames = packet.decode()
                except av.InvalidDataError:
                    bad_packets += 1
                    continue
                for frame in frames:
                    frame.pts = None
                    for out in resampler.resample(frame):
                        pieces.append(out.to_ndarray().reshape(channels, -1).copy())
                        total += pieces[-1].shape[1]
                if max_samples is not None and total > max_samples:
                    raise _too_long(path, total / SAMPLE_RATE, max_seconds)
            for out in resampler.resample(None):
                pieces.append(out.to_ndarray().reshape(channels, -1).copy())
    except av.FFmpegError as exc:
        raise AudioDecodeError(path, f"not a readable audio file ({_reason(exc)})") from exc
    dtype = np.int16 if sample_format.startswith("s16") else np.float32
    audio = np.concatenate(pieces, axis=1) if pieces else np.zeros((channels, 0), dtype=dtype)
    del pieces
    decoded = audio.shape[1] / SAMPLE_RATE
    if audio.size == 0:
        detail = f" ({bad_packets} corrupt packets)" if bad_packets else ""
        raise AudioDecodeError(path, f"no decodable audio in this {info.format_name} file{detail}")
    declared = info.declared_seconds
    if info.format_name == "wav":
        # FFmpeg derives a WAV's length from the file size; the header knows the truth.
        declared = _wav_header_seconds(path) or declared
    if declared and decoded < declared * (1 - _TRUNCATION_TOLERANCE) - _TRUNCATION_SLACK_SECONDS:
        raise AudioDecodeError(
            path,
            f"truncated or corrupt: the header says {declared:.1f} s "
            f"but only {decoded:.1f} s could be decoded",
        )
    return audio


RAW_FORMATS = {".g722": "g722", ".gsm": "gsm"}
"""Headerless telephone audio FFmpeg must be told the format of (voice prompts)."""


def decode_raw(path: Path) -> np.ndarray:
    """Decode a headerless ``.g722`` or ``.gsm`` file (16 kHz mono float32): the voice
    prompts of Debian's asterisk sound packages, real speech the tests and benchmarks use."""
    path = Path(path)
    try:
        with av.open(str(path), format=RAW_FORMATS[path.suffix]) as container:
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            pieces = [out.to_ndarray().reshape(-1) for frame in container.decode(audio=0)
                      for out in resampler.resample(frame)]
    except (KeyError, av.FFmpegError) as exc:
        raise AudioDecodeError(path, f"not a raw G.722 or GSM file ({exc})") from exc
    if not pieces:
        raise AudioDecodeError(path, "no decodable audio")
    return np.clip(np.concatenate(pieces).astype(np.float32), -1.0, 1.0)


def decode_clip(path: Path) -> np.ndarray:
    """A clip of real speech for tests and benchmarks: a headerless voice prompt
    (``decode_raw``) or any audio file (``decode``)."""
    return decode_raw(path) if Path(path).suffix in RAW_FORMATS else decode(path)


def _wav_header_seconds(path: Path | SealedAudio) -> float | None:
    """Length promised by a RIFF/WAVE header's data chunk, or None if it promises nothing."""
    with path.open() if isinstance(path, SealedAudio) else open(path, "rb") as f:
        header = f.read(1 << 16)
    if header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        return None
    position, byte_rate = 12, 0
    while position + 8 <= len(header):
        chunk_id, size = struct.unpack_from("<4sI", header, position)
        if chunk_id == b"fmt " and position + 16 <= len(header):
            byte_rate = struct.unpack_from("<I", header, position + 16)[0]
        elif chunk_id == b"data":
            # 0 and 0xFFFFFFFF mean "unknown length" (streaming writers).
            if byte_rate and 0 < size < 0xFFFFFFFF:
                return size / byte_rate
            return None
        position += 8 + size + (size & 1)
    return None


def _too_long(path: Path, seconds: float, limit: float) -> AudioTooLargeError:
    return AudioTooLargeError(
        path, f"audio is {seconds / 3600:.1f} h long, over the {limit / 3600:.1f} h limit"
    )


def _reason(exc: av.FFmpegError) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def sniff_container(head: bytes) -> str | None:
    """The file suffix for an audio container recognised by its first bytes (at least 12),
    or None: uploads are typed by content, never by their name."""
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return ".wav"
    if head[:4] == b"fLaC":
        return ".flac"
    if head[:4] == b"OggS":
        return ".ogg"
    if head[4:8] == b"ftyp":
        return ".m4a"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return ".webm"
    if head[:3] == b"ID3":
        return ".mp3"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:
        return ".aac"  # ADTS
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return ".mp3"  # an MPEG audio frame without a tag
    return None


def stored_name(recording_id: int, source: Path) -> str:
    """The audio file's name in the data directory: the id, never a user-supplied path."""
    suffix = source.suffix.lower()
    return f"{recording_id}{suffix if suffix in KNOWN_SUFFIXES else '.audio'}"


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` survive a power cut."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def durable_file(destination: Path, mode: int = 0o666) -> Iterator[BinaryIO]:
    """A file written aside (``.part``), fsync'd and renamed into place once complete; on
    any failure (disk full included) no partial file is left.  ``mode``: its permissions
    from the start (0o600 for a key), less the umask."""
    temporary = destination.with_name(destination.name + ".part")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, destination)
        fsync_dir(destination.parent)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def copy_durably(source: Path, destination: Path) -> None:
    """Copy and fsync; on any failure (disk full included) no partial file is left."""
    try:
        with open(source, "rb") as src, durable_file(destination) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError(
                f"no space left to store {source.name} in {destination.parent}: "
                "free some space and import it again"
            ) from exc
        raise


def write_wav(path: Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write float audio as 16-bit PCM WAV (for fixtures, benchmarks and exports); a 2-D
    array is (channels, samples)."""
    Path(path).write_bytes(wav_bytes(audio, sample_rate))


def wav_bytes(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    buffer = io.BytesIO()
    channels = np.atleast_2d(audio)
    pcm = (np.clip(channels, -1, 1) * 32767).astype("<i2").T  # interleaved frames
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels.shape[0])
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()
