"""Word timings after a reviewer's edit."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from device.records import Word
from device.timing import retime_words


def _words(texts, step=0.5):
    return tuple(Word(i * step, i * step + 0.4, t, 0.9) for i, t in enumerate(texts))


def test_chinese_characters_keep_their_times_and_new_ones_fill_the_gap():
    old = _words(list("开放时间早上九点"))
    new = retime_words(old, "开放时间上午9点", 0.0, 4.0)
    assert "".join(w.text for w in new) == "开放时间上午9点"
    assert [(w.start, w.end) for w in new[:4]] == [(w.start, w.end) for w in old[:4]]
    assert (new[-1].start, new[-1].end) == (old[-1].start, old[-1].end)  # 点
    assert old[3].end <= new[4].start < new[6].end <= old[7].start


def test_text_with_no_old_words_is_spread_over_the_segment():
    new = retime_words((), "Entirely new words here", 10.0, 14.0)
    assert new[0].start == 10.0 and new[-1].end == 14.0
    assert all(a.end == b.start for a, b in zip(new, new[1:], strict=False))


@given(st.lists(st.sampled_from([" we", " meet", " on", "周", "二", " Friday."]),
                max_size=12),
       st.text(alphabet=" abcd我们周二.", max_size=40))
def test_retimed_words_spell_the_text_and_stay_in_order_inside_the_segment(old, text):
    words = retime_words(_words(old), text, 0.0, max(len(old) * 0.5, 1.0))
    assert "".join(w.text for w in words) == text.rstrip()
    assert all(w.start <= w.end for w in words)
    assert all(a.end <= b.start + 1e-9 for a, b in zip(words, words[1:], strict=False))
