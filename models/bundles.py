"""Model bundles: a model carried on a USB stick as one tar file, installed with no network.

A bundle is a tar (optionally gzip) holding bundle.toml (see ``models.store.bundle_spec``)
and the model's files.  Installing verifies every file while extracting into a temporary
directory and renames it into place; the hashes protect against a damaged copy, and
authenticity (signatures) is the update mechanism's job.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path

from device.errors import is_disk_full
from models.store import (
    BUNDLE_MANIFEST,
    BUNDLE_SOURCE,
    CHUNK,
    SOURCE_MARKER,
    ModelFile,
    ModelInstallError,
    ModelSpec,
    bundle_spec,
    ensure_space,
    fsync_tree,
    load_manifest,
    remove_stale_temporaries,
    sha256_file,
    status,
    swap_into_place,
)


def make_bundle(
    model_dir: Path, out: Path, *, model_id: str, kind: str, engine: str,
    languages: Iterable[str], description: str = "",
) -> Path:
    """Pack a model directory into a bundle that ``install_bundle`` accepts."""
    import io
    import tarfile

    names = sorted(
        p.name for p in model_dir.iterdir() if p.is_file() and not p.name.startswith(".")
    )
    lines = [
        "[model]", f"id = {_toml(model_id)}", f"kind = {_toml(kind)}",
        f"engine = {_toml(engine)}",
        f"languages = [{', '.join(_toml(x) for x in languages)}]",
        f"description = {_toml(description)}",
    ]
    for name in names:
        lines += ["[[model.file]]", f"name = {_toml(name)}",
                  f"size = {(model_dir / name).stat().st_size}",
                  f"sha256 = {_toml(sha256_file(model_dir / name))}"]
    manifest = ("\n".join(lines) + "\n").encode()
    with tarfile.open(out, "w") as tar:
        info = tarfile.TarInfo(BUNDLE_MANIFEST)
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
        for name in names:
            tar.add(model_dir / name, arcname=name)
    return out


def _toml(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def read_bundle_spec(bundle: Path) -> ModelSpec:
    """The model a bundle file holds, from its bundle.toml (nothing is installed)."""
    import tarfile

    try:
        with tarfile.open(bundle) as tar:
            text = _member(tar, BUNDLE_MANIFEST, None, bundle).read(MANIFEST_MAX).decode()
        return bundle_spec(tomllib.loads(text))
    except (tarfile.TarError, OSError, KeyError, AttributeError, UnicodeDecodeError,
            tomllib.TOMLDecodeError, TypeError, ValueError) as exc:
        raise ModelInstallError(f"{bundle}: not a model bundle ({exc})") from exc


def install_bundle(
    bundle: Path, models_dir: Path, *, force: bool = False,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> Path:
    """Install a model from a local bundle file: verified, atomic, never from the network."""
    import tarfile

    if not bundle.is_file():
        raise ModelInstallError(f"{bundle}: no such bundle file")
    try:
        tar = tarfile.open(bundle)
    except (tarfile.TarError, OSError) as exc:
        raise ModelInstallError(f"{bundle}: not a model bundle ({exc})") from exc
    with tar:
        try:
            text = _member(tar, BUNDLE_MANIFEST, None, bundle).read(MANIFEST_MAX).decode()
            spec = bundle_spec(tomllib.loads(text))
        except (KeyError, AttributeError, UnicodeDecodeError, tomllib.TOMLDecodeError,
                TypeError, ValueError) as exc:
            raise ModelInstallError(f"{bundle}: not a model bundle (bad {BUNDLE_MANIFEST}: "
                                    f"{exc})") from exc
        _check_members(tar, spec, bundle)
        if spec.id in load_manifest():
            raise ModelInstallError(f"{bundle}: model id {spec.id} belongs to a packaged model; "
                                    "give the bundle another id")
        models_dir.mkdir(parents=True, exist_ok=True)
        if not force and status(spec, models_dir) == "installed" and (
            (models_dir / spec.id / BUNDLE_MANIFEST).read_text(encoding="utf-8") == text
        ):
            return models_dir / spec.id
        ensure_space(models_dir, spec.id, needed=spec.size + (64 << 20))
        remove_stale_temporaries(models_dir, spec.id)
        staging = Path(tempfile.mkdtemp(prefix=f".{spec.id}.installing-", dir=models_dir))
        staging.chmod(0o755)
        try:
            for file in spec.sources[0].files:
                stream = _member(tar, file.name, file.size, bundle)
                _copy_checked(stream, staging / file.name, file, bundle)
            (staging / BUNDLE_MANIFEST).write_text(text, encoding="utf-8")
            (staging / SOURCE_MARKER).write_text(BUNDLE_SOURCE + "\n", encoding="utf-8")
            fsync_tree(staging)
            swap_into_place(staging, models_dir, spec.id)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    log(f"{spec.id}: installed from {bundle} ({spec.size / 1e6:.0f} MB, sha256 verified)")
    return models_dir / spec.id


MANIFEST_MAX = 1 << 20


def _check_members(tar, spec: ModelSpec, origin: Path) -> None:
    """Only the manifest and the files it lists, each once, each a regular file: no links,
    devices or folders, nothing extra."""
    allowed = {BUNDLE_MANIFEST, *(f.name for f in spec.sources[0].files)}
    seen: set[str] = set()
    for member in tar.getmembers():
        if not member.isfile() or member.name not in allowed or member.name in seen:
            raise ModelInstallError(f"{origin}: unexpected member {member.name!r} (a bundle "
                                    "holds bundle.toml and the regular files it lists)")
        seen.add(member.name)


def _member(tar, name: str, size: int | None, origin: Path):
    """A member to read: a regular file whose size in the archive is the size its manifest
    gives (the manifest itself: at most MANIFEST_MAX), checked before a byte is read."""
    try:
        member = tar.getmember(name)
    except KeyError:
        what = "is listed but not included" if size is not None else "is missing"
        raise ModelInstallError(f"{origin}: not a model bundle ({name} {what})") from None
    if not member.isfile():
        raise ModelInstallError(f"{origin}: {name} is not a regular file")
    if (member.size > MANIFEST_MAX) if size is None else (member.size != size):
        raise ModelInstallError(f"{origin}: {name} is {member.size:,} bytes in the archive, "
                                "not what its manifest allows")
    return tar.extractfile(member)


def _copy_checked(stream, destination: Path, file: ModelFile, origin: Path) -> None:
    digest, size = hashlib.sha256(), 0
    try:
        with open(destination, "wb") as out:
            while size <= file.size and (block := stream.read(CHUNK)):  # a byte budget
                digest.update(block)
                size += len(block)
                out.write(block)
    except OSError as exc:
        if is_disk_full(exc):
            raise ModelInstallError(f"disk full while installing {file.name}") from exc
        raise
    if size != file.size or digest.hexdigest() != file.sha256:
        raise ModelInstallError(f"{origin}: {file.name} is damaged (size or sha256 differ "
                                "from the bundle's manifest)")
