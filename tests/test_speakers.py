"""The speaker encoder: its checkpoint read without torch and without running code, the ONNX
graph against the numpy reference on real speech, and the installed model's checks."""

from __future__ import annotations

import collections
import io
import pickle
import shutil
import struct
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from device import audio
from device.databases import open_store
from device.speakers.weights import WeightsError, load_checkpoint
from tests.conftest import debian_voice, espeak, shared_clips

SPEAKER_MODEL = "ge2e-speaker-encoder"


# -- checkpoints, no model -----------------------------------------------------------------


class _FakeTorch:
    """Just enough of torch's names, in sys.modules while a test writes a checkpoint, for
    pickle to write the globals a real checkpoint holds (torch itself is never installed)."""

    def __enter__(self):
        torch = types.ModuleType("torch")
        utils = types.ModuleType("torch._utils")

        class FloatStorage:
            pass

        def _rebuild_tensor_v2(*args):
            raise AssertionError("only written, never called")

        FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
        _rebuild_tensor_v2.__module__ = "torch._utils"
        _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
        torch.FloatStorage, torch._utils = FloatStorage, utils
        utils._rebuild_tensor_v2 = _rebuild_tensor_v2
        self.saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
        sys.modules.update({"torch": torch, "torch._utils": utils})
        return torch

    def __exit__(self, *exc):
        for key, module in self.saved.items():
            if module is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = module


class _Storage:
    def __init__(self, key: str, data: np.ndarray):
        self.key, self.data = key, data.astype(np.float32).ravel()


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, shape, stride):
        self.args = (storage, offset, tuple(shape), tuple(stride))

    def __reduce__(self):
        from torch._utils import _rebuild_tensor_v2

        return _rebuild_tensor_v2, (*self.args, False, collections.OrderedDict())


class _Pickler(pickle.Pickler):
    def __init__(self, stream, torch):
        super().__init__(stream, protocol=2)
        self.torch = torch

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", self.torch.FloatStorage, obj.key, "cpu", obj.data.size)
        return None


def _checkpoint(torch):
    """A state dict of two tensors sharing one storage (the second a transposed view at an
    offset, as torch writes views) and the storage."""
    values = np.arange(20, dtype=np.float32)
    storage = _Storage("0", values)
    state = collections.OrderedDict(
        weight=_Tensor(storage, 0, (2, 3), (3, 1)),
        view=_Tensor(storage, 8, (3, 2), (1, 3)))
    expected = {"weight": values[:6].reshape(2, 3), "view": values[8:14].reshape(2, 3).T}
    return {"model_state": state, "step": 7}, storage, expected


def _legacy_bytes(obj, storages, torch, magic=0x1950A86A20F9469CFC6C) -> bytes:
    out = io.BytesIO()
    for head in (magic, 1001, {"little_endian": True}):
        pickle.dump(head, out, protocol=2)
    _Pickler(out, torch).dump(obj)
    pickle.dump([s.key for s in storages], out, protocol=2)
    for s in storages:
        out.write(struct.pack("<q", s.data.size) + s.data.tobytes())
    return out.getvalue()


def test_legacy_and_zip_checkpoints_read_into_arrays(tmp_path):
    with _FakeTorch() as torch:
        obj, storage, expected = _checkpoint(torch)
        (tmp_path / "legacy.pt").write_bytes(_legacy_bytes(obj, [storage], torch))
        pickled = io.BytesIO()
        _Pickler(pickled, torch).dump(obj)
    with zipfile.ZipFile(tmp_path / "new.pt", "w") as archive:
        archive.writestr("archive/data.pkl", pickled.getvalue())
        archive.writestr("archive/data/0", storage.data.tobytes())
    for name in ("legacy.pt", "new.pt"):
        loaded = load_checkpoint(tmp_path / name)
        assert loaded["step"] == 7
        for key, array in expected.items():
            assert np.array_equal(loaded["model_state"][key], array), (name, key)


class _RunsCode:
    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.sentinel}",)


