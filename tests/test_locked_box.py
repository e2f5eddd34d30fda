"""The main database encrypted, and what a locked box writes waiting for the unlock."""

from __future__ import annotations

import shutil

import pytest

from device import databases, encryption, unlock
from device.audit import Auditor, verify
from device.capture import FileSource
from device.databases import open_store
from device.errors import RecordingNotFound
from device.pipeline import import_audio
from device.recorder import Recorder
from device.records import Segment, Word
from device.store import Store
from device.store.keys import DataKeys
from tests.conftest import PASSPHRASE
from tests.crashes import killed_at_each_step
from tests.test_encryption import _everything, _pcm_wav
from tests.webutil import make_box, signed_in_account

SECRET_WORDS = ("董事会决议", "Wrexham", "Okonkwo")
"""Words of the transcripts, titles, notes and summaries below: none may be on the disk."""


def _restart(settings) -> None:
    """What a power cut does to the box's memory: the unlocked key and the keys of the
    waiting databases kept on tmpfs are gone."""
    encryption.lock_box(settings)
    shutil.rmtree(unlock.key_file(settings.data_dir).parent, ignore_errors=True)


def _transcribed(store: Store, title: str, text: str) -> int:
    recording = store.create_recording(title, source_name="interview.wav")
    job = store.claim(1, 0.0, store.enqueue("transcribe", recording.id).id)
    store.complete_transcription(
        job.id, recording.id,
        [Segment(start=0.0, end=2.0, text=text, language="zh", speaker="Okonkwo",
                 words=(Word(0.0, 2.0, text, 0.9),))],
        language="zh", language_probability=1.0, duration=2.0, model_id="m",
        language_probabilities={"zh": 1.0})
    return recording.id


def _record(settings, source, title: str) -> int:
    recorder = Recorder(settings, live=False)
    recorder.start(FileSource(source, speed=16.0), title=title)
    recorder.marker("Okonkwo 说到董事会决议")
    return recorder.wait(60).id


def test_a_box_read_without_its_passphrase_gives_away_no_word_name_or_sample(
        sealed_box, tmp_path, speech_wav):
    """Three recordings (imported, transcribed, summarised, one recorded while locked) on a
    box after a power cut: every file of its data folder read as a finder would, none
    holds a word of a transcript, a title, a speaker's name or a stretch of the audio."""
    settings, _ = sealed_box
    source, needle = _pcm_wav(tmp_path, speech_wav)
    with open_store(settings) as store:
        imported, _ = import_audio(store, settings, source, title="Wrexham 访谈")
        first = _transcribed(store, "Wrexham board", "董事会决议 Okonkwo")
        store.add_summary(first, {"title": "董事会决议", "notes": ["Okonkwo"]}, [],
                          model_id="m", prompt_version="1", transcript_hash="h")
        Auditor(settings).record(store, "recording_viewed", object=f"recording:{first}",
                                 details={"title": "Wrexham board"})
    encryption.lock_box(settings)
    locked = _record(settings, source, "Okonkwo 董事会决议")  # no secret needed
    _restart(settings)
    everything = _everything(settings.data_dir)
    assert needle not in everything
    for word in SECRET_WORDS:
        assert word.encode() not in everything, word
    assert not encryption.in_the_clear(settings.database_path)
    encryption.unlock_box(settings, passphrase=PASSPHRASE)
    with open_store(settings) as store:  # everything is there for the box itself
        assert {r.id for r in store.list_recordings()} == {imported.id, first, locked}
        assert store.segments(first)[0].text == "董事会决议 Okonkwo"
        assert [h.recording_id for h in store.search("董事会决议")] == [first]


