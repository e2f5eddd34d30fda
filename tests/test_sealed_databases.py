"""Encrypted databases: on a box with a key the voiceprints (biometric data) are kept in an
SQLCipher database under a key sealed to the box key, readable only while it is unlocked;
a database kept in the clear before the key existed is encrypted, crash-safely."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from device import encryption, unlock
from device.databases import open_store
from device.pipeline import delete_recording
from device.store.voiceprints import Voiceprints
from tests.crashes import killed_at_each_step
from tests.webutil import make_box

PASSPHRASE = "a long unlock passphrase"
NAME = "欧阳明远"


@pytest.fixture
def memory_runtime(monkeypatch):
    monkeypatch.delenv("TINGJI_RUNTIME_DIR", raising=False)
    if unlock.file_system(unlock.runtime_dir()) not in unlock.MEMORY_FILE_SYSTEMS:
        pytest.skip("no tmpfs to keep the unlocked key in")


def _voice() -> np.ndarray:
    vector = np.random.default_rng(11).standard_normal(256).astype(np.float32)
    return vector / np.linalg.norm(vector)


def _enrol(prints: Voiceprints, recording_id: int | None = None) -> None:
    voiceprint = prints.enrol(NAME, _voice(), seconds=40.0, enrolled_by="ana",
                              recording_id=recording_id, recording_title="董事会访谈",
                              speaker="说话人1", consent="本人同意")
    if recording_id is not None:
        prints.record_uses(recording_id, [(voiceprint.id, NAME + "?", 0.91)])


def _files(settings) -> bytes:
    """Every byte of the voiceprints' database files, as someone holding the disk reads them."""
    path = settings.voiceprints_path
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*") if p.is_file())


def _secrets_in(data: bytes) -> list[str]:
    looked_for = {"name": NAME.encode(), "title": "董事会访谈".encode(),
                  "embedding": _voice().astype("<f4").tobytes()[:32]}
    return [what for what, needle in looked_for.items() if needle in data]


def _names(settings) -> list[str]:
    """The names the voiceprints' database holds, read without changing it."""
    path = settings.voiceprints_path
    key = None if encryption.in_the_clear(path) else encryption.database_key(settings,
                                                                             "voiceprints")
    with Voiceprints(path, key) as prints:
        return [p.name for p in prints.all()]


def _voiceprints_then_the_key(settings) -> None:
    """A voice remembered on a box without a key; then the key made, and the box unlocked."""
    with Voiceprints(settings.voiceprints_path) as prints:
        _enrol(prints)
    encryption.init(settings, PASSPHRASE)
    encryption.unlock_box(settings, passphrase=PASSPHRASE)


def test_voiceprints_on_a_box_with_a_key_are_encrypted_and_read_only_unlocked(
        settings, memory_runtime, tmp_path):
    encryption.init(settings, PASSPHRASE)
    encryption.unlock_box(settings, passphrase=PASSPHRASE)
    try:
        with Voiceprints.of(settings) as prints:
            _enrol(prints, recording_id=3)
        assert _secrets_in(_files(settings)) == []
        with pytest.raises(sqlite3.DatabaseError):  # not an SQLite file to anyone else
            sqlite3.connect(settings.voiceprints_path).execute(
                "SELECT * FROM sqlite_master").fetchall()
        with Voiceprints.of(settings) as prints:  # the admin's backup: encrypted as well
            prints.backup(tmp_path / "backup.db")
        assert _secrets_in((tmp_path / "backup.db").read_bytes()) == []
        with Voiceprints(tmp_path / "backup.db",
                         encryption.database_key(settings, "voiceprints")) as copy:
            assert [p.name for p in copy.all()] == [NAME]
        box = make_box(settings)
        assert NAME in box.admin.client.get("/admin/voiceprints").text
        encryption.lock_box(settings)
        with pytest.raises(encryption.BoxLocked):
            Voiceprints.of(settings)
        locked = box.admin.client.get("/admin/voiceprints")
        assert locked.status_code == 423 and "locked" in locked.text and NAME not in locked.text
        encryption.unlock_box(settings, passphrase=PASSPHRASE)
        with Voiceprints.of(settings) as prints:
            assert [(p.name, p.recording_title) for p in prints.all()] == [(NAME, "董事会访谈")]
    finally:
        encryption.lock_box(settings)


