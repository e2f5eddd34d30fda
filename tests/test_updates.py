"""Signed updates: bundles refused when altered, unknown or old; A/B install with a health
check and automatic rollback; flashes killed at random moments; update/rollback cycles.

The test box's environment is this test run's own (registered under its lock hash), and its
model store is the installed one, so bundles carry code and a lock but no wheels."""

from __future__ import annotations

import hashlib
import json
import os
import random
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from device.settings import PROJECT_ROOT, Settings
from tests.webutil import stored_transcript
from updates import bundle as bundles
from updates.box import Box, UpdateFailed
from updates.slots import flash, recover, rollback, status

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    private, _ = bundles.write_keys(folder / "signing.key", folder / "public", "test")
    return private, folder / "public"


@pytest.fixture(scope="module")
def lock() -> str:
    return bundles.freeze()


@pytest.fixture(scope="module")
def make(keys, lock, tmp_path_factory):
    """make(version, source=PROJECT_ROOT, key=the test key) -> a signed bundle."""
    folder = tmp_path_factory.mktemp("bundles")

    def build(version: str, source: Path = PROJECT_ROOT, key: Path | None = None) -> Path:
        out = folder / f"tingji-{version}-{source.name}-{random.random():.6f}.tar"
        return bundles.build(out, version, key or keys[0], source=source, lock=lock,
                             public_keys=keys[1])

    return build