def test_what_a_locked_box_writes_waits_sealed_and_joins_the_main_database_at_the_unlock(
        sealed_box, tmp_path, speech_wav):
    settings, _ = sealed_box
    source, _ = _pcm_wav(tmp_path, speech_wav)
    with open_store(settings) as store:
        earlier = _transcribed(store, "Before", "早上好")
    encryption.lock_box(settings)
    one = _record(settings, source, "Locked once")
    with open_store(settings) as store:  # the waiting database: the main one is out of reach
        assert store.waiting and [r.id for r in store.list_recordings()] == [one]
        with pytest.raises(RecordingNotFound):
            store.get_recording(earlier)
        store.append_segment(one, Segment(start=0.0, end=1.0, text="live words",
                                          words=(Word(0.0, 1.0, "live", 0.8),)))
        Auditor(settings).record(store, "recording_started", object=f"recording:{one}")
    _restart(settings)  # that waiting database's key is gone from memory: a new one begins
    two = _record(settings, source, "Locked twice")
    assert len(databases.waiting(settings)) == 2
    assert earlier < one < two  # one counter for both kinds of database
    encryption.unlock_box(settings, passphrase=PASSPHRASE)
    with open_store(settings) as store:
        assert store.waiting is None
        assert [r.id for r in store.list_recordings()] == [two, one, earlier]
        assert [r.title for r in store.list_recordings()][:2] == ["Locked twice", "Locked once"]
        assert [m.note for m in store.markers(one)] == ["Okonkwo 说到董事会决议"]
        assert [s.text for s in store.segments(one)] == ["live words"]
        assert [w.text for w in store.segments(one)[0].words] == ["live"]
        assert [h.recording_id for h in store.search("live")] == [one]
        assert {j.recording_id for j in store.list_jobs(status="queued")} == {one, two}
        actions = [e.action for e in store.audit_entries(limit=50)]
        assert "recording_started" in actions
        moves = store.audit_entries(action="moved_in_after_unlock")
        assert sorted(r for e in moves for r in e.details["recordings"]) == [one, two]
        trail = verify(store, Auditor(settings).key.public_key())
        assert trail.ok and trail.heads >= 1, trail  # moved in, chained and signed
    assert databases.waiting(settings) == []
    with DataKeys(encryption.keys_path(settings)) as keys:
        assert not [n for n in keys.names() if n.startswith("database:waiting")]


def test_a_waiting_database_is_moved_only_once_nobody_holds_it(sealed_box):
    settings, _ = sealed_box
    encryption.lock_box(settings)
    held = open_store(settings)  # a recording begun while locked, still going
    held.create_recording("Still recording", source_name="mic")
    encryption.unlock_box(settings, passphrase=PASSPHRASE)
    with open_store(settings) as store:
        assert store.list_recordings() == []  # left where it is, for now
    held.close()
    with open_store(settings) as store:
        assert [r.title for r in store.list_recordings()] == ["Still recording"]


def test_a_waiting_database_with_rows_this_firmware_cannot_move_is_kept(sealed_box):
    settings, _ = sealed_box
    encryption.lock_box(settings)
    with open_store(settings) as store:
        recording = store.create_recording("Edited while locked", source_name="mic")
        store.db.execute("INSERT INTO revisions (recording_id, kind, before, after, created) "
                         "VALUES (?, 'edit', '[]', '[]', 'now')", [recording.id])
    encryption.unlock_box(settings, passphrase=PASSPHRASE)
    with open_store(settings) as store:
        assert store.list_recordings() == []  # all or nothing: nothing
    assert len(databases.waiting(settings)) == 1  # kept, readable, for a later firmware


def test_signing_in_works_on_a_locked_box_and_earlier_recordings_answer_423(sealed_box):
    settings, _ = sealed_box
    box = make_box(settings)
    with open_store(settings) as store:
        earlier = _transcribed(store, "Before", "早上好")
    encryption.lock_box(settings)
    page = box.reviewer.client.get(f"/recordings/{earlier}")
    assert page.status_code == 423 and "locked" in page.text
    newcomer = signed_in_account(box.app, "newcomer", "reviewer")  # accounts work locked
    assert newcomer.client.get("/").status_code == 200
    encryption.unlock_box(settings, passphrase=PASSPHRASE)
    assert box.reviewer.client.get(f"/recordings/{earlier}").status_code == 200