def test_a_tampered_checkpoint_cannot_run_code(tmp_path):
    sentinel = tmp_path / "ran"
    with _FakeTorch() as torch:
        obj, storage, _ = _checkpoint(torch)
        obj["model_state"]["evil"] = _RunsCode(sentinel)
        (tmp_path / "state.pt").write_bytes(_legacy_bytes(obj, [storage], torch))
        (tmp_path / "magic.pt").write_bytes(
            _legacy_bytes(obj, [storage], torch, magic=_RunsCode(sentinel)))
        pickled = io.BytesIO()
        _Pickler(pickled, torch).dump(obj)
    with zipfile.ZipFile(tmp_path / "zip.pt", "w") as archive:
        archive.writestr("archive/data.pkl", pickled.getvalue())
        archive.writestr("archive/data/0", storage.data.tobytes())
    for name in ("state.pt", "magic.pt", "zip.pt"):
        with pytest.raises(WeightsError, match=r"system.*refused"):
            load_checkpoint(tmp_path / name)
    assert not sentinel.exists()
    # cut short, or not a checkpoint at all: a clear error, not a crash
    whole = (tmp_path / "state.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "text.pt").write_bytes(b"hello, not a checkpoint")
    for name in ("cut.pt", "text.pt"):
        with pytest.raises(WeightsError):
            load_checkpoint(tmp_path / name)


# -- the installed model -------------------------------------------------------------------


@pytest.fixture(scope="module")
def speaker_model():
    from device.settings import Settings
    from models.store import ModelMissingError, get_spec, load_manifest, verify

    settings = Settings.load()
    spec = get_spec(SPEAKER_MODEL, load_manifest(models_dir=settings.models_dir))
    try:
        return spec, settings.models_dir, verify(spec, settings.models_dir)
    except ModelMissingError as exc:
        pytest.fail(f"{exc} (make test installs it)")


def _voices(tmp_path: Path) -> list[np.ndarray]:
    """Two people: the shared English clip and a Mandarin one, else two espeak voices."""
    clips = {c.path.name: c.path for c in shared_clips()}
    if {"en_jfk.flac", "zh_hours.wav"} <= set(clips):
        return [audio.decode(clips["en_jfk.flac"]), audio.decode(clips["zh_hours.wav"])]
    return [audio.decode(espeak("The committee will meet again next Tuesday to review the "
                                "budget and the plan.", tmp_path / "a.wav", "en-us")),
            audio.decode(espeak("Please send the minutes to everyone before Friday "
                                "afternoon.", tmp_path / "b.wav", "en-gb"))]


@pytest.mark.slow
def test_the_onnx_graph_matches_the_numpy_reference_on_real_speech(speaker_model, tmp_path):
    from device.speakers.encoder import (
        ONNX_FILE,
        NumpyEncoder,
        OnnxEncoder,
        embed,
        partials,
        weights_of,
    )

    _, _, directory = speaker_model
    reference = NumpyEncoder(weights_of(directory / "pretrained.pt"))
    onnx = OnnxEncoder(directory / ONNX_FILE)
    first, second = _voices(tmp_path)
    features = partials(first[: 4 * audio.SAMPLE_RATE])
    a, b = reference.forward(features), onnx.forward(features)
    assert a.shape == (features.shape[0], 256)
    assert np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert float((a * b).sum(axis=1).min()) >= 0.9999
    # loudness does not change who is speaking
    assert float(embed(onnx, first) @ embed(onnx, first * 0.05)) >= 0.999
    # one person's two halves are closer than two people
    half = first.size // 2
    same = float(embed(onnx, first[:half]) @ embed(onnx, first[half:]))
    other = float(embed(onnx, first) @ embed(onnx, second))
    assert same > other + 0.1, (same, other)


@pytest.mark.slow
def test_a_changed_or_missing_built_graph_is_caught_at_load(speaker_model, tmp_path):
    from models.derived import DERIVED_MARKER
    from models.store import ModelCorruptError, verify

    spec, models_dir, directory = speaker_model
    copy = tmp_path / "models"
    shutil.copytree(directory, copy / spec.id)
    assert verify(spec, copy) == copy / spec.id
    graph = copy / spec.id / "encoder.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(ModelCorruptError, match="encoder.onnx fails its sha256"):
        verify(spec, copy)
    (copy / spec.id / DERIVED_MARKER).unlink()
    with pytest.raises(ModelCorruptError, match="python -m models install"):
        verify(spec, copy)


# -- diarization ---------------------------------------------------------------------------


def test_windows_cover_the_speech_and_turns_follow_the_nearest_window():
    from device.speakers.diarize import Turn, turns, windows
    from device.vad import SpeechChunk

    sr = audio.SAMPLE_RATE
    speech = [SpeechChunk(0, 4 * sr), SpeechChunk(5 * sr, int(6.2 * sr)),
              SpeechChunk(7 * sr, int(7.3 * sr))]
    spans = windows(speech)
    # 1.5 s every 0.75 s, the last flush with the chunk's end; a short chunk is one window;
    # one under 0.5 s has none
    assert spans[:5] == [(0, 24000), (12000, 36000), (24000, 48000), (36000, 60000),
                         (40000, 64000)]
    assert spans[5:] == [(5 * sr, int(6.2 * sr))]
    labels = [0, 0, 1, 1, 1, 0]
    out = turns(spans, labels, speech)
    assert out[0] == Turn(0.0, 1.9, 0) and out[1].speaker == 1 and out[1].end == 4.0
    assert [t.speaker for t in out[2:]] == [0, 0]  # the short chunk: its nearest window's
    assert out[-1].start == 7.0 and out[-1].end == 7.3


def test_der_counts_missed_false_alarm_and_confusion_after_the_best_mapping():
    from device.speakers.der import Turn, error_rates

    ref = [Turn(0.0, 4.0, "ana"), Turn(4.0, 6.0, "bo"), Turn(8.0, 10.0, "ana")]
    # labels need not match: "b" is ana, "a" is bo; 1 s of bo heard as ana, 0.5 s of ana
    # missed, 1 s of silence taken for speech
    hyp = [Turn(0.0, 5.0, "b"), Turn(5.0, 6.0, "a"), Turn(7.0, 9.5, "b")]
    rates = error_rates(ref, hyp)
    assert (rates.missed, rates.false_alarm, rates.confusion) == (0.0625, 0.125, 0.125)
    assert rates.der == 0.3125 and rates.speakers == rates.reference_speakers == 2
    assert rates.scored_seconds == 8.0
    # a collar leaves 0.25 s either side of every reference boundary out
    collared = error_rates(ref, hyp, collar=0.25)
    assert collared.scored_seconds == 6.5 and collared.confusion == round(0.75 / 6.5, 4)
    # a perfect answer scores 0; one speaker for all of it is confusion on bo's 2 s;
    # two people at once count twice
    assert error_rates(ref, ref).der == 0.0
    assert error_rates(ref, [Turn(0.0, 10.0, "x")]).confusion == 0.25
    overlap = [Turn(0.0, 2.0, "ana"), Turn(1.0, 2.0, "bo")]
    assert error_rates(overlap, [Turn(0.0, 2.0, "x")]).missed == round(1 / 3, 4)
    # nothing said: no division by zero
    assert error_rates([], []).der == 0.0


def test_rttm_files_round_trip_and_a_bad_line_names_itself(tmp_path):
    from device.speakers.der import RttmError, Turn, read_rttm, rttm_lines

    turns = [Turn(0.5, 2.25, "李明"), Turn(2.5, 4.0, "bo")]
    path = tmp_path / "a.rttm"
    path.write_text(";; comment\n" + rttm_lines("talk-1", turns) + rttm_lines("talk-2", turns[:1]),
                    encoding="utf-8")
    assert read_rttm(path) == {"talk-1": turns, "talk-2": turns[:1]}
    path.write_text("SPEAKER talk 1 0.5 soon <NA> <NA> bo <NA> <NA>\n")
    with pytest.raises(RttmError, match=r"a.rttm:1: not an RTTM SPEAKER line"):
        read_rttm(path)


def test_segments_take_the_speaker_covering_them_and_split_where_it_changes():
    from device.records import Segment, Word
    from device.speakers.diarize import Turn, label

    turns = [Turn(0.0, 4.0, 0), Turn(4.0, 9.0, 1), Turn(9.5, 12.0, 0)]
    words = tuple(Word(t, t + 0.4, f" w{t:g}", 0.9) for t in (0.5, 1.5, 2.5, 4.5, 5.5, 6.5))
    spanning = Segment(0.2, 7.0, "".join(w.text for w in words), words=words)
    inside = Segment(9.6, 11.0, "再见。")
    named = Segment(4.2, 6.0, "已经有名字", speaker="李明")
    brief = tuple(Word(t, t + 0.3, f" b{t:g}", 0.9) for t in (3.0, 3.5, 4.1))  # 0.4 s of B
    mostly_a = Segment(2.9, 4.5, "".join(w.text for w in brief), words=brief)
    out = label([spanning, inside, named, mostly_a], turns)
    assert [(s.start, s.end, s.text, s.speaker) for s in out[:2]] == [
        (0.2, 2.9, "w0.5 w1.5 w2.5", "说话人1"), (4.5, 7.0, "w4.5 w5.5 w6.5", "说话人2")]
    assert [w.start for w in out[1].words] == [4.5, 5.5, 6.5]
    assert out[2].speaker == "说话人1" and out[3].speaker == "李明"
    assert len(out) == 5 and out[4].speaker == "说话人1"  # too short a change: not split
    assert label([inside], []) == [inside]  # no turns (no speech found): left as it is


def _conversation(a: str, b: str, offset: int = 0
                  ) -> tuple[np.ndarray, list[tuple[float, float, int]]]:
    """Two people taking eight turns of 2-6 s (each a run of different clips of one voice,
    from the ``offset``-th on), with short pauses and the second 6 dB quieter:
    (samples, [(start, end, person)])."""
    voices = [debian_voice(a), debian_voice(b)]
    rng = np.random.default_rng(3)
    pause = np.zeros(int(0.5 * audio.SAMPLE_RATE), np.float32)
    pieces, truth, t, used = [], [], 0.0, [offset, offset]
    for turn in range(8):
        person = turn % 2
        clips, wanted, said = voices[person], rng.uniform(2, 6) * audio.SAMPLE_RATE, []
        while sum(x.size for x in said) < wanted and used[person] < len(clips) + offset:
            said.append(clips[used[person] * 7 % len(clips)])  # spread over the voice's clips
            used[person] += 1
        part = np.concatenate(said) * (0.5 if person else 1.0)
        pieces += [part, pause]
        truth.append((t, t + part.size / audio.SAMPLE_RATE, person))
        t += (part.size + pause.size) / audio.SAMPLE_RATE
    return np.concatenate(pieces), truth


def _confusion(truth, turns) -> float:
    """Share of the reference speech labelled with the wrong speaker (the best mapping)."""
    from device.speakers.der import Turn, error_rates

    return error_rates([Turn(s, e, str(p)) for s, e, p in truth],
                       [Turn(t.start, t.end, str(t.speaker)) for t in turns]).confusion


@pytest.mark.slow
def test_two_people_are_told_apart_and_one_stays_one(speaker_model, tmp_path):
    from device.speakers.diarize import diarize
    from device.speakers.encoder import ONNX_FILE, OnnxEncoder
    from device.vad import SpeechDetector

    _, _, directory = speaker_model
    encoder = OnnxEncoder(directory / ONNX_FILE)
    detector = SpeechDetector()
    # two professional voices the encoder finds alike (centroids ~0.84): told apart when
    # the count is given
    samples, truth = _conversation("allison", "june")
    turns = diarize(encoder, samples, detector.speech_chunks(samples), speakers=2)
    assert {t.speaker for t in turns} == {0, 1} and _confusion(truth, turns) < 0.1
    # a woman's prompts and a man reading: counted, too
    samples, truth = _conversation("allison", "reader")
    turns = diarize(encoder, samples, detector.speech_chunks(samples))
    assert {t.speaker for t in turns} == {0, 1} and _confusion(truth, turns) < 0.1
    # a monologue is not split, however many turns its pauses make
    alone = np.concatenate([np.concatenate([clip, np.zeros(8000, np.float32)])
                            for clip in debian_voice("reader")])
    assert {t.speaker for t in diarize(encoder, alone, detector.speech_chunks(alone))} == {0}
    # under 3 s of speech is one speaker, and silence has no turns
    short = samples[: int(2.5 * audio.SAMPLE_RATE)]
    assert {t.speaker for t in diarize(encoder, short, detector.speech_chunks(short),
                                       speakers=2)} <= {0}
    silence = np.zeros(5 * audio.SAMPLE_RATE, np.float32)
    assert diarize(encoder, silence, detector.speech_chunks(silence)) == []


# -- in the pipeline -------------------------------------------------------------------------


def _transcribed(settings, engines, path: Path, **kwargs):
    from device.jobs import Runner
    from device.pipeline import import_audio

    with open_store(settings) as store:
        recording, job = import_audio(store, settings, path, profile="auto", **kwargs)
        runner = Runner(settings, engines)
        assert runner.run(store, runner.claim(store, job.id)), store.get_job(job.id).error
        return store.get_recording(recording.id), store.segments(recording.id)


def _agreement(truth, segments) -> float:
    """Share of the transcript's time whose segment's speaker is the person speaking there,
    under the best mapping of names to people."""
    names = sorted({s.speaker for s in segments})
    best = 0.0
    for order in (names, names[::-1]):
        mapping = {name: person for person, name in enumerate(order)}
        right = total = 0.0
        for s in segments:
            for start, end, person in truth:
                overlap = max(0.0, min(end, s.end) - max(start, s.start))
                total += overlap
                right += overlap * (mapping.get(s.speaker) == person)
        best = max(best, right / max(total, 1e-9))
    return best


@pytest.mark.slow
def test_a_transcript_says_who_spoke(speaker_model, settings, engines, tmp_path):
    samples, truth = _conversation("allison", "reader")
    path = tmp_path / "two.wav"
    audio.write_wav(path, samples)
    for speakers in (None, 2):
        recording, segments = _transcribed(settings, engines, path, speakers=speakers)
        assert recording.error is None
        assert {s.speaker for s in segments} == {"说话人1", "说话人2"}, speakers
        assert _agreement(truth, segments) >= 0.9, speakers


@pytest.mark.slow
def test_without_the_speaker_model_the_transcript_is_kept_and_says_why(settings, tmp_path):
    from dataclasses import replace

    from device.jobs import load_engines

    models = tmp_path / "models"
    models.mkdir()
    (models / "whisper-base").symlink_to(settings.models_dir.resolve() / "whisper-base")
    local = replace(settings, models_dir=models)
    samples, _ = _conversation("allison", "reader")
    path = tmp_path / "two.wav"
    audio.write_wav(path, samples)
    recording, segments = _transcribed(local, load_engines(local), path)
    assert recording.status == "done" and segments
    assert all(s.speaker is None for s in segments)
    assert recording.error.startswith("speakers not labelled: ")
    assert "python -m models install ge2e-speaker-encoder" in recording.error


@pytest.mark.slow
def test_speakers_found_again_keep_edits_and_given_names(speaker_model, settings, engines,
                                                        tmp_path):
    from device.jobs import Runner

    samples, _ = _conversation("allison", "reader")
    path = tmp_path / "two.wav"
    audio.write_wav(path, samples)
    recording, segments = _transcribed(settings, engines, path)
    with open_store(settings) as store:
        first = segments[0]
        store.edit_segment(first.id, "改过的文字", first.revision)
        store.rename_speaker(recording.id, "说话人1", "李明")  # the other stays 说话人2
        runner = Runner(settings, engines)

        def again(**params) -> list:
            job = store.enqueue("diarize", recording.id, params)
            assert runner.run(store, runner.claim(store, job.id)), store.get_job(job.id).error
            return store.segments(recording.id)

        # one speaker, as a reviewer said: the automatic labels follow, the name stays
        after = again(speakers=1)
        assert {s.speaker for s in after} == {"说话人1", "李明"}
        assert after[0].text == "改过的文字" and [s.id for s in after] == [s.id for s in segments]
        assert store.revisions(recording.id)[0].note == "speakers found again (1 speakers)"
        # asked to overwrite: every segment
        assert {s.speaker for s in again(speakers=1, overwrite=True)} == {"说话人1"}
        # counted again: the two people come back
        assert {s.speaker for s in again()} == {"说话人1", "说话人2"}


MUSIC = Path("/usr/share/asterisk/moh")
"""Real music (Debian's asterisk-moh-opsound-g722: hold music; make test installs it)."""


@pytest.mark.slow
def test_music_or_noise_alone_has_no_speakers_and_between_turns_changes_nothing(
        speaker_model):
    from device.speakers.diarize import diarize
    from device.speakers.encoder import ONNX_FILE, OnnxEncoder
    from device.vad import SpeechDetector

    tunes = sorted(MUSIC.glob("*.g722"))
    if not tunes:
        pytest.skip("Debian's asterisk-moh-opsound-g722 is not installed (make test does)")
    _, _, directory = speaker_model
    encoder, detector = OnnxEncoder(directory / ONNX_FILE), SpeechDetector()
    sr = audio.SAMPLE_RATE
    music = [audio.decode_clip(f)[: 40 * sr] for f in tunes[:3]]
    noise = (0.1 * np.random.default_rng(4).standard_normal(30 * sr)).astype(np.float32)
    for samples in (*music, noise):
        assert diarize(encoder, samples, detector.speech_chunks(samples)) == []
    # hold music between the turns of two people: still two, told apart
    samples, truth = _conversation("allison", "reader")
    cut = int(truth[3][1] * sr)
    gap = len(music[0]) / sr
    with_music = np.concatenate([samples[:cut], music[0] * 0.3, samples[cut:]])
    moved = [(s + gap * (s * sr >= cut), e + gap * (s * sr >= cut), p) for s, e, p in truth]
    turns = diarize(encoder, with_music, detector.speech_chunks(with_music))
    assert {t.speaker for t in turns} == {0, 1} and _confusion(moved, turns) < 0.1


@pytest.mark.slow
def test_a_remembered_voice_names_the_same_person_in_another_recording(
        speaker_model, settings, engines, tmp_path):
    from device.jobs import Runner
    from device.pipeline import delete_recording
    from device.store.voiceprints import Voiceprints

    first = tmp_path / "first.wav"
    audio.write_wav(first, _conversation("allison", "reader")[0])
    recording, segments = _transcribed(settings, engines, first, speakers=2)
    allison = segments[0].speaker  # she speaks first
    with open_store(settings) as store:
        runner = Runner(settings, engines)
        job = store.enqueue("remember_voice", recording.id, {
            "speaker": allison, "name": "李明", "consent": "同意书 2026-12-01"})
        assert runner.run(store, runner.claim(store, job.id)), store.get_job(job.id).error
        # the speaker is named at once
        assert allison not in {s.speaker for s in store.segments(recording.id)}
        assert "李明" in {s.speaker for s in store.segments(recording.id)}
        # too little speech of a speaker: a clear reason, nothing remembered
        last = store.segments(recording.id)[-1]
        store.assign_speaker(recording.id, [(last.id, last.revision)], "短")
        job = store.enqueue("remember_voice", recording.id, {"speaker": "短", "name": "短"})
        assert not runner.run(store, runner.claim(store, job.id))
        assert "at least 8 s of speech are needed" in store.get_job(job.id).error
    with Voiceprints(settings.voiceprints_path) as prints:
        [voiceprint] = prints.all()
        assert (voiceprint.name, voiceprint.consent) == ("李明", "同意书 2026-12-01")
        assert voiceprint.seconds >= 8 and voiceprint.recording_id == recording.id
    # another conversation: June first, then Allison from recordings not heard before
    second = tmp_path / "second.wav"
    samples, truth = _conversation("june", "allison", offset=40)
    audio.write_wav(second, samples)
    later, labelled = _transcribed(settings, engines, second, speakers=2)
    names = {s.speaker for s in labelled}
    assert "李明?" in names and len(names) == 2, names
    assert _agreement(truth, labelled) >= 0.9
    assert all(s.speaker == "李明?" for s in labelled
               if any(p == 1 and start <= (s.start + s.end) / 2 <= end
                      for start, end, p in truth))
    with Voiceprints(settings.voiceprints_path) as prints:
        [use] = prints.uses(voiceprint.id)
        assert use.recording_id == later.id and use.similarity >= 0.88
    # one person per channel of a stereo file: the channel is the speaker, named from the
    # voiceprint too
    samples, truth = _conversation("allison", "reader", offset=90)
    sr = audio.SAMPLE_RATE
    sides = np.zeros((2, samples.size), np.float32)
    for start, end, person in truth:
        sides[person, int(start * sr):int(end * sr)] = samples[int(start * sr):int(end * sr)]
    stereo = tmp_path / "stereo.wav"
    audio.write_wav(stereo, sides)
    recorded, labelled = _transcribed(settings, engines, stereo)
    assert recorded.channel_layout["mode"] == "separate"
    assert {(s.channel, s.speaker) for s in labelled} == {(0, "李明?"), (1, "说话人2")}
    # a stranger is not named: the reader alone
    alone = tmp_path / "alone.wav"
    audio.write_wav(alone, np.concatenate([np.concatenate([c, np.zeros(8000, np.float32)])
                                           for c in debian_voice("reader")]))
    assert {s.speaker for s in _transcribed(settings, engines, alone)[1]} == {"说话人1"}
    # deleting the recording forgets where the voice was used; the voiceprint stays
    with open_store(settings) as store:
        delete_recording(store, settings, later.id)
    with Voiceprints(settings.voiceprints_path) as prints:
        assert [u.recording_id for u in prints.uses(voiceprint.id)] == [recorded.id]
        assert len(prints.all()) == 1


@pytest.mark.slow
def test_the_eval_harness_scores_diarization_against_rttm(speaker_model, tmp_path, capsys):
    import json

    from device.eval import main
    from device.speakers.der import Turn, rttm_lines

    samples, truth = _conversation("allison", "reader")
    audio.write_wav(tmp_path / "talk.wav", samples)
    (tmp_path / "talk.rttm").write_text(
        rttm_lines("talk", [Turn(s, e, ["allison", "reader"][p]) for s, e, p in truth]))
    assert main([str(tmp_path), "--speakers", "--out", str(tmp_path / "der.json")]) == 0
    report = json.loads((tmp_path / "der.json").read_text())
    [row] = report["recordings"]
    assert row["speakers"] == 2 and row["auto"]["speakers"] == 2
    assert row["known"]["confusion"] < 0.1 and row["known_collar"]["der"] <= row["known"]["der"]
    assert report["summary"]["count_right"] == 1 and 0 < report["summary"]["rtf"] < 0.05
    assert "mean DER: known count" in capsys.readouterr().out
    # a reference without its audio, or a broken line: one clear line, no traceback
    (tmp_path / "lost.rttm").write_text(rttm_lines("lost", [Turn(0, 1, "x")]))
    with pytest.raises(SystemExit, match="no audio named lost.wav"):
        main([str(tmp_path), "--speakers"])
    (tmp_path / "lost.rttm").write_text("SPEAKER lost 1 zero 1 <NA> <NA> x <NA> <NA>\n")
    assert main([str(tmp_path), "--speakers"]) == 1
    assert "lost.rttm:1: not an RTTM SPEAKER line" in capsys.readouterr().err
