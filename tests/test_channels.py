"""Recordings of two channels: no channel's speech may be lost (real speech; the models run
only in the tests marked slow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from device import audio, channels
from device.channels import FRAME
from device.jobs import Runner
from device.pipeline import import_audio
from device.text import character_error_rate
from tests.conftest import espeak, shared_clips
from tests.webutil import make_box

SR = audio.SAMPLE_RATE


def sentences(tmp_path: Path) -> list[tuple[np.ndarray, str]]:
    """Three sentences, the first said by one person and the other two by others: Mandarin
    clips when the shared clips are present, else espeak-ng voices."""
    clips = {c.path.name: c for c in shared_clips()}
    names = ("zh_aishell_BAC009S0764W0121.wav", "zh_command_IT0011W0001.wav",
             "zh_hours.wav")
    if all(n in clips for n in names):
        return [(_level(audio.decode(clips[n].path)), clips[n].reference) for n in names]
    said = [("The committee will meet again next Tuesday.", "en-us"),
            ("Please turn the music down.", "en-gb"),
            ("The museum opens at nine in the morning.", "en-gb")]
    return [(_level(audio.decode(espeak(text, tmp_path / f"{n}.wav", voice))), text)
            for n, (text, voice) in enumerate(said)]


def _conversation(tmp_path: Path):
    """Left: the first sentence; right: the second, started before the first has finished
    (an interjection), then the third alone.  Returns the seconds, each channel's own
    speech and the sentences with their channel and start."""
    (a, ref_a), (b, ref_b), (c, ref_c) = sentences(tmp_path)
    b_at = 0.5 + a.size / SR * 0.6
    c_at = max(0.5 + a.size / SR, b_at + b.size / SR) + 1.0
    seconds = c_at + c.size / SR + 1.0
    said = [(0, 0.5, a, ref_a), (1, b_at, b, ref_b), (1, c_at, c, ref_c)]
    own = [_place(seconds, *[(at, x) for ch, at, x, _ in said if ch == channel])
           for channel in (0, 1)]
    return seconds, own, said


def _level(samples: np.ndarray, rms: float = 0.1) -> np.ndarray:
    speech = samples[np.abs(samples) > 0.01]
    return (samples * rms / np.sqrt(np.mean(speech ** 2))).astype(np.float32)


def _place(seconds: float, *parts: tuple[float, np.ndarray]) -> np.ndarray:
    out = np.zeros(int(seconds * SR), dtype=np.float32)
    for at, clip in parts:
        out[int(at * SR): int(at * SR) + clip.size] += clip
    return out


def _noise(seconds: float, rms: float, seed: int) -> np.ndarray:
    """A microphone's own hiss."""
    return np.random.default_rng(seed).normal(0, rms, int(seconds * SR)).astype(np.float32)


def _pcm(*tracks: np.ndarray) -> np.ndarray:
    return (np.clip(np.stack(tracks), -1, 1) * 32767).astype(np.int16)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def test_voices_on_their_own_channels_are_transcribed_one_by_one(tmp_path):
    """A lapel microphone each, talking over each other at times: each channel becomes a
    track, and where the other person is much louder (heard from afar), it is muted."""
    seconds, (own_a, own_b), said = _conversation(tmp_path)
    bleed = 0.1  # each microphone hears the other person 20 dB down
    left = own_a + bleed * own_b + _noise(seconds, 1e-3, 1)
    right = own_b + bleed * own_a + _noise(seconds, 1e-3, 2)

    layout, tracks = channels.arrange(_pcm(left, right))

    assert layout.mode == "separate" and [t.channel for t in tracks] == [0, 1]
    assert all(s >= channels.OWN_SPEECH_SECONDS for s in layout.own_speech)
    _, _, c, _ = said[2]
    c_at = said[2][1]
    alone = slice(int((c_at + 0.3) * SR), int((c_at + c.size / SR - 0.3) * SR))
    # the right person alone, heard by the left microphone: muted there
    assert _rms(tracks[0].samples[alone]) < 0.01 * _rms(own_b[alone])  # -40 dB
    for track, own in ((tracks[0], own_a), (tracks[1], own_b)):
        assert track.samples.shape == (left.size,) and track.samples.dtype == np.float32
        # each person is all there, where they overlap included, neither faded nor blown up
        mine = own != 0
        assert np.corrcoef(track.samples[mine], own[mine])[0, 1] > 0.95
        assert 1 / 3 < _rms(track.samples[mine]) / _rms(own[mine]) < 3


def test_a_channel_in_reverse_polarity_is_turned_over_not_cancelled(tmp_path):
    (a, _), (b, _), _ = sentences(tmp_path)
    seconds = 2 + a.size / SR + b.size / SR
    speech = _place(seconds, (0.5, a), (1.5 + a.size / SR, b))
    left = speech + _noise(seconds, 3e-3, 1)
    right = -0.9 * speech + _noise(seconds, 3e-3, 2)  # a balanced cable wired backwards
    pcm = _pcm(left, right)

    mean = channels.mean_mix(pcm)
    layout, (track,) = channels.arrange(pcm)

    talking = speech != 0
    assert layout.mode == "mixed" and layout.flipped == (1,) and track.channel is None
    # the plain mean leaves a twentieth of the speech in both microphones' hiss
    assert np.corrcoef(mean[talking], speech[talking])[0, 1] < 0.8
    assert np.corrcoef(track.samples[talking], speech[talking])[0, 1] > 0.99


