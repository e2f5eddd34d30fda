"""The SQLite store: schema and migrations, transcripts, Chinese and English search, jobs."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from pathlib import Path

from device.databases import open_store
from device.migrations import migration_names, schema_migrations
from device.records import Segment, Word
from device.store import SCHEMA_VERSION, Store
from device.store._base import connect

FIXTURES = Path(__file__).parent / "fixtures"


def _transcribed(store: Store, title: str, texts: list[str]) -> int:
    recording = store.create_recording(title, source_name=f"{title}.wav")
    job = store.claim(1, 0.0, store.enqueue("transcribe", recording.id).id)
    segments = [
        Segment(start=i * 2.0, end=i * 2.0 + 1.5, text=t, language="zh",
                words=(Word(i * 2.0, i * 2.0 + 1.5, t, 0.9),))
        for i, t in enumerate(texts)
    ]
    store.complete_transcription(job.id, recording.id, segments, language="zh",
                                 language_probability=1.0, duration=10.0, model_id="m",
                                 language_probabilities={"zh": 0.99, "en": 0.01})
    return recording.id


def test_database_is_wal_with_full_sync_and_foreign_keys(settings):
    with open_store(settings) as store:
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert store.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert store.schema_version == SCHEMA_VERSION


def test_connections_opening_a_new_database_at_once_all_open_it(tmp_path):
    """Each wants the exclusive lock of the switch to WAL while holding a shared one, and
    SQLite fails all but one at once rather than wait: the web server and the worker
    starting together on a new box died of it ("database is locked")."""
    failed = []

    def open_it(path: Path, ready: threading.Barrier) -> None:
        ready.wait()
        try:
            connect(path).close()
        except sqlite3.OperationalError as exc:
            failed.append(exc)

    for n in range(60):
        ready = threading.Barrier(8)
        threads = [threading.Thread(target=open_it, args=(tmp_path / f"{n}.db", ready))
                   for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert failed == []
    assert sqlite3.connect(tmp_path / "0.db").execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_migrations_are_idempotent(settings):
    open_store(settings).close()
    with open_store(settings) as store:
        assert store.schema_version == SCHEMA_VERSION
        store.migrate()
        assert {"recordings", "segments", "words", "jobs", "segments_fts"} <= set(
            store.db.table_names()
        )


def test_search_finds_chinese_in_either_script_and_english(store):
    rid = _transcribed(store, "访谈", ["開放時間早上9點至下午5點", "我们讨论了明年的预算"])
    _transcribed(store, "talk", ["Ask not what your country can do for you"])
    assert [h.text for h in store.search("开放时间")] == ["開放時間早上9點至下午5點"]
    assert [h.recording_id for h in store.search("預算")] == [rid]
    assert [h.text for h in store.search("明年")] == ["我们讨论了明年的预算"]
    assert len(store.search("country")) == 1
    assert len(store.search("COUNTRY ask")) == 1
    assert store.search("country 预算") == []
    assert store.search("夜晚") == []
    assert store.search('"; DROP TABLE segments; --') == []


def test_a_new_transcript_replaces_the_old_one_and_its_index(store):
    rid = _transcribed(store, "a", ["第一版"])
    job = store.claim(1, 0.0, store.enqueue("transcribe", rid).id)
    store.complete_transcription(job.id, rid, [Segment(0, 1, "第二版")], language="zh",
                                 language_probability=None, duration=1.0, model_id="m")
    assert [s.text for s in store.segments(rid)] == ["第二版"]
    assert store.search("第一版") == []
    assert store.get_job(job.id).status == "done"


def test_recordings_keep_profile_terms_and_language_decisions(store):
    rid = _transcribed(store, "访谈", ["你好"])
    store.update_recording(rid, profile="cantonese", terms=["华为", "花为=华为"])
    recording = store.get_recording(rid)
    assert recording.profile == "cantonese" and recording.terms == ["华为", "花为=华为"]
    assert recording.language_probabilities == {"zh": 0.99, "en": 0.01}


def test_glossary_entries_are_unique_and_removable(store):
    a = store.add_glossary("华为")
    assert store.add_glossary(" 华为 ") == a
    b = store.add_glossary("华为", misheard="花为")
    assert a != b
    assert [(g.term, g.misheard) for g in store.glossary()] == [("华为", None),
                                                                     ("华为", "花为")]
    assert store.remove_glossary(a) and not store.remove_glossary(a)


def test_jobs_are_claimed_oldest_first_and_only_once(store):
    a = store.create_recording("a", "a.wav")
    b = store.create_recording("b", "b.wav")
    first, second = store.enqueue("transcribe", a.id), store.enqueue("transcribe", b.id)
    assert store.claim(1, 0.0).id == first.id
    assert store.claim(1, 0.0).id == second.id
    assert store.claim(1, 0.0) is None
    assert store.claim(1, 0.0, first.id) is None


def test_interrupted_jobs_are_requeued_then_given_up(store):
    recording = store.create_recording("a", "a.wav")
    job = store.enqueue("transcribe", recording.id)
    for attempt in (1, 2):
        assert store.claim(99999, 1.0).attempts == attempt
        [requeued] = store.requeue_interrupted(lambda pid, started: False, max_attempts=3)
        assert requeued.status == "queued"
    store.claim(99999, 1.0)
    [failed] = store.requeue_interrupted(lambda pid, started: False, max_attempts=3)
    assert failed.status == "failed" and "interrupted 3 times" in failed.error
    assert store.get_recording(recording.id).status == "failed"
    assert store.get_job(job.id).status == "failed"


def test_a_live_workers_job_is_left_alone(store):
    recording = store.create_recording("a", "a.wav")
    store.enqueue("transcribe", recording.id)
    store.claim(1234, 5.0)
    assert store.requeue_interrupted(lambda pid, started: pid == 1234, max_attempts=3) == []


def test_foreign_keys_are_enforced(store):
    try:
        store.enqueue("transcribe", 424242)
    except sqlite3.IntegrityError:
        return
    raise AssertionError("a job for a missing recording was accepted")


def test_a_database_numbered_by_user_version_is_upgraded_in_place(tmp_path):
    """``schema5.db`` was written by the store when the schema was numbered in ``PRAGMA
    user_version`` (five migrations, no migrations table): a recording with its transcript
    and words, a marker, a summary, an edit, an account and a glossary entry."""
    path = tmp_path / "tingji.db"
    shutil.copy(FIXTURES / "schema5.db", path)
    with Store(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert [m.name for m in schema_migrations().applied(store.db)] == \
            list(migration_names())
        [recording] = store.list_recordings()
        assert recording.title == "访谈 before the change"
        segments = store.segments(recording.id)
        assert [s.text for s in segments] == ["开放时间早上9点", "We meet on Wednesday."]
        assert [w.text for w in segments[0].words] == ["开放时间", "早上9点"]
        assert [h.recording_id for h in store.search("開放時間")] == [recording.id]
        assert [m.note for m in store.markers(recording.id)] == ["重点"]
        assert store.summaries(recording.id)[0].content["title"] == "会议"
        assert [r.kind for r in store.revisions(recording.id)] == ["edit"]
        assert store.find_user("admin").role == "admin"
        assert [g.term for g in store.glossary()] == ["华为"]
    before = path.read_bytes()
    Store(path).close()  # nothing is pending: opening it again changes nothing
    assert path.read_bytes() == before


def test_accounts_kept_in_the_main_database_move_to_their_own_once(tmp_path):
    """Firmware before the accounts' database kept users and sessions in ``tingji.db``: they
    are copied into ``accounts.db`` at the first opening, sessions included, and only then."""
    path = tmp_path / "tingji.db"
    shutil.copy(FIXTURES / "schema5.db", path)
    old = sqlite3.connect(path)
    old.execute("INSERT INTO sessions VALUES ('h', 1, 'c', '2026-01-01', 4e9)")
    old.commit()
    old.close()
    with Store(path) as store:
        assert store.get_session("h", 0)[0].username == "admin"
        store.delete_user(store.find_user("admin").id)
    with Store(path) as store:  # the main database's copy does not come back
        assert store.count_users() == 0 and store.get_session("h", 0) is None
    assert (tmp_path / "accounts.db").is_file()


def test_a_deleted_recordings_words_leave_the_database_file(settings):
    """Rows are overwritten as they are deleted, and the search index keeps no page with
    the words (it stores them lower-cased)."""
    with Store(settings.database_path) as store:
        gone = _transcribed(store, "Gone", ["Qwertzuiop met Zhang", "董事会决议"])
        kept = _transcribed(store, "Kept", ["Asdfghjkl stays"])
        store.delete_recording(gone)
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert [h.recording_id for h in store.search("asdfghjkl")] == [kept]
    data = settings.database_path.read_bytes()
    for word in ("Qwertzuiop", "qwertzuiop", "董事会决议"):
        assert word.encode() not in data, word
    assert b"asdfghjkl" in data


def test_the_summarys_start_read_ahead_is_kept_by_model_and_leaves_with_the_recording(store):
    recording_id = _transcribed(store, "Long", ["董事会决议"])
    store.keep_summary_ahead(recording_id, "m", [1, 2, 3], b"\x00state" * 1000)
    store.keep_summary_ahead(recording_id, "m", [1, 2, 3, 4], b"\x01state")  # read on
    assert store.summary_ahead(recording_id, "m") == ([1, 2, 3, 4], b"\x01state")
    assert store.summary_ahead(recording_id, "other model") is None
    store.delete_recording(recording_id)
    assert store.db.execute("SELECT count(*) FROM summary_ahead").fetchone()[0] == 0


def test_a_failing_migration_leaves_the_schema_as_it_was(settings):
    from sqlite_utils.migrations import Migrations

    open_store(settings).close()
    with open_store(settings) as store:
        broken = Migrations("tingji")
        for migration in schema_migrations().pending(store.db) or ():
            broken(name=migration.name)(migration.fn)

        @broken(name="m999_half_done")
        def half_done(db):
            db["half"].create({"x": int})
            raise RuntimeError("power cut")

        try:
            with store.transaction():
                broken.apply(store.db)
        except RuntimeError:
            pass
        assert "half" not in store.db.table_names()
        assert store.schema_version == SCHEMA_VERSION


def test_titles_names_and_notes_lose_control_and_bidi_characters_and_are_bounded(store):
    """A 3 MB title or marker note was stored as it came, and so were U+202E (which shows
    the end of a title first) and control characters (which break exports)."""
    import pytest

    from device.errors import InvalidInput

    recording = store.create_recording("\u202egnp.exe\x0b Interview\t Li", "a\x00.wav")
    assert (recording.title, recording.source_name) == ("gnp.exe Interview Li", "a .wav")
    with pytest.raises(InvalidInput, match="at most 200 characters"):
        store.create_recording("题" * 3_000_000, "b.wav")
    with pytest.raises(InvalidInput, match="at most 1000 characters"):
        store.add_marker(recording.id, 1.0, "x" * 3_000_000)
    assert store.add_marker(recording.id, 1.0, "key\u2066 point\n").note == "key point"
    store.create_user("rita", "hash", "reviewer")
    with pytest.raises(InvalidInput, match="taken"):  # the same name behind an invisible mark
        store.create_user("\u200brita", "hash", "reviewer")
    with pytest.raises(InvalidInput, match="a title cannot be empty"):
        store.update_recording(recording.id, title="\u202e\u202c")
    assert [r.title for r in store.list_recordings()] == ["gnp.exe Interview Li"]
