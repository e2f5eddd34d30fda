"""Voice activity detection: silence and noise have no speech; speech is found and bounded."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from device import audio
from device.vad import (
    WINDOW,
    SpeechDetector,
    SpeechStream,
    VadOptions,
    chunks_from_probabilities,
    settled_chunks,
)

SR = audio.SAMPLE_RATE


def test_silence_and_noise_have_no_speech():
    detector = SpeechDetector()
    rng = np.random.default_rng(0)
    assert detector.speech_chunks(np.zeros(10 * SR, dtype=np.float32)) == []
    white = (rng.standard_normal(10 * SR) * 0.1).astype(np.float32)
    assert detector.speech_chunks(white) == []
    hum = (0.2 * np.sin(2 * np.pi * 50 * np.arange(10 * SR) / SR)).astype(np.float32)
    assert detector.speech_chunks(hum) == []


def test_speech_between_silences_is_found(speech_wav):
    speech = audio.decode(speech_wav)
    gap = np.zeros(3 * SR, dtype=np.float32)
    chunks = SpeechDetector().speech_chunks(np.concatenate([gap, speech, gap]))
    assert chunks, "no speech found in a real speech clip"
    assert chunks[0].start_s >= 2.5
    assert chunks[-1].end_s <= 3 + speech.size / SR + 0.5
    assert sum(c.end - c.start for c in chunks) > 0.5 * speech.size


def test_onnx_provider_is_the_one_asked_for():
    assert SpeechDetector(providers=("CPUExecutionProvider",)).providers == ["CPUExecutionProvider"]


@given(st.lists(st.floats(0, 1), min_size=0, max_size=3000))
def test_chunks_are_ordered_disjoint_in_bounds_and_short(probs):
    options = VadOptions()
    length = len(probs) * WINDOW
    chunks = chunks_from_probabilities(np.array(probs, dtype=np.float32), length, options)
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert a.end <= b.start
    for c in chunks:
        assert 0 <= c.start < c.end <= length
        assert c.end - c.start <= options.max_speech_s * SR + WINDOW


def test_a_long_monologue_is_split_into_whisper_sized_chunks():
    probs = np.full(int(95 * SR / WINDOW), 0.9, dtype=np.float32)
    probs[int(20 * SR / WINDOW) : int(20.3 * SR / WINDOW)] = 0.1  # a short breath at 20 s
    chunks = chunks_from_probabilities(probs, probs.size * WINDOW, VadOptions())
    assert len(chunks) >= 4
    assert abs(chunks[0].end_s - 20.3) < 0.5  # split at the breath, not mid-word


def test_a_recording_fed_in_pieces_gets_the_probabilities_of_the_whole(speech_wav):
    speech = audio.decode(speech_wav)
    gap = np.zeros(SR, dtype=np.float32)
    recording = np.concatenate([gap, speech, gap, speech[::-1], gap])
    detector = SpeechDetector()
    whole = detector.probabilities(recording)
    stream = SpeechStream(detector)
    pieces = np.random.default_rng(7).integers(1, 3 * SR, size=recording.size // SR)
    for piece in np.split(recording, np.cumsum(pieces)):
        stream.feed(piece)
    fed = stream.probabilities()
    assert stream.samples == recording.size and fed.size == recording.size // WINDOW
    assert np.array_equal(fed, whole[: fed.size])  # the same bits, not nearly
    assert stream.settled() and stream.settled() == detector.speech_chunks(recording)[
        : len(stream.settled())]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.05, 0.4, 0.6, 0.95]), st.integers(1, 400)),
                max_size=30), st.integers(13, 97))
def test_settled_chunks_are_how_the_whole_recording_begins(runs, step):
    """However the recording goes on, the chunks settled so far are its first chunks."""
    probs = np.concatenate([np.full(n, p, dtype=np.float32) for p, n in runs] or [
        np.zeros(0, dtype=np.float32)])
    options = VadOptions()
    whole = chunks_from_probabilities(probs, probs.size * WINDOW, options)
    for end in range(0, probs.size + 1, step):
        settled = settled_chunks(probs[:end], options)
        assert settled == whole[: len(settled)], end
    assert len(settled_chunks(probs, options)) >= len(whole) - 2
