"""Update bundles: build, sign, open and verify.

A bundle is an uncompressed tar holding ``manifest.json`` (kind, version, and the sha256 and
size of every payload file) and ``payload/…``, followed by a trailer: an ed25519 signature of
the SHA-256 of every byte before it, the signing key's id and a magic string.  A byte changed
anywhere (tar headers and padding included) breaks the signature; the files are checked
against the signed manifest again as they are extracted.  Firmware bundles carry the project's
code (``payload/code/``: the packages, the model manifest, the schema migrations inside
``device/store.py``), the locked dependency set (``payload/requirements.lock``) and its wheels
(``payload/wheels/``); model bundles carry one model as made by ``models make-bundle``.

    >>> private, public = generate_keypair()
    >>> key_id(public) == key_id(public)
    True
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from device.errors import TingjiError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
KEYS_DIR = Path(__file__).resolve().parent / "keys"
FORMAT = 1
MAGIC = b"TJBUNDL1"
TRAILER = 64 + 16 + len(MAGIC)  # signature, key id (hex), magic
DOMAIN = b"tingji update bundle v1\0"
CODE_PATHS = ("device", "models", "web", "updates", "scripts", ".ci", "pyproject.toml",
              "Makefile", "README.md", "docs")
SKIP = re.compile(r"(^|/)(__pycache__|\.pytest_cache|\.ruff_cache|weights|\.downloads)(/|$)"
                  r"|\.pyc$|\.part$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")


class BundleError(TingjiError):
    """A bundle that must not be installed; the message says why."""


# -- keys --------------------------------------------------------------------------------------

def generate_keypair() -> tuple[bytes, bytes]:
    """(private key PEM, public key as base64 of its 32 raw bytes)."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    raw = private.public_key().public_bytes(serialization.Encoding.Raw,
                                            serialization.PublicFormat.Raw)
    return pem, base64.b64encode(raw) + b"\n"


def key_id(public: bytes) -> str:
    return hashlib.sha256(base64.b64decode(public.strip())).hexdigest()[:16]


def write_keys(private_path: Path, public_dir: Path, name: str) -> tuple[Path, Path]:
    """Create a signing key pair: the private key (mode 0600, refused if it exists) and the
    public key in ``public_dir`` (the firmware's trusted keys)."""
    if private_path.exists():
        raise BundleError(f"{private_path} exists: refusing to overwrite a signing key")
    pem, public = generate_keypair()
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_dir.mkdir(parents=True, exist_ok=True)
    public_path = public_dir / f"{name}.pub"
    public_path.write_bytes(public)
    return private_path, public_path


def trusted_keys(directory: Path) -> dict[str, Ed25519PublicKey]:
    keys = {}
    for path in sorted(directory.glob("*.pub")):
        public = path.read_bytes()
        keys[key_id(public)] = Ed25519PublicKey.from_public_bytes(base64.b64decode(public))
    return keys


def _load_private(path: Path) -> tuple[Ed25519PrivateKey, str]:
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise BundleError(f"cannot read the signing key {path}: {exc}") from exc
    if not isinstance(private, Ed25519PrivateKey):
        raise BundleError(f"{path} is not an ed25519 key")
    raw = private.public_key().public_bytes(serialization.Encoding.Raw,
                                            serialization.PublicFormat.Raw)
    return private, key_id(base64.b64encode(raw))


# -- versions ----------------------------------------------------------------------------------

def parse_version(text: str) -> tuple[int, int, int]:
    if not _VERSION.match(text or ""):
        raise BundleError(f"version {text!r} is not of the form X.Y.Z")
    major, minor, patch = (int(p) for p in text.split("."))
    return major, minor, patch


# -- building ----------------------------------------------------------------------------------

def code_files(source: Path) -> list[Path]:
    """The files of the firmware: the packages and what builds and runs them."""
    files = []
    for name in CODE_PATHS:
        path = source / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += [p for p in sorted(path.rglob("*"))
                      if p.is_file() and not SKIP.search(p.relative_to(source).as_posix())]
    return files


def freeze(python: Path = Path(sys.executable)) -> str:
    """The locked dependency set of an environment (pins, the project itself excluded)."""
    out = subprocess.run([str(python), "-m", "pip", "freeze", "--exclude-editable",
                          "--disable-pip-version-check"], capture_output=True, text=True,
                         check=True).stdout
    pins = sorted(line.strip() for line in out.splitlines()
                  if "==" in line and not line.lower().startswith("tingji=="))
    return "\n".join(pins) + "\n"