def variant(folder: Path, *, migrations: int = 0, broken_health: bool = False) -> Path:
    """A copy of the source with ``migrations`` schema migrations added (tables
    update_probe_0 …) and/or /health broken."""
    source = folder / "source"
    for path in bundles.code_files(PROJECT_ROOT):
        target = source / path.relative_to(PROJECT_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    for n in range(migrations):  # what a version that changes the schema ships
        (source / "device" / "migrations" / f"m{100 + n}_update_probe_{n}.py").write_text(
            '"""A table a newer version adds."""\n\n\n'
            f'def migrate(db):\n    db["update_probe_{n}"].create({{"x": int}})\n')
    if broken_health:
        system = source / "web" / "routers" / "system.py"
        system.write_text(system.read_text().replace(
            'status_code=200 if body["status"] == "ok" else 503', "status_code=500"))
    return source


@pytest.fixture
def box(tmp_path, lock, make, keys):
    """A box at version 1.0.0 (slot a) with a recording and its transcript in its data."""
    root = tmp_path / "box"
    (root / "envs").mkdir(parents=True)
    os.symlink(os.path.realpath(sys.prefix), root / "envs" / bundles.lock_hash(lock))
    os.symlink(Settings.load().models_dir, root / "models")
    box = Box(root)
    data = Settings(data_dir=box.data_dir, models_dir=box.models_dir)
    stored_transcript(data, title="会议记录 before the update")
    (box.data_dir / "audio").mkdir(parents=True, exist_ok=True)
    (box.data_dir / "audio" / "1.wav").write_bytes(
        (PROJECT_ROOT / "updates" / "healthcheck.wav").read_bytes())
    flash(box, make("1.0.0"), trust=keys[1], health_check=False)
    return box


def snapshot(box: Box) -> str:
    """The recordings, transcripts and audio, as one digest (byte-identical or not)."""
    digest = hashlib.sha256()
    with sqlite3.connect(box.database) as db:
        for table in ("recordings", "segments", "words", "revisions", "summaries"):
            for row in db.execute(f"SELECT * FROM {table} ORDER BY 1"):
                digest.update(repr(row).encode())
    for path in sorted((box.data_dir / "audio").iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def slot_digest(box: Box, name: str) -> str:
    digest = hashlib.sha256()
    folder = box.slots / name
    for path in sorted(folder.rglob("*")) if folder.exists() else []:
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def schema(box: Box) -> tuple[int, list[str]]:
    """(user_version, the probe tables) of the box's database."""
    with sqlite3.connect(box.database) as db:
        probes = [r[0] for r in db.execute("SELECT name FROM sqlite_master "
                                           "WHERE name LIKE 'update_probe_%' ORDER BY 1")]
        return db.execute("PRAGMA user_version").fetchone()[0], probes


def test_update_installs_into_the_other_slot_after_its_health_check(box, make):
    import numpy as np

    from device.store.voiceprints import Voiceprints

    with Voiceprints(box.data_dir / "voiceprints.db") as prints:  # personal data
        prints.enrol("李明", np.ones(256), seconds=30, enrolled_by="rita", recording_id=1,
                     recording_title="会议", speaker="说话人1", consent="")
        embedding = prints.all()[0].embedding
    before = snapshot(box)
    result = flash(box, make("1.1.0"))
    assert result["slot"] == "b" and box.active() == "b"
    # the update's backup of the database holds no voiceprint; the box's own copy stays
    backups = list((box.state_dir / "backups").iterdir())
    assert backups and not any(embedding in f.read_bytes() for f in backups)
    with Voiceprints(box.data_dir / "voiceprints.db") as prints:
        assert [p.name for p in prints.all()] == ["李明"]
    info = status(box)
    assert info["active"]["version"] == "1.1.0" and info["inactive"]["version"] == "1.0.0"
    assert info["floor"] == "1.1.0" and info["last_update"]["outcome"] == "installed"
    assert snapshot(box) == before
    log = (box.state_dir / "updates.log").read_text()
    assert "update to 1.1.0 installed; slot b active" in log
    shown = subprocess.run(  # what the System page shows, from the slot's own code
        [str(box.python("b")), "-c", "import json; from web.routers.admin import "
         "update_status; print(json.dumps(update_status()))"],
        env=box.environment("b"), cwd=box.slots / "b" / "code", capture_output=True, text=True,
        check=True)
    page = json.loads(shown.stdout)
    assert page["active"]["version"] == "1.1.0" and page["inactive"]["version"] == "1.0.0"
    assert rollback(box)["version"] == "1.0.0" and box.active() == "a"
    assert status(box)["last_update"]["outcome"] == "rolled back"
    assert snapshot(box) == before


def _flip(path: Path, offset: int, out: Path) -> Path:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    out.write_bytes(bytes(data))
    return out


def test_altered_unknown_and_old_bundles_are_refused_and_change_nothing(box, make, tmp_path):
    good = make("1.2.0")
    size = good.stat().st_size
    with tarfile.open(good) as tar:
        members = {m.name: m for m in tar.getmembers()}
    code = members["payload/code/device/store/__init__.py"]
    offsets = {
        "payload": code.offset_data + 100,
        "payload tar header": code.offset + 10,
        "manifest": members["manifest.json"].offset_data + 20,
        "tar padding": code.offset_data + code.size + 1 if code.size % 512 else 0,
        "end of archive": size - bundles.TRAILER - 100,
        "signature": size - bundles.TRAILER + 5,
        "key id": size - bundles.TRAILER + 64 + 3,
        "magic": size - 2,
    }
    other_private, _ = bundles.write_keys(tmp_path / "other.key", tmp_path / "other", "other")
    refused = {name: _flip(good, offset, tmp_path / f"flipped-{i}.tar")
               for i, (name, offset) in enumerate(offsets.items())}
    refused["unknown key"] = make("1.2.0", key=other_private)
    refused["equal version"] = make("1.0.0")
    refused["older version"] = make("0.9.9")
    refused["not a bundle"] = tmp_path / "notes.tar"
    refused["not a bundle"].write_text("just some text, not a bundle at all\n" * 10)
    refused["missing"] = tmp_path / "missing.tar"
    slots = {name: slot_digest(box, name) for name in ("a", "b")}
    data = snapshot(box)
    for name, bundle in refused.items():
        with pytest.raises((bundles.BundleError, UpdateFailed)) as error:
            flash(box, bundle)
        assert str(error.value), name
        assert box.active() == "a", name
        assert {n: slot_digest(box, n) for n in ("a", "b")} == slots, name
    assert snapshot(box) == data
    assert "unknown key" in _message(box, refused["unknown key"])
    assert "not newer than 1.0.0" in _message(box, refused["older version"])
    assert "no such bundle" in _message(box, refused["missing"])
    assert flash(box, good)["version"] == "1.2.0"  # the unaltered bundle is fine


def _message(box: Box, bundle: Path) -> str:
    try:
        flash(box, bundle)
    except (bundles.BundleError, UpdateFailed) as exc:
        return str(exc)
    raise AssertionError(f"{bundle} was accepted")


def test_an_explicit_logged_override_allows_a_downgrade(box, make):
    flash(box, make("1.3.0"), health_check=False)
    result = flash(box, make("1.0.1"), allow_downgrade=True, health_check=False)
    assert result["version"] == "1.0.1"
    assert "OVERRIDE: installing 1.0.1 over the floor 1.3.0" in (
        box.state_dir / "updates.log").read_text()


def test_a_failed_health_check_rolls_back_and_restores_the_database(box, make, tmp_path):
    before, schema_before = snapshot(box), schema(box)
    broken = make("2.0.0", source=variant(tmp_path, migrations=1, broken_health=True))
    with pytest.raises(UpdateFailed, match="/health did not answer 200"):
        flash(box, broken)
    assert box.active() == "a" and status(box)["last_update"]["outcome"] == "failed"
    assert schema(box) == schema_before and schema_before[1] == []  # the migration undone
    assert snapshot(box) == before
    assert not box.journal.exists()


def test_flashes_killed_at_random_moments_leave_a_complete_slot_and_intact_data(
        box, make, tmp_path):
    """Each bundle adds a schema migration, so a kill between migration and switch must
    restore the database."""
    before = snapshot(box)
    rng = random.Random(7)
    started = time.monotonic()
    base_version = schema(box)[0]
    flash_time = _timed_flash(box, make("1.1.0"))  # one uninterrupted flash, to aim the kills
    outcomes = []
    for i in range(20):
        bundle = make(f"1.2.{i}", source=variant(tmp_path / str(i), migrations=i + 1))
        version_before = box.slot_info(box.active())["version"]
        schema_before = schema(box)
        process = subprocess.Popen(
            [sys.executable, "-m", "updates", "flash", str(bundle), "--target", str(box.root)],
            cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        if i == 18 and True not in outcomes:
            pass  # at once: before the switch for sure
        elif i == 19 and False not in outcomes:
            # Later flashes run slower than the timed one (more migrations, a slower
            # machine): make sure one kill lands after the switch.
            _wait_for_switch(box, version_before, process)
        else:
            time.sleep(rng.uniform(0.0, flash_time * 1.2))
        process.send_signal(signal.SIGKILL)
        process.wait()
        recover(box)  # what the next start, flash or rollback does first
        active = box.active()
        assert active in ("a", "b") and box.slot_info(active) is not None, i
        assert (box.slots / active / "code" / "device" / "store" / "__init__.py").is_file()
        version = box.slot_info(active)["version"]
        if version == version_before:  # killed before the switch: the database as it was
            assert schema(box) == schema_before, i
        else:  # after it: the new slot, with its migrations applied
            assert version == f"1.2.{i}", i
            assert schema(box) == (base_version + i + 1,
                                   sorted(f"update_probe_{n}" for n in range(i + 1))), i
        assert snapshot(box) == before, i
        with sqlite3.connect(box.database) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert not box.journal.exists()
        outcomes.append(version == version_before)
    assert time.monotonic() - started < 600
    assert True in outcomes and False in outcomes  # kills landed before and after the switch


def _wait_for_switch(box: Box, version_before: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        active = box.slot_info(box.active())
        if active is not None and active["version"] != version_before:
            return
        time.sleep(0.02)


def _timed_flash(box: Box, bundle: Path) -> float:
    t0 = time.monotonic()
    flash(box, bundle)
    return time.monotonic() - t0


def test_ten_update_and_rollback_cycles_keep_recordings_byte_identical(box, make):
    before = snapshot(box)
    audio = (box.data_dir / "audio" / "1.wav").read_bytes()
    for i in range(10):
        result = flash(box, make(f"3.{i}.0"))
        assert box.slot_info(box.active())["version"] == f"3.{i}.0" == result["version"]
        rollback(box)
        assert box.slot_info(box.active())["version"] != f"3.{i}.0"
        assert snapshot(box) == before
    assert (box.data_dir / "audio" / "1.wav").read_bytes() == audio


def test_a_full_disk_during_install_changes_nothing(box, make):
    bundle = make("4.0.0")
    slots = {name: slot_digest(box, name) for name in ("a", "b")}
    data = snapshot(box)

    def small_files():  # writes past 40 kB fail as on a full disk (EFBIG, like ENOSPC)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))

    result = subprocess.run(
        [sys.executable, "-m", "updates", "flash", str(bundle), "--target", str(box.root)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, preexec_fn=small_files, timeout=300)
    assert result.returncode == 1 and "disk is full" in result.stderr, result.stderr
    assert box.active() == "a"
    assert {n: slot_digest(box, n) for n in ("a", "b")} == slots
    assert snapshot(box) == data
    assert not list(box.slots.glob(".staging-*"))
    assert json.loads((box.state_dir / "state.json").read_text())["last"]["outcome"] == "failed"


def test_a_signed_model_bundle_installs_into_the_model_store(box, keys, tmp_path):
    from models.bundles import make_bundle

    model = tmp_path / "probe-model"
    model.mkdir()
    (model / "config.json").write_text('{"probe": true}')
    tar = make_bundle(model, tmp_path / "probe.tar", model_id="probe-model", kind="asr",
                      engine="ctranslate2-whisper", languages=["en"])
    signed = bundles.build(tmp_path / "probe-signed.tar", "1.0.0", keys[0], kind="model",
                           model_bundle=tar)
    store = tmp_path / "store"
    os.unlink(box.models_dir)
    store.mkdir()
    os.symlink(store, box.models_dir)
    result = flash(box, signed)
    assert (store / "probe-model" / "config.json").read_text() == '{"probe": true}'
    assert result["version"] == "1.0.0"
    tampered = _flip(signed, 700, tmp_path / "probe-flipped.tar")
    with pytest.raises(bundles.BundleError):
        flash(box, tampered)
    # A model has a version floor: a signed 1.0.0 cannot come back over 2.0.0 unasked.
    (model / "config.json").write_text('{"probe": 2}')
    newer = bundles.build(tmp_path / "probe-2.tar", "2.0.0", keys[0], kind="model",
                          model_bundle=make_bundle(model, tmp_path / "probe2.tar",
                                                   model_id="probe-model", kind="asr",
                                                   engine="ctranslate2-whisper",
                                                   languages=["en"]))
    assert flash(box, newer)["version"] == "2.0.0"
    with pytest.raises(UpdateFailed, match="model probe-model 1.0.0 is not newer than 2.0.0"):
        flash(box, signed)
    assert (store / "probe-model" / "config.json").read_text() == '{"probe": 2}'
    assert flash(box, signed, allow_downgrade=True)["version"] == "1.0.0"
    assert "OVERRIDE: installing model probe-model 1.0.0" in (
        box.state_dir / "updates.log").read_text()


def test_a_bundle_swapped_after_its_signature_check_installs_nothing_of_it(make, keys,
                                                                          tmp_path):
    """The check hashed one open of the bundle and then opened it again by path to read the
    manifest and extract: renaming another bundle over the path in between installed the
    other one (4 of 4 runs).  Now every read is of the private copy that was checked."""
    signed = make("1.5.0")
    other_key, _ = bundles.write_keys(tmp_path / "other.key", tmp_path / "other", "evil")
    evil = make("9.9.9", source=variant(tmp_path, broken_health=True), key=other_key)
    handed_in = tmp_path / "incoming.tar"
    shutil.copy(signed, handed_in)
    copy = tmp_path / "private" / "bundle.tar"
    copy.parent.mkdir(mode=0o700)
    bundle = bundles.open_bundle(handed_in, bundles.trusted_keys(keys[1]), copy)
    os.replace(evil, handed_in)  # the swap, after the check
    bundles.extract(bundle, tmp_path / "slot")
    health = (tmp_path / "slot" / "code" / "web" / "routers" / "system.py").read_text()
    assert bundle.version == "1.5.0" and 'status_code=500' not in health
    assert bundle.path == copy and copy.stat().st_mode & 0o077 == 0
    # A refused bundle leaves no copy behind.
    with pytest.raises(bundles.BundleError, match="unknown key"):
        bundles.open_bundle(handed_in, bundles.trusted_keys(keys[1]), tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def test_the_first_flash_into_an_empty_folder_leaves_a_working_box(make, keys, lock, tmp_path):
    """`make flash` into an empty TARGET stopped at the health check (503: TARGET/models was
    empty).  Now the flash installs the default models there from their packages, and the
    health check then finds /health ok and transcribes its clip."""
    root = tmp_path / "new-box"
    (root / "envs").mkdir(parents=True)  # the environment is not what this tests
    os.symlink(os.path.realpath(sys.prefix), root / "envs" / bundles.lock_hash(lock))
    box = Box(root)
    result = flash(box, make("1.0.0"), trust=keys[1])  # with the health check
    assert result["slot"] == "a" and box.active() == "a"
    from models.store import load_manifest, status

    defaults = [spec for spec in load_manifest().values() if spec.default]
    assert defaults and all(status(spec, box.models_dir) == "installed" for spec in defaults)
    assert "installing the default models" in (box.state_dir / "updates.log").read_text()


def test_a_child_whose_parent_died_before_it_could_ask_to_die_with_it_dies_at_once():
    """``die_with_parent``'s preexec checks that the parent is still the process that
    forked it: run in a process forked by another, it kills itself instead of living on
    (the orphaned migration of a flash killed at the fork)."""
    import os
    import signal

    from device.libc import die_with_parent

    preexec = die_with_parent(signal.SIGKILL)  # made here: this process is the parent
    middle = os.fork()
    if middle == 0:  # another process, as an orphan's new parent would be
        child = os.fork()
        if child == 0:
            preexec()
            os._exit(0)  # not reached
        _, status = os.waitpid(child, 0)
        os._exit(0 if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL else 1)
    _, status = os.waitpid(middle, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    own = os.fork()
    if own == 0:  # forked by the process that made it: lives on
        preexec()
        os._exit(0)
    _, status = os.waitpid(own, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
