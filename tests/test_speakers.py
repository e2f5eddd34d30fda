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
from device.speakers.weights import WeightsError, load_checkpoint
from tests.conftest import espeak, shared_clips

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
    from models.store import DERIVED_MARKER, ModelCorruptError, verify

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