def download_wheels(lock: str, destination: Path, find_links: Path | None = None) -> None:
    """A wheel of every pin in ``destination`` (fetched, or built here from a source
    release), so the box installs offline and never compiles."""
    destination.mkdir(parents=True, exist_ok=True)
    lock_file = destination / "requirements.lock"
    lock_file.write_text(lock)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
               "-q", "-w", str(destination), "-r", str(lock_file)]
    if find_links:
        command += ["--find-links", str(find_links)]
    try:
        subprocess.run(command, check=True)
    finally:
        lock_file.unlink(missing_ok=True)


def build(out: Path, version: str, private_key: Path, *, kind: str = "firmware",
          source: Path = PROJECT_ROOT, lock: str | None = None, wheels: Path | None = None,
          model_bundle: Path | None = None, public_keys: Path | None = None,
          notes: str = "") -> Path:
    """Write a signed bundle to ``out``.

    Firmware: the code under ``source`` (with the trusted public keys from ``public_keys``,
    default the source's own), ``lock`` (default: this environment's) and the wheels in
    ``wheels`` (None: a bundle for boxes that already have this exact dependency set).
    Model: ``model_bundle``, a tar from ``python -m models make-bundle``.
    """
    parse_version(version)
    signer, signer_id = _load_private(private_key)
    entries: list[tuple[str, Path | bytes]] = []
    if kind == "firmware":
        for path in code_files(source):
            relative = path.relative_to(source).as_posix()
            if relative.startswith("updates/keys/") and public_keys is not None:
                continue
            entries.append((f"payload/code/{relative}", path))
        if public_keys is not None:
            entries += [(f"payload/code/updates/keys/{p.name}", p)
                        for p in sorted(public_keys.glob("*.pub"))]
        lock = lock if lock is not None else freeze()
        entries.append(("payload/requirements.lock", lock.encode()))
        if wheels is not None:
            entries += [(f"payload/wheels/{p.name}", p) for p in sorted(wheels.glob("*.whl"))]
    elif kind == "model":
        if model_bundle is None:
            raise BundleError("a model bundle needs the model's tar (models make-bundle)")
        entries.append(("payload/model.tar", model_bundle))
    else:
        raise BundleError(f"unknown bundle kind {kind!r}")

    files = {}
    for name, content in entries:
        digest, size = _digest(content)
        files[name] = {"sha256": digest, "size": size}
    manifest = {"format": FORMAT, "kind": kind, "version": version,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "python": f"{sys.version_info.major}.{sys.version_info.minor}",
                "machine": os.uname().machine, "notes": notes,
                "lock_sha256": hashlib.sha256(lock.encode()).hexdigest() if lock else None,
                "files": files}
    manifest_bytes = json.dumps(manifest, indent=1, sort_keys=True).encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".part")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, "manifest.json", manifest_bytes)
        for name, content in entries:
            if isinstance(content, bytes):
                _add_bytes(tar, name, content)
            else:
                info = tar.gettarinfo(str(content), arcname=name)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode = 0o755 if os.access(content, os.X_OK) else 0o644
                with open(content, "rb") as f:
                    tar.addfile(info, f)
    digest, _ = _digest(partial)
    with open(partial, "ab") as f:
        f.write(signer.sign(DOMAIN + bytes.fromhex(digest)) + signer_id.encode() + MAGIC)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, out)
    return out