@pytest.mark.slow
def test_moving_a_waiting_database_cut_by_kill_9_loses_and_doubles_nothing(sealed_box):
    """Killed at each file operation and each statement on the main database in turn while
    it moves two recordings made while locked: after every kill each is in the waiting
    database or in the main one, once."""
    settings, _ = sealed_box
    encryption.lock_box(settings)
    with open_store(settings) as store:
        ids = [store.create_recording(f"Locked {n}", source_name="mic").id for n in (1, 2)]
        for rid in ids:
            store.append_segment(rid, Segment(start=0.0, end=1.0, text=f"words of {rid}"))
            Auditor(settings).record(store, "recording_started", object=f"recording:{rid}")
    [name] = databases.waiting(settings)
    encryption.unlock_box(settings, passphrase=PASSPHRASE)

    def each_once(step: int) -> None:
        with databases.main_store(settings) as main:
            moved = [r.id for r in main.list_recordings()]
            entries = len(main.audit_entries(action="recording_started"))
        assert entries in (0, 2) and (entries == 2 or not moved), step  # once, and first
        if databases.waiting(settings):
            key = encryption.vault.open_key(
                encryption.sealed_key(settings, f"database:waiting:{name}"),
                unlock.current(settings.data_dir))
            with Store(settings.data_dir / "waiting" / f"{name}.db", key=key,
                       accounts=settings.data_dir / "accounts.db") as waiting:
                left = [r.id for r in waiting.list_recordings()]
            assert moved in ([], sorted(ids, reverse=True)), step
        else:
            left = []
        assert sorted(set(moved) | set(left)) == ids and len(moved) in (0, 2), step

    setup = ("from pathlib import Path\n"
             "from device import databases\n"
             "from device.settings import Settings\n"
             "s = Settings(data_dir=Path(sys.argv[1]))\n")
    work = ("budget, left = left, 10**9\n"  # the steps are counted from the move on
            "real = databases._move\n"
            "def move(settings, store, *args):\n"
            "    global left\n"
            "    left = budget\n"
            "    for db in (store.db, store.trail):\n"
            "        db.conn.set_trace_callback(lambda sql: hook('open', ()))\n"
            "    return real(settings, store, *args)\n"
            "databases._move = move\n"
            "databases.open_store(s).close()\n")
    step = killed_at_each_step(setup, work, settings.data_dir, each_once)
    assert step > 20  # it was cut at every one of its steps before this run
    with open_store(settings) as store:
        assert [s.text for rid in ids for s in store.segments(rid)] == \
            [f"words of {rid}" for rid in ids]
        assert len(store.audit_entries(action="recording_started")) == 2
    assert databases.waiting(settings) == []


def test_the_console_backup_stays_encrypted_and_opens_on_the_box_unlocked(sealed_box,
                                                                          tmp_path):
    from tests.test_cli import run

    settings, _ = sealed_box
    with open_store(settings) as store:
        recording = _transcribed(store, "Wrexham board", "董事会决议 Okonkwo")
        store.create_user("rita", "hash", "reviewer")
    folder = tmp_path / "usb"
    done = run(settings, "backup", str(folder))
    assert done.returncode == 0 and "encrypted" in done.stdout, done.stderr
    assert "董事会决议".encode() not in (folder / "audit.db").read_bytes() + \
        (folder / "tingji.db").read_bytes()
    copy = (folder / "tingji.db").read_bytes()
    assert not copy.startswith(b"SQLite format 3") and "董事会决议".encode() not in copy
    assert sorted(p.name for p in folder.iterdir()) == ["accounts.db", "audit.db", "tingji.db"]
    with Store(folder / "tingji.db", key=encryption.database_key(settings, "main"),
               accounts=folder / "accounts.db", trail=folder / "audit.db",
               trail_key=encryption.database_key(settings, "audit")) as restored:
        assert restored.segments(recording)[0].text == "董事会决议 Okonkwo"
        assert [h.recording_id for h in restored.search("董事会决议")] == [recording]
        assert restored.find_user("rita").role == "reviewer"
        assert restored.audit_entries(action="backup_database") == []  # written after it
    assert run(settings, "backup", str(folder)).returncode != 0  # never over a backup
    encryption.lock_box(settings)
    locked = run(settings, "backup", str(tmp_path / "other"))
    assert locked.returncode != 0 and "locked" in locked.stderr


def test_update_backups_kept_in_the_clear_are_encrypted_and_still_restore(sealed_box):
    """A flash from firmware before the encryption backed the database up in the clear:
    at the unlock that backup is encrypted under the database's key, and restoring it still
    works; a rollback to firmware that cannot open an encrypted database is refused."""
    from updates.box import Box
    from updates.slots import _reads_encrypted, restore_database

    settings, _ = sealed_box
    box = Box(settings.data_dir.parent)
    backups = databases.update_backups(settings)
    backups.mkdir(parents=True)
    backup = backups / "tingji-before-2.0.0-20261201T000000.db"
    with Store(backup) as old:
        _transcribed(old, "Wrexham board", "董事会决议 Okonkwo")
    assert "董事会决议".encode() in backup.read_bytes()
    with open_store(settings) as store:
        assert store.list_recordings() == []
    assert not encryption.in_the_clear(backup)
    assert "董事会决议".encode() not in backup.read_bytes()
    restore_database(box, backup)
    with open_store(settings) as store:
        assert [r.title for r in store.list_recordings()] == ["Wrexham board"]
    firmware = box.slots / "a" / "code" / "device"
    firmware.mkdir(parents=True)
    assert not _reads_encrypted(box, "a")  # a rollback to it is refused
    (firmware / "databases.py").write_text("")
    assert _reads_encrypted(box, "a")


