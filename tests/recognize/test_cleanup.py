"""The guards against invented text, on the shapes Whisper base produced on these machines."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from device.recognize import (
    clean_segment,
    collapse_repeated_text,
    collapse_repeats,
    drop_noise_loops,
)
from device.records import Segment, Word


def _words(texts):
    return tuple(Word(i * 0.2, i * 0.2 + 0.2, t, 0.9) for i, t in enumerate(texts))


def test_repetition_loops_are_collapsed_but_real_repetition_is_kept():
    loop = _words([" thank", " you"] * 10 + [" bye"])
    assert "".join(w.text for w in collapse_repeats(loop)) == " thank you bye"
    speech = _words(["对", "对", "对", "对", "，", "是", "的"])
    assert collapse_repeats(speech) == speech
    assert collapse_repeated_text("我们我们我们我们我们去吃饭") == "我们去吃饭"
    assert collapse_repeated_text("哈哈哈哈") == "哈哈哈哈"


@given(st.lists(st.sampled_from([" a", " b", "对", "，", " the"]), max_size=40))
def test_collapsing_only_ever_removes_words_and_is_stable(texts):
    words = _words(texts)
    once = collapse_repeats(words)
    assert set(once) <= set(words) and collapse_repeats(once) == once


def test_a_loop_over_audio_the_model_calls_non_speech_is_removed_whole():
    # Whisper base on an AVX2-only CPU decoded 10 s of noise as fourteen segments of
    # "1 tbh" (no_speech_prob 0.75, confident tokens): each short one looked like speech.
    def window(texts, no_speech_prob=0.75):
        words = _words(texts)
        return [Segment(w[0].start, w[-1].end, "".join(x.text for x in w),
                        no_speech_prob=no_speech_prob, words=w)
                for w in (words[i : i + 2] for i in range(0, len(words), 2))]

    speech_then_loop = window(["我们", "明天"] + [" 1", " tbh"] * 12)
    assert [s.text for s in drop_noise_loops(speech_then_loop)] == ["我们明天"]
    assert drop_noise_loops(window([" 1", " tbh"] * 12)) == []
    heard_as_speech = window(["我们", "明天"] + [" 1", " tbh"] * 12, no_speech_prob=0.2)
    assert drop_noise_loops(heard_as_speech) == heard_as_speech  # clean_segment decides
    said_twice = window(["我们", "明天", "我们", "明天"])
    assert drop_noise_loops(said_twice) == said_twice
    # Words the model was unsure of before the loop are its lead-in, not speech.
    counted = [replace(s, words=tuple(replace(w, probability=0.3) for w in s.words))
               for s in window([" 1", "-2", "-3"] + ["-4", "-4"] * 12)]
    assert drop_noise_loops(counted) == []


def test_a_segment_that_echoes_the_prompt_is_dropped():
    prompt = "以下是普通话的访谈录音，请用简体中文记录。"
    assert clean_segment(Segment(0, 2, "请用简体中文记录音，请用简体中文记录。"), prompt) is None
    kept = clean_segment(Segment(0, 2, "我们今天讨论访谈的安排"), prompt)
    assert kept is not None


def test_known_hallucinations_and_no_speech_segments_are_dropped():
    assert clean_segment(Segment(0, 2, "请不吝点赞 订阅 转发 打赏支持明镜与点点栏目")) is None
    assert clean_segment(Segment(0, 2, "hello", avg_logprob=-1.5, no_speech_prob=0.9)) is None
    loop = Segment(0, 9, " 1" + ",5" * 50, avg_logprob=-0.1, no_speech_prob=0.77,
                   words=_words([" 1"] + [",5"] * 50))
    assert clean_segment(loop) is None
    kept = clean_segment(Segment(0, 2, " 今天开会 ", avg_logprob=-0.3, no_speech_prob=0.1))
    assert kept is not None and kept.text == "今天开会"


def test_confident_words_placed_at_an_instant_over_non_speech_are_dropped():
    # Whisper base on brown noise (AVX-512): "I'm sorry", p 0.98, at the window's end.
    instant = (Word(29.6, 29.6, " I'm", 0.98), Word(29.6, 29.6, " sorry", 0.98))
    invented = Segment(29.6, 29.6, " I'm sorry", avg_logprob=-0.11, no_speech_prob=0.988,
                       words=instant)
    assert clean_segment(invented) is None
    # the same words with their sound, or where the model hears speech, are kept
    timed = (Word(29.0, 29.3, " I'm", 0.98), Word(29.3, 29.6, " sorry", 0.98))
    assert clean_segment(replace(invented, start=29.0, words=timed)) is not None
    assert clean_segment(replace(invented, no_speech_prob=0.1)) is not None


def test_a_few_characters_of_the_prompt_for_a_whole_sentence_are_not_taken_as_said():
    from device.recognize.cleanup import echoes_prompt

    prompt = "以下是普通话的访谈录音，请用简体中文记录。"
    # what Whisper base wrote for 3-4 s of Mandarin after this prompt (the asr benchmark)
    for echo in ("体中", "文记", "文记录。", "文记录音。", "以下是普通话的访谈录音。"):
        assert echoes_prompt(echo, prompt), echo
    # short answers, and sentences that share a word or a character with it, are speech
    for said in ("是的", "好的。", "录", "对，是普通话。", "我们的访谈到此结束", "简"):
        assert not echoes_prompt(said, prompt), said
    assert not echoes_prompt("体中", None)