def test_a_recording_deleted_while_locked_leaves_the_voiceprints_at_the_next_opening(
        settings, memory_runtime):
    encryption.init(settings, PASSPHRASE)
    encryption.unlock_box(settings, passphrase=PASSPHRASE)
    try:
        with open_store(settings) as store:
            recording = store.create_recording("董事会访谈", "interview.wav")
            with Voiceprints.of(settings, store) as prints:
                _enrol(prints, recording_id=recording.id)
                assert prints.recordings() == {recording.id}
            encryption.lock_box(settings)
            delete_recording(store, settings, recording.id)  # no secret needed
            encryption.unlock_box(settings, passphrase=PASSPHRASE)
            with Voiceprints.of(settings, store) as prints:
                assert prints.recordings() == set()
                [voiceprint] = prints.all()
                assert voiceprint.recording_id is None and prints.uses(voiceprint.id) == []
    finally:
        encryption.lock_box(settings)


def test_voiceprints_kept_in_the_clear_are_encrypted_when_the_key_is_made(
        settings, memory_runtime):
    with Voiceprints(settings.voiceprints_path) as prints:  # a box without a key
        _enrol(prints)
    assert "name" in _secrets_in(_files(settings))
    encryption.init(settings, PASSPHRASE)  # the key is made: no secret needed to seal
    with open_store(settings) as store:
        encryption.seal_existing(settings, store)
    assert not encryption.in_the_clear(settings.voiceprints_path)
    assert _secrets_in(_files(settings)) == []
    assert not settings.voiceprints_path.with_name("voiceprints.db.sealing").exists()
    encryption.unlock_box(settings, passphrase=PASSPHRASE)
    try:
        assert _names(settings) == [NAME]
    finally:
        encryption.lock_box(settings)


@pytest.mark.slow
def test_encrypting_the_voiceprints_cut_by_kill_9_leaves_them_readable(
        settings, memory_runtime):
    """Killed at each file operation in turn while it encrypts the database
    (``killed_at_each_step``): after every kill the voiceprints read, in the clear or
    encrypted; the run after finishes the work."""
    _voiceprints_then_the_key(settings)
    setup = ("from pathlib import Path\n"
             "import sqlcipher3, device.store._base\n"
             "from device import encryption, vault\n"
             "from device.settings import Settings\n"
             "s = Settings(data_dir=Path(sys.argv[1]))\n"
             "vault.seal_key(os.urandom(32), vault.Keyring.load(encryption.keyring_path(s))"
             ".public_key)\n"
             "device.store._base.connect(Path(':memory:'))  # sqlite-utils loads its plugins\n")
    work = "encryption.seal_database(s, s.voiceprints_path, 'voiceprints')\n"

    def the_voiceprints_read(step: int) -> None:
        assert _names(settings) == [NAME], step

    try:
        step = killed_at_each_step(setup, work, settings.data_dir, the_voiceprints_read)
        assert step > 3  # it was cut at every one of its steps before this run
        assert not encryption.in_the_clear(settings.voiceprints_path)
        assert _secrets_in(_files(settings)) == []
        assert not encryption.seal_database(settings, settings.voiceprints_path, "voiceprints")
    finally:
        encryption.lock_box(settings)


def test_processes_opening_the_voiceprints_at_once_agree_on_one_key(settings, memory_runtime):
    """The worker's start and a page may both be the first to open the voiceprints after the
    box key is made: one makes the key and encrypts, the others take that key."""
    _voiceprints_then_the_key(settings)
    code = ("import sys; from pathlib import Path\n"
            "from device.settings import Settings\n"
            "from device.store.voiceprints import Voiceprints\n"
            "with Voiceprints.of(Settings(data_dir=Path(sys.argv[1]))) as prints:\n"
            "    print(len(prints.all()))\n")
    try:
        runs = [subprocess.Popen([sys.executable, "-c", code, str(settings.data_dir)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                for _ in range(4)]
        answers = [run.communicate(timeout=60) for run in runs]
        assert [out.strip() for out, _ in answers] == [b"1"] * 4, answers
        assert _names(settings) == [NAME] and _secrets_in(_files(settings)) == []
    finally:
        encryption.lock_box(settings)
