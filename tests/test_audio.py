"""Decoding: every common format, and a clear AudioError for every kind of bad file."""

from __future__ import annotations

import struct
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device import audio
from device.errors import AudioDecodeError, AudioError, AudioTooLargeError


def _tone_speechlike(seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(seconds * audio.SAMPLE_RATE)) / audio.SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(
        np.float32
    )


def _encode(path: Path, samples: np.ndarray, container: str, codec: str, rate: int) -> Path:
    """Encode with PyAV (FFmpeg) into another format, as a phone or recorder would."""
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        frame_size = 1024
        resampler = av.AudioResampler(format=stream.codec_context.format.name or "fltp",
                                      layout="mono", rate=rate)
        for i in range(0, samples.size, frame_size):
            frame = av.AudioFrame.from_ndarray(samples[None, i : i + frame_size], format="flt",
                                               layout="mono")
            frame.sample_rate = audio.SAMPLE_RATE
            for f in resampler.resample(frame):
                for packet in stream.encode(f):
                    out.mux(packet)
        for f in resampler.resample(None):
            for packet in stream.encode(f):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


@pytest.mark.parametrize(
    "name, container, codec, rate",
    [
        ("clip.flac", "flac", "flac", 16000),
        ("clip.mp3", "mp3", "libmp3lame", 44100),
        ("clip.m4a", "ipod", "aac", 48000),
        ("clip.webm", "webm", "libopus", 48000),
        ("clip.opus", "ogg", "libopus", 48000),
    ],
)
def test_common_formats_decode_to_16k_mono(tmp_path, name, container, codec, rate):
    samples = _tone_speechlike(2.0)
    path = _encode(tmp_path / name, samples, container, codec, rate)
    decoded = audio.decode(path)
    assert decoded.dtype == np.float32
    assert abs(decoded.size / audio.SAMPLE_RATE - 2.0) < 0.15
    assert 0.1 < np.abs(decoded).max() <= 1.0


def test_wav_round_trip_is_sample_exact(tmp_path):
    samples = np.round(_tone_speechlike(1.0) * 32767) / 32767
    path = tmp_path / "x.wav"
    audio.write_wav(path, samples)
    decoded = audio.decode(path)
    assert np.array_equal(np.round(decoded * 32768), np.round(samples * 32767))


def _broken_corpus(tmp_path: Path, good: Path) -> dict[str, tuple[Path, str]]:
    data = good.read_bytes()
    corpus = {
        "empty": (b"", "empty file"),
        "truncated wav": (data[: len(data) // 2], "truncated"),
        "text renamed .wav": (b"This is a text file, not audio.\n" * 200, "not a readable audio"),
        "random bytes": (bytes(np.random.default_rng(1).integers(0, 256, 50_000, np.uint8)),
                         "not a readable audio"),
        "header only": (data[:44], "no decodable audio|not a readable"),
    }
    # A WAV whose format tag names a codec nobody implements (0x7A7A).
    fmt = struct.pack("<HHIIHH", 0x7A7A, 1, 16000, 32000, 2, 16)
    body = b"\x01\x02" * 16000
    unsupported = (b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(body)) + b"WAVE"
                   + b"fmt " + struct.pack("<I", len(fmt)) + fmt
                   + b"data" + struct.pack("<I", len(body)) + body)
    corpus["unsupported codec"] = (unsupported, "codec|not a readable|no decodable")
    paths = {}
    for label, (content, reason) in corpus.items():
        path = tmp_path / (label.replace(" ", "_").replace(".", "") + ".wav")
        path.write_bytes(content)
        paths[label] = (path, reason)
    return paths


def test_broken_files_give_a_clear_error_naming_the_file(tmp_path, speech_wav):
    good = tmp_path / "good.wav"
    audio.write_wav(good, audio.decode(speech_wav))
    for label, (path, reason) in _broken_corpus(tmp_path, good).items():
        with pytest.raises(AudioError, match=reason) as caught:
            audio.check_size(path, 10**9)
            audio.decode(path)
        message = str(caught.value)
        assert message.startswith(str(path)), label
        assert "\n" not in message, label


def test_truncated_flac_is_refused(tmp_path, speech_wav):
    flac = _encode(tmp_path / "a.flac", audio.decode(speech_wav), "flac", "flac", 16000)
    cut = tmp_path / "cut.flac"
    cut.write_bytes(flac.read_bytes()[: flac.stat().st_size // 2])
    with pytest.raises(AudioDecodeError, match="truncated"):
        audio.decode(cut)


def test_a_multi_gigabyte_file_is_refused_before_reading(tmp_path):
    huge = tmp_path / "huge.wav"
    with open(huge, "wb") as f:  # sparse: 3 GB on paper, nothing on disk
        f.truncate(3 * 1024**3)
    with pytest.raises(AudioTooLargeError, match="3.2 GB, larger than the 2.1 GB limit"):
        audio.check_size(huge, 2 * 1024**3)


def test_audio_longer_than_the_limit_is_refused(tmp_path):
    path = tmp_path / "long.wav"
    audio.write_wav(path, np.zeros(audio.SAMPLE_RATE * 10, dtype=np.float32))
    with pytest.raises(AudioTooLargeError, match="over the"):
        audio.decode(path, max_seconds=5)


def test_stored_names_never_come_from_user_paths():
    assert audio.stored_name(7, Path("../../etc/passwd")) == "7.audio"
    assert audio.stored_name(8, Path("x/Interview.MP3")) == "8.mp3"


_VALID = audio.wav_bytes(_tone_speechlike(0.5))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    edits=st.lists(
        st.tuples(st.integers(0, len(_VALID) - 1), st.integers(0, 255)), min_size=1, max_size=20
    ),
    cut=st.one_of(st.none(), st.integers(0, len(_VALID))),
)
def test_mutated_wav_decodes_or_fails_cleanly(tmp_path, edits, cut):
    data = bytearray(_VALID)
    for position, value in edits:
        data[position] = value
    if cut is not None:
        data = data[:cut]
    path = tmp_path / "mutated.wav"
    path.write_bytes(bytes(data))
    try:
        audio.check_size(path, 10**9)
        decoded = audio.decode(path, max_seconds=60)
    except AudioError as exc:
        assert str(exc).startswith(str(path)) and "\n" not in str(exc)
    else:
        assert decoded.dtype == np.float32 and decoded.size > 0
        assert np.isfinite(decoded).all() and np.abs(decoded).max() <= 1.0
