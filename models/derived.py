"""Files an install builds from a model's verified files, for engines that need them (the
speaker encoder's ONNX graph from its PyTorch checkpoint).  Their sizes and hashes are
recorded in the model's ``.derived`` file at install and checked at every load like the
manifest's own files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from device.errors import TingjiError
from models.store import (
    ModelCorruptError,
    ModelFile,
    ModelInstallError,
    ModelSpec,
    _install_hint,
    sha256_file,
)

DERIVED_MARKER = ".derived"
"""``size sha256 name`` per line."""


def _build_ge2e(directory: Path) -> list[str]:
    from device.speakers.encoder import ONNX_FILE, build_onnx, weights_of

    build_onnx(weights_of(directory / "pretrained.pt"), directory / ONNX_FILE)
    return [ONNX_FILE]


DERIVE: dict[str, Callable[[Path], list[str]]] = {"ge2e-onnx": _build_ge2e}
"""Engines whose files are built at install from the verified ones (an ONNX graph from a
checkpoint): engine -> builder returning the names of the files it wrote."""


def derive(spec: ModelSpec, directory: Path, log: Callable[[str], None]) -> None:
    """Build the engine's derived files in ``directory`` and record their hashes."""
    builder = DERIVE.get(spec.engine)
    if builder is None:
        return
    try:
        names = builder(directory)
    except TingjiError as exc:
        raise ModelInstallError(f"{spec.id}: {exc}") from exc
    lines = []
    for name in names:
        path = directory / name
        lines.append(f"{path.stat().st_size} {sha256_file(path)} {name}")
        log(f"  {name}: built, {path.stat().st_size / 1e6:.1f} MB")
    (directory / DERIVED_MARKER).write_text("\n".join(lines) + "\n", encoding="utf-8")


def derived_files(spec: ModelSpec, directory: Path) -> list[ModelFile]:
    if spec.engine not in DERIVE:
        return []
    marker = directory / DERIVED_MARKER
    try:
        files = []
        for line in marker.read_text(encoding="utf-8").splitlines():
            size, digest, name = line.split(" ", 2)
            files.append(ModelFile(name, (), int(size), digest))
        return files
    except (OSError, ValueError, ModelInstallError) as exc:
        raise ModelCorruptError(f"model {spec.id} is damaged (its record of the files built at "
                                f"install is missing or unreadable: {exc}): "
                                f"{_install_hint(spec.id, force=True)}") from exc