def _digest(content: Path | bytes) -> tuple[str, int]:
    if isinstance(content, bytes):
        return hashlib.sha256(content).hexdigest(), len(content)
    digest = hashlib.sha256()
    with open(content, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest(), content.stat().st_size


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
    tar.addfile(info, io.BytesIO(data))


# -- opening and verifying ---------------------------------------------------------------------

@dataclass(frozen=True)
class Bundle:
    path: Path
    """The verified private copy: every later read is of these bytes."""
    manifest: dict
    key_id: str
    origin: Path
    """Where the bundle was handed in (for logs only: it may have changed since)."""

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def kind(self) -> str:
        return self.manifest["kind"]


def open_bundle(path: Path, keys: dict[str, Ed25519PublicKey], private_copy: Path) -> Bundle:
    """Copy a bundle to ``private_copy`` (a new file only its owner can touch) while hashing
    it from one open file, check the signature over every byte of that copy against the
    trusted ``keys``, and read its manifest; the payload is checked file by file as it is
    extracted, from the copy.  Reading the given path again later would let whoever can
    write there swap in other bytes after the check.  A refused bundle leaves no copy."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: no such bundle file")
    try:
        digest, trailer = _copy_and_hash(path, private_copy)
        signer = _check_signature(path, digest, trailer, keys)
        manifest = _manifest(path, private_copy)
    except BaseException:
        private_copy.unlink(missing_ok=True)
        raise
    return Bundle(private_copy, manifest, signer, path)


def _check_signature(path: Path, digest, trailer: bytes,
                     keys: dict[str, Ed25519PublicKey]) -> str:
    """The id of the trusted key that signed the bytes hashed into ``digest``."""
    signature, signer, magic = trailer[:64], trailer[64:80].decode("ascii", "replace"), \
        trailer[80:]
    if magic != MAGIC:
        raise BundleError(f"{path}: not a tingji bundle (no signature trailer)")
    key = keys.get(signer)
    if key is None:
        raise BundleError(f"{path}: signed by an unknown key ({signer}); this box trusts "
                          + (", ".join(keys) or "no keys (run `make keys` and commit the key)"))
    try:
        key.verify(signature, DOMAIN + digest.digest())
    except InvalidSignature as exc:
        raise BundleError(f"{path}: the signature does not match: the bundle was altered "
                          "or damaged") from exc
    return signer


def _manifest(path: Path, copy: Path) -> dict:
    try:
        with tarfile.open(copy, "r:") as tar:
            manifest = json.loads(_member_bytes(tar, "manifest.json", 1 << 24))
    except (tarfile.TarError, OSError, ValueError, KeyError) as exc:
        raise BundleError(f"{path}: not a tingji bundle ({exc})") from exc
    if manifest.get("format") != FORMAT or manifest.get("kind") not in ("firmware", "model"):
        raise BundleError(f"{path}: unsupported bundle format or kind")
    parse_version(manifest.get("version", ""))
    return manifest


def _copy_and_hash(path: Path, copy: Path) -> tuple:
    """sha256 of all but the trailer, and the trailer, of the bytes copied from one open
    file into ``copy`` (created 0600, never an existing file)."""
    fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(path, "rb") as source, os.fdopen(fd, "wb") as out:
        size = os.fstat(source.fileno()).st_size
        if size <= TRAILER:
            raise BundleError(f"{path}: not a tingji bundle (too short)")
        digest, left = hashlib.sha256(), size - TRAILER
        while left:
            block = source.read(min(left, 1 << 20))
            if not block:
                raise BundleError(f"{path}: the file shrank while it was read")
            digest.update(block)
            out.write(block)
            left -= len(block)
        trailer = source.read(TRAILER)
        out.write(trailer)
        out.flush()
        os.fsync(out.fileno())
    if len(trailer) != TRAILER:
        raise BundleError(f"{path}: the file shrank while it was read")
    return digest, trailer


def _member_bytes(tar: tarfile.TarFile, name: str, limit: int) -> bytes:
    member = tar.getmember(name)
    if not member.isfile() or member.size > limit:
        raise ValueError(f"{name} is not a small regular file")
    return tar.extractfile(member).read()


def extract(bundle: Bundle, destination: Path) -> None:
    """Extract the payload into ``destination`` (which must be new and empty), checking that
    every member is a regular file listed in the signed manifest with its size and sha256,
    and that nothing listed is missing.  Each file is fsync'd."""
    expected = bundle.manifest["files"]
    seen = set()
    destination.mkdir(parents=True, exist_ok=False)
    try:
        with tarfile.open(bundle.path, "r:") as tar:
            for member in tar:
                if member.name == "manifest.json":
                    continue
                name = PurePosixPath(member.name)
                if (member.name not in expected or not member.isfile() or name.is_absolute()
                        or ".." in name.parts or member.name in seen):
                    raise BundleError(f"{bundle.path}: unexpected member {member.name!r}")
                seen.add(member.name)
                target = destination / Path(*name.parts[1:])  # strip "payload/"
                target.parent.mkdir(parents=True, exist_ok=True)
                digest, size = hashlib.sha256(), 0
                source = tar.extractfile(member)
                with open(target, "wb") as out:
                    while block := source.read(1 << 20):
                        digest.update(block)
                        size += len(block)
                        out.write(block)
                    out.flush()
                    os.fsync(out.fileno())
                if member.mode & 0o111:
                    target.chmod(0o755)
                want = expected[member.name]
                if size != want["size"] or digest.hexdigest() != want["sha256"]:
                    raise BundleError(f"{bundle.path}: {member.name} does not match its "
                                      "signed hash: the bundle was altered or damaged")
    except (tarfile.TarError, EOFError) as exc:
        raise BundleError(f"{bundle.path}: damaged archive ({exc})") from exc
    missing = set(expected) - seen
    if missing:
        raise BundleError(f"{bundle.path}: {len(missing)} listed file(s) missing, e.g. "
                          f"{sorted(missing)[0]}")


def lock_hash(lock: str) -> str:
    return hashlib.sha256(lock.encode()).hexdigest()[:16]