def test_a_quiet_voice_is_not_buried_under_a_hissing_channel(tmp_path):
    """One microphone, plugged into the left; the right input hisses loudly."""
    (a, _), (b, _), _ = sentences(tmp_path)
    seconds = 2 + a.size / SR + b.size / SR
    speech = 0.3 * _place(seconds, (0.5, a), (1.5 + a.size / SR, b))
    left = speech + _noise(seconds, 1e-3, 1)
    right = _noise(seconds, 0.05, 2)
    pcm = _pcm(left, right)

    mean = channels.mean_mix(pcm)
    layout, (track,) = channels.arrange(pcm)

    talking = speech != 0
    assert layout.mode == "mixed" and layout.silent == (1,)  # steady hiss: left out
    snr_mean = _rms(speech[talking]) / _rms(mean[talking] - speech[talking] / 2)
    scale = np.dot(track.samples[talking], speech[talking]) / np.dot(speech[talking],
                                                                     speech[talking])
    snr_mix = _rms(speech[talking]) / _rms(track.samples[talking] / scale - speech[talking])
    assert snr_mean < 1.0  # under the hiss
    assert snr_mix > 10 * snr_mean


def test_the_same_signal_on_both_channels_is_one_track(tmp_path):
    (a, _), _, _ = sentences(tmp_path)
    speech = _place(2 + a.size / SR, (0.5, a)) + _noise(2 + a.size / SR, 1e-3, 1)
    layout, (track,) = channels.arrange(_pcm(speech, speech))
    assert layout.mode == "mixed" and not layout.flipped and not layout.silent
    assert np.corrcoef(track.samples, speech)[0, 1] > 0.999


def test_a_dead_channel_is_left_out(tmp_path):
    (a, _), _, _ = sentences(tmp_path)
    speech = _place(2 + a.size / SR, (0.5, a))
    layout, (track,) = channels.arrange(_pcm(np.zeros_like(speech), speech))
    assert layout.mode == "mixed" and layout.silent == (0,)
    assert np.corrcoef(track.samples, speech)[0, 1] > 0.999


def test_a_mono_recording_is_decoded_as_before(tmp_path, speech_wav):
    mono = tmp_path / "mono.wav"
    audio.write_wav(mono, audio.decode(speech_wav))
    layout, (track,) = channels.load(mono)
    assert layout == channels.Layout(1, "mono") and track.channel is None
    assert np.array_equal(track.samples, audio.decode(mono))


def test_a_real_stereo_recording_of_one_voice_is_mixed(speech_wav):
    """The shared English clip is such a file (two slightly different channels)."""
    pcm = audio.decode_channels(speech_wav)
    if pcm.shape[0] == 1:
        pytest.skip(f"{speech_wav.name} is mono here")
    layout, (track,) = channels.load(speech_wav)
    assert layout.mode == "mixed" and not layout.flipped and track.channel is None
    assert np.corrcoef(track.samples, audio.decode(speech_wav))[0, 1] > 0.99


def test_decoding_keeps_two_channels_in_order(tmp_path):
    tone = np.sin(2 * np.pi * 440 * np.arange(SR) / SR).astype(np.float32) * 0.5
    path = tmp_path / "stereo.wav"
    audio.write_wav(path, np.stack([tone, np.zeros_like(tone)]))
    pcm = audio.decode_channels(path)
    assert pcm.shape == (2, SR) and pcm.dtype == np.int16
    assert _rms(pcm[0] / 32768) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)
    assert not pcm[1].any()
    assert audio.decode(path).size == SR  # the plain decoder still folds them into one
    assert audio.decode_channels(tmp_path / "stereo.wav", 10).shape[0] == 2
    with pytest.raises(audio.AudioTooLargeError):
        audio.decode_channels(path, max_seconds=0.5)


def test_frames_cover_a_recording_of_any_length():
    pcm = (np.random.default_rng(0).normal(0, 0.1, (2, 3 * FRAME + 7)) * 32767).astype(np.int16)
    layout, tracks = channels.arrange(pcm)
    assert all(t.samples.size == pcm.shape[1] for t in tracks)


@pytest.mark.slow
def test_a_stereo_upload_loses_no_channel_s_speech(tmp_path, settings, store, engines):
    """Two people on their own channels, one starting before the other has finished, and
    then one alone: a mono mix of the two is transcribed as one voice; every sentence
    comes out, each segment on its channel, and the recording keeps the layout."""
    seconds, (left, right), said = _conversation(tmp_path)
    path = tmp_path / "interview.wav"
    audio.write_wav(path, np.stack([left + _noise(seconds, 1e-3, 1),
                                    right + _noise(seconds, 1e-3, 2)]))

    recording, job = import_audio(store, settings, path, profile="auto")
    runner = Runner(settings, engines)
    assert runner.run(store, runner.claim(store, job.id))

    stored = store.get_recording(recording.id)
    assert stored.channel_layout["mode"] == "separate"
    assert stored.channel_layout["channels"] == 2
    assert stored.duration == pytest.approx(seconds, abs=0.05)
    segments = store.segments(recording.id)
    assert all(s.channel in (0, 1) for s in segments)
    # one person per channel: the channel says who spoke
    assert all(s.speaker == f"说话人{s.channel + 1}" for s in segments)
    for channel, at, clip, reference in said:
        heard = "".join(s.text for s in segments if s.channel == channel
                        and s.end > at and s.start < at + clip.size / SR)
        assert character_error_rate(reference, heard) <= 0.25, (reference, segments)
    # an edit keeps the channel; the recording page shows the layout and each channel
    first = segments[0]
    assert store.edit_segment(first.id, first.text + "!", first.revision).channel == first.channel
    page = make_box(settings).reviewer.client.get(f"/recordings/{recording.id}").text
    assert "2 channels, transcribed one by one" in page
    assert page.count('<span class="channel"') == len(segments)
