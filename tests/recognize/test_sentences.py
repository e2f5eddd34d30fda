"""Cutting a decoded window into sentence-sized segments."""

from __future__ import annotations

from device.recognize import split_sentences
from device.records import Segment, Word


def test_a_segment_is_split_where_the_recording_was_silent():
    words = (Word(1.0, 1.5, " one", 0.9), Word(1.6, 2.0, " two", 0.9),
             Word(9.0, 9.4, " three.", 0.9), Word(9.5, 9.9, " Four", 0.9),
             Word(10.0, 10.4, " five", 0.9))
    parts = split_sentences(Segment(1.0, 10.4, " one two three. Four five", words=words))
    assert [(p.start, p.end, p.text) for p in parts] == [
        (1.0, 2.0, " one two"), (9.0, 10.4, " three. Four five")]
    misaligned = (Word(45.3, 45.5, "甚", 0.5),) + tuple(
        Word(48.1 + i * 0.2, 48.3 + i * 0.2, c, 0.9) for i, c in enumerate("至出现交易"))
    [whole] = split_sentences(Segment(45.3, 49.3, "甚至出现交易", words=misaligned))
    assert whole.text == "甚至出现交易"


def test_speech_that_runs_on_is_cut_at_its_widest_pause():
    words = tuple(Word(i * 0.5, i * 0.5 + 0.4 - (0.3 if i == 25 else 0), f"字{i}", 0.9)
                  for i in range(50))
    parts = split_sentences(Segment(0, 25, "", words=words), longest=15.0)
    assert [len(p.words) for p in parts] == [26, 24]
    assert all(p.end - p.start <= 15.0 for p in parts)
