"""Which decoded windows are decoded again, and which decoding is kept."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from device.recognize import RecognitionOptions
from device.recognize.retry import DecodedWindow, RetryPolicy, by_window


def _window(text: str, avg_logprob: float, no_speech_prob: float = 0.01) -> DecodedWindow:
    # A window's segments share its scores.
    raws = [SimpleNamespace(text=part, avg_logprob=avg_logprob, no_speech_prob=no_speech_prob,
                            seek=0) for part in text.split("|")]
    return DecodedWindow.of((raw, "zh") for raw in raws)


def test_a_window_that_fails_whispers_own_tests_has_failed():
    policy = RetryPolicy(beam_size=1, retry_beam=5)
    assert not policy.failed(_window("开放时间早上9点，|至下午5点。", -0.3))
    assert policy.failed(_window("睡下5点，" * 12, -0.2))  # a loop compresses too well
    assert policy.failed(_window("会医手歌", -1.3))  # too unlikely
    # No speech, by the model's own account: the text is dropped, not decoded again.
    assert not policy.failed(_window("谢谢观看", -1.3, no_speech_prob=0.9))


def test_the_retry_is_kept_when_it_loops_no_more_else_when_it_is_likelier():
    policy = RetryPolicy(beam_size=5, retry_beam=1)
    loop, plain = _window("睡下5点，" * 12, -0.1), _window("开放时间早上9点", -0.8)
    assert policy.keep_retry(plain, loop) and not policy.keep_retry(loop, plain)
    assert policy.keep_retry(_window("换一首歌", -0.4), _window("患一首歌", -1.2))
    assert not policy.keep_retry(_window("患一首歌", -1.2), _window("换一首歌", -0.4))


@pytest.mark.parametrize(("beam", "unlikely_retried", "loop_retried"),
                         [(1, True, True), (5, False, True)])
def test_greedy_after_a_beam_is_asked_only_for_a_loop(beam, unlikely_retried, loop_retried):
    """Greedy search seldom finds text likelier than the beam's, so only a loop of the beam
    is worth an encoder pass more; greedy's unlikely text is worth a beam."""
    options = RecognitionOptions(beam_size=beam)
    policy = RetryPolicy(beam, options.retry_beam)
    assert policy.decode_again(_window("会医手歌", -1.3)) is unlikely_retried
    assert policy.decode_again(_window("睡下5点，" * 12, -0.2)) is loop_retried
    # A retry with the same beam is no retry (the live transcript's choice).
    assert not RetryPolicy(beam, beam).decode_again(_window("睡下5点，" * 12, -0.2))


def test_segments_group_into_their_windows_in_order():
    raws = [SimpleNamespace(text=t, avg_logprob=-0.2, no_speech_prob=0.0, seek=seek)
            for t, seek in [("a", 0), ("b", 0), ("c", 3000), ("d", 0)]]
    windows = list(by_window((raw, "en") for raw in raws))
    assert [(w.seek, w.text, w.languages) for w in windows] == [
        (0, "ab", ("en", "en")), (3000, "c", ("en",)), (0, "d", ("en",))]
