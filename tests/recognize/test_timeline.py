"""Speech-only time and the way back to the recording."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from device.audio import SAMPLE_RATE
from device.recognize import Timeline, Window
from device.vad import SpeechChunk


def _chunks(spans):
    return [SpeechChunk(int(a * SAMPLE_RATE), int(b * SAMPLE_RATE)) for a, b in spans]


def test_windows_are_cut_at_chunk_edges_and_hold_at_most_30_seconds():
    timeline = Timeline(_chunks([(0, 12), (20, 32), (40, 50), (60, 70)]))
    assert timeline.seconds == 44.0
    assert timeline.windows() == [Window(0.0, 24.0), Window(24.0, 44.0)]
    # Shorter windows, each filled in turn: those of the first chunks are the windows of
    # every longer list that starts with them, but the last
    assert timeline.windows(longest=15) == [Window(0.0, 12.0), Window(12.0, 24.0),
                                            Window(24.0, 34.0), Window(34.0, 44.0)]
    assert timeline.windows(longest=22) == [Window(0.0, 12.0), Window(12.0, 34.0),
                                            Window(34.0, 44.0)]
    assert Timeline(timeline.chunks[:3]).windows(longest=22)[:-1] == \
        timeline.windows(longest=22)[:1]


def test_only_neighbouring_chunks_share_a_window_when_asked():
    speech = _chunks([(0, 2), (3, 5), (6, 8), (9, 11)])
    lost = [speech[0], speech[1], speech[3]]
    assert Timeline(lost).windows(adjacent_in=speech) == [Window(0.0, 4.0), Window(4.0, 6.0)]


def test_a_time_maps_back_into_its_own_chunk():
    timeline = Timeline(_chunks([(10, 12), (20, 23)]))
    assert timeline.to_recording(0.5) == 10.5
    assert timeline.to_recording(2.0) == 20.0  # a start at an edge opens the next chunk
    assert timeline.to_recording(2.0, is_end=True) == 12.0  # an end closes its chunk
    assert timeline.to_recording(9.0) == 23.0  # past the end: clamped


@given(st.lists(st.tuples(st.floats(0.1, 20), st.floats(0.1, 20)), min_size=1, max_size=12))
def test_windows_cover_the_speech_once(gaps_and_lengths):
    spans, t = [], 0.0
    for gap, length in gaps_and_lengths:
        spans.append((t + gap, t + gap + length))
        t += gap + length
    timeline = Timeline(_chunks(spans))
    windows = timeline.windows()
    assert windows[0].start == 0.0 and abs(windows[-1].end - timeline.seconds) < 1e-9
    assert all(a.end == b.start for a, b in zip(windows, windows[1:], strict=False))
    assert all(w.seconds <= 30.0 for w in windows)  # no chunk here is longer
    # the windows of the first chunks are those of all of them, but the last; the chunks of
    # those are the settled ones
    for count in range(1, len(spans)):
        first = Timeline(timeline.chunks[:count])
        assert first.windows(longest=15)[:-1] == timeline.windows(longest=15)[
            : len(first.windows(longest=15)) - 1]
        assert Timeline(first.settled(15)).windows(longest=15) == first.windows(longest=15)[:-1]


@given(st.lists(st.tuples(st.floats(0.01, 3), st.floats(0.01, 40)), min_size=1, max_size=20),
       st.floats(1, 30))
def test_a_windows_audio_is_cut_from_its_own_chunks_alone(gaps_and_lengths, longest):
    """What a pass cuts from all the speech (a copy of it, which for a recording in progress
    grows with the recording), cut from the window's chunks only."""
    import tracemalloc

    import numpy as np

    spans, t = [], 0.0
    for gap, length in gaps_and_lengths:
        spans.append((t + gap, t + gap + length))
        t += gap + length
    recording = np.arange(int(t * SAMPLE_RATE) + 1, dtype=np.float32)
    timeline = Timeline(_chunks(spans))
    speech = timeline.audio(recording)
    for window in timeline.windows(longest):
        cut = speech[int(window.start * SAMPLE_RATE) : int(window.end * SAMPLE_RATE)]
        tracemalloc.start()
        try:
            samples = timeline.samples(recording, window)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert np.array_equal(samples, cut)
        assert peak <= cut.nbytes + 64 * 1024  # the window's, not the speech's


def test_one_profiles_speech_is_decoded_in_blocks_of_whole_windows(tmp_path):
    from device.profiles import load_profiles
    from device.varieties import BLOCK, blocks_of, window_chunks

    speech = _chunks([(i * 10.0, i * 10.0 + 8.0) for i in range(60)])  # 8 minutes
    profile = load_profiles(tmp_path)["mandarin"]
    blocks = blocks_of(speech, profile)
    assert all(block.profiles == [(0.0, profile)] for block in blocks)
    # each block's windows are the whole speech's, BLOCK at a time
    windows = [window_chunks(block.speech) for block in blocks]
    assert [w for each in windows for w in each] == window_chunks(speech)
    assert [len(w) for w in windows] == [BLOCK] * (len(windows) - 1) + [len(windows[-1])]
    assert len(blocks) > 1 and blocks_of([], profile) == []


def _word(start, end):
    from device.records import Word
    return Word(start, end, "w", 0.9)


def test_speech_without_a_word_is_unheard_whole_chunks_and_stretches_inside_them():
    # Chunks of 0-10 s and 20-26 s; in speech-only time the second starts at 10 s.
    timeline = Timeline(_chunks([(0, 10), (20, 26), (30, 31)]))
    words = [_word(0.3, 1.0), _word(1.1, 2.0),  # then 2.0-6.0: a phrase the window skipped
             _word(6.0, 6.5), _word(6.6, 9.5),  # 9.5-10.0: the VAD's padding, too short
             _word(10.2, 10.8), _word(11.3, 15.7)]  # 15.7-16.0: padding again
    assert timeline.unheard(words) == [
        SpeechChunk(2 * SAMPLE_RATE, 6 * SAMPLE_RATE),  # back in recording samples
        SpeechChunk(30 * SAMPLE_RATE, 31 * SAMPLE_RATE),  # no word at all
    ]
    # A skipped end of a chunk, up to the chunk's end.
    assert timeline.unheard(words[:2] + words[4:]) == [
        SpeechChunk(2 * SAMPLE_RATE, 10 * SAMPLE_RATE),
        SpeechChunk(30 * SAMPLE_RATE, 31 * SAMPLE_RATE)]
    assert timeline.unheard([]) == timeline.chunks