def test_a_key_file_on_removable_media_unlocks_the_box_and_a_new_one_replaces_it(
        sealed_box, tmp_path):
    from device.vault import Keyring, WrongSecretError
    from tests.test_cli import run

    settings, _ = sealed_box
    usb = tmp_path / "usb"
    usb.mkdir()
    made = run(settings, "keyring", "key-file", str(usb / "box.key"))
    assert made.returncode == 0, made.stderr
    assert (usb / "box.key").stat().st_mode & 0o777 == 0o600
    encryption.lock_box(settings)
    unlocked = run(settings, "unlock", "--key-file", str(usb / "box.key"))
    assert unlocked.returncode == 0 and not encryption.locked(settings), unlocked.stderr
    with open_store(settings) as store:
        [entry] = store.audit_entries(action="unlocked")
        assert entry.details["with"] == "key file"
    encryption.change_passphrase(settings, PASSPHRASE, "another long passphrase")
    encryption.lock_box(settings)  # the passphrase changed: the key file still unlocks
    encryption.unlock_box(settings, key_file=usb / "box.key")
    encryption.make_key_file(settings, usb / "new.key")  # the old one stops working
    encryption.lock_box(settings)
    with pytest.raises(WrongSecretError):
        encryption.unlock_box(settings, key_file=usb / "box.key")
    other, _ = Keyring.create("another box's passphrase", _fast=True)
    foreign = tmp_path / "other.key"
    foreign.write_bytes(other.with_key_file(other.unlock("another box's passphrase"))[1])
    with pytest.raises(WrongSecretError, match="not this box's"):
        encryption.unlock_box(settings, key_file=foreign)
    refused = run(settings, "unlock", "--key-file", str(foreign))
    assert refused.returncode != 0 and encryption.locked(settings)
    encryption.unlock_box(settings, key_file=usb / "new.key")
    assert not encryption.locked(settings)


def test_sqlcipher_keeps_temporary_files_in_memory(sealed_box):
    """A sort or a temporary table larger than the cache would go to a temporary file: the
    SQLCipher build the box uses keeps them in memory (TEMP_STORE=2), so no plaintext page
    of the database reaches the disk that way either."""
    settings, _ = sealed_box
    with open_store(settings) as store:
        options = [r[0] for r in store.db.execute("PRAGMA compile_options")]
        assert "TEMP_STORE=2" in options and "HAS_CODEC" in options
        assert store.db.execute("PRAGMA temp_store").fetchone()[0] in (0, 2)


@pytest.mark.parametrize("sealed", [False, True], ids=["clear", "encrypted"])
def test_a_deleted_recording_leaves_the_update_backups_too(settings, sealed, monkeypatch):
    """An update's backup of the database holds every transcript of its time: deleting a
    recording removes its rows from it too (its audio's key is gone already)."""
    from device.pipeline import delete_recording
    from updates.box import Box
    from updates.slots import backup_database

    if sealed:
        monkeypatch.delenv("TINGJI_RUNTIME_DIR", raising=False)
        encryption.init(settings, PASSPHRASE)
        encryption.unlock_box(settings, passphrase=PASSPHRASE)
    try:
        with open_store(settings) as store:
            gone = _transcribed(store, "Gone", "Qwertzuiop 董事会决议")
            kept = _transcribed(store, "Kept", "Asdfghjkl stays")
        backup = backup_database(Box(settings.data_dir.parent), "9.9.9")
        with open_store(settings) as store:
            delete_recording(store, settings, gone)
        key = encryption.database_key(settings, "main") if sealed else None
        db = databases._backup_connection(backup, key)
        try:
            assert [r[0] for r in db.execute("SELECT id FROM recordings")] == [kept]
            assert db.execute("SELECT count(*) FROM segments_fts WHERE segments_fts MATCH "
                              "'qwertzuiop'").fetchone()[0] == 0
        finally:
            db.close()
        if not sealed:
            data = backup.read_bytes()
            assert b"qwertzuiop" not in data.lower() and "董事会决议".encode() not in data
            assert b"asdfghjkl" in data.lower()
    finally:
        encryption.lock_box(settings)


def test_everyone_signed_in_is_told_the_box_is_locked(sealed_box):
    settings, _ = sealed_box
    box = make_box(settings)
    assert "locked-banner" not in box.reviewer.client.get("/").text
    encryption.lock_box(settings)
    reviewer = box.reviewer.client.get("/").text
    admin = box.admin.client.get("/").text
    assert "earlier recordings show again once an admin unlocks it" in reviewer
    assert "/system#encryption" not in reviewer  # the way to unlock is the admin's
    assert "earlier recordings are out of reach" in admin and "/system#encryption" in admin
    chinese = box.reviewer.client.get("/", headers={"accept-language": "zh-CN"}).text
    assert "管理员解锁后" in chinese
