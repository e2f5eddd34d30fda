"""PyTorch checkpoints read into numpy arrays, without torch, and without running code.

A ``.pt`` file is pickles.  Unpickling runs whatever callables the pickle names, so a
tampered file could run code; this reader resolves only the handful of globals a checkpoint
of tensors needs (``OrderedDict``, the tensor rebuild function, the storage types) and
refuses any other with WeightsError.  Both layouts torch writes are read:

- the legacy one (before torch 1.6): a magic number, a protocol version and system info as
  three pickles, then the object pickle, the list of storage keys, and each storage as an
  8-byte little-endian element count followed by its raw elements;
- the zip one: ``<name>/data.pkl`` with each storage in ``<name>/data/<key>``.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.errors import TingjiError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_STORAGES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class WeightsError(TingjiError):
    """A checkpoint that cannot be read, or that asks for something a checkpoint of tensors
    never needs."""


@dataclass
class _Storage:
    key: str
    dtype: type
    count: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _TensorRef:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def array(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise WeightsError(f"storage {self.storage.key} was never read")
        if not self.shape:
            return data[self.offset].copy()
        itemsize = data.dtype.itemsize
        needed = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride,
                                                               strict=True)) + 1
        if min(self.shape) > 0 and (needed > data.size or self.offset < 0):
            raise WeightsError(f"a tensor reaches past the end of storage {self.storage.key}")
        return np.lib.stride_tricks.as_strided(
            data[self.offset:], shape=self.shape,
            strides=tuple(s * itemsize for s in self.stride)).copy()


def _rebuild_tensor(storage, offset, shape, stride, *_ignored):
    if not isinstance(storage, _Storage):
        raise WeightsError("a tensor without a storage")
    return _TensorRef(storage, int(offset), tuple(int(n) for n in shape),
                      tuple(int(s) for s in stride))


class _StorageType:
    def __init__(self, name: str):
        self.dtype = _STORAGES[name]


class _Unpickler(pickle.Unpickler):
    """Resolves only what a checkpoint of tensors needs; every other global is refused."""

    def __init__(self, stream, storages: dict[str, _Storage]):
        super().__init__(stream)
        self.storages = storages

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGES:
            return _StorageType(name)
        raise WeightsError(f"the checkpoint asks for {module}.{name}, which a checkpoint of "
                           "tensors never needs: refused")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage" and len(pid) >= 5):
            raise WeightsError(f"unknown persistent id {pid!r:.60}")
        storage_type, key, count = pid[1], str(pid[2]), pid[4]
        if not isinstance(storage_type, _StorageType):
            raise WeightsError("a storage of an unknown type")
        if key not in self.storages:
            self.storages[key] = _Storage(key, storage_type.dtype, int(count))
        return self.storages[key]


def load_checkpoint(path: Path) -> dict:
    """The checkpoint's object with every tensor as a numpy array."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
        if head.startswith(b"PK"):
            return _load_zip(path)
        return _load_legacy(path)
    except WeightsError:
        raise
    except (pickle.UnpicklingError, EOFError, struct.error, ValueError, KeyError,
            zipfile.BadZipFile, TypeError, AttributeError, IndexError) as exc:
        raise WeightsError(f"{path.name} is not a readable checkpoint ({exc})") from exc


def _load_legacy(path: Path) -> dict:
    storages: dict[str, _Storage] = {}
    with open(path, "rb") as f:
        def one():
            return _Unpickler(f, storages).load()

        if one() != _LEGACY_MAGIC:
            raise WeightsError(f"{path.name} is not a PyTorch checkpoint")
        if one() != _LEGACY_PROTOCOL:
            raise WeightsError(f"{path.name}: unknown checkpoint protocol")
        one()  # system info: endianness and type sizes (little-endian, as written here)
        result = one()
        keys = one()
        if not isinstance(keys, list):
            raise WeightsError(f"{path.name}: no list of storages")
        for key in keys:
            storage = storages.get(str(key))
            if storage is None:
                raise WeightsError(f"{path.name}: storage {key} is listed but never used")
            (count,) = struct.unpack("<q", f.read(8))
            itemsize = np.dtype(storage.dtype).itemsize
            raw = f.read(count * itemsize)
            if count < 0 or len(raw) != count * itemsize:
                raise WeightsError(f"{path.name} is cut short in storage {key}")
            storage.data = np.frombuffer(raw, dtype=np.dtype(storage.dtype).newbyteorder("<"))
    return _arrays(result)


def _load_zip(path: Path) -> dict:
    storages: dict[str, _Storage] = {}
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickled = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pickled is None:
            raise WeightsError(f"{path.name} has no data.pkl")
        prefix = pickled[: -len("data.pkl")]
        result = _Unpickler(io.BytesIO(archive.read(pickled)), storages).load()
        for key, storage in storages.items():
            raw = archive.read(f"{prefix}data/{key}")
            itemsize = np.dtype(storage.dtype).itemsize
            if len(raw) < storage.count * itemsize:
                raise WeightsError(f"{path.name} is cut short in storage {key}")
            storage.data = np.frombuffer(raw[: storage.count * itemsize],
                                         dtype=np.dtype(storage.dtype).newbyteorder("<"))
    return _arrays(result)


def _arrays(value):
    if isinstance(value, _TensorRef):
        return value.array()
    if isinstance(value, dict):
        return {k: _arrays(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_arrays(v) for v in value)
    return value
