"""Retention rules and legal hold, with the calendar run forward by passing the time in."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from device import retention
from device.databases import open_store
from device.jobs import Worker
from device.records import Segment
from device.store import Store
from tests.conftest import wait_until

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def recording(store: Store, settings, title: str, *, made: datetime,
              reviewed: datetime | None = None, profile: str | None = None) -> int:
    """A finished recording with a transcript and an audio file, made and confirmed then."""
    rec = store.create_recording(title, f"{title}.wav")
    job = store.claim(1, 0.0, store.enqueue("transcribe", rec.id).id)
    store.complete_transcription(job.id, rec.id, [Segment(0.0, 2.0, f"{title} 说的话")],
                                 language="zh", duration=2.0)
    settings.audio_dir.mkdir(parents=True, exist_ok=True)
    (settings.audio_dir / f"{rec.id}.wav").write_bytes(b"RIFF" + bytes(64))
    store.db.execute("UPDATE recordings SET audio_file = ?, created = ?, reviewed_at = ?, "
                     "profile = ? WHERE id = ?",
                     [f"{rec.id}.wav", _stamp(made), reviewed and _stamp(reviewed), profile,
                      rec.id])
    return rec.id


def test_rules_erase_confirmed_audio_and_old_recordings_but_never_a_held_one(settings):
    with open_store(settings) as store:
        confirmed = recording(store, settings, "confirmed", made=T0, reviewed=T0)
        unconfirmed = recording(store, settings, "unconfirmed", made=T0)
        held = recording(store, settings, "held", made=T0, reviewed=T0)
        store.set_legal_hold(held, "case 2026-17")
        cantonese = recording(store, settings, "cantonese", made=T0, profile="cantonese")
        store.add_retention_rule("audio", 30)
        store.add_retention_rule("recording", 10, "cantonese")
        store.add_retention_rule("recording", 3650)

        assert retention.due(store, T0 + timedelta(days=9)) == []
        soon = retention.due(store, T0 + timedelta(days=31))
        assert [(d.recording.id, d.what, d.at) for d in soon] == [
            (cantonese, "recording", T0 + timedelta(days=10)),
            (confirmed, "audio", T0 + timedelta(days=30))]

        erased = retention.purge(store, settings, T0 + timedelta(days=31), "test")
        assert {(d.recording.id, d.what) for d in erased} == {(cantonese, "recording"),
                                                               (confirmed, "audio")}
        after = store.get_recording(confirmed)
        assert after.audio_file is None and after.audio_erased.startswith("2027-01-01")
        assert not (settings.audio_dir / f"{confirmed}.wav").exists()
        assert [s.text for s in store.segments(confirmed)] == ["confirmed 说的话"]  # kept
        assert cantonese in [d.recording_id for d in store.deletions(limit=10)]
        for kept in (unconfirmed, held):
            assert (settings.audio_dir / f"{kept}.wav").exists()
            assert store.get_recording(kept).audio_file == f"{kept}.wav"
        actions = {(e.action, e.object) for e in store.audit_entries()}
        assert ("retention_erased_audio", f"recording:{confirmed}") in actions
        assert ("retention_deleted_recording", f"recording:{cantonese}") in actions
        run = store.last_retention_run()
        assert (run.audio_erased, run.recordings_deleted, run.trigger) == (1, 1, "test")

        # ten years on, only the hold stands; released, it goes too
        decade = T0 + timedelta(days=3651)
        assert [d.recording.id for d in retention.due(store, decade)] == [confirmed,
                                                                          unconfirmed]
        store.set_legal_hold(held, None)
        assert retention.due(store, decade)[-1].recording.id == held


def test_the_worker_purges_once_a_day(settings):
    with open_store(settings) as store:
        rec = recording(store, settings, "old", made=T0 - timedelta(days=400))
        store.add_retention_rule("recording", 365)
        assert retention.purge_if_due(store, settings, T0)  # none ran yet: now
        assert retention.purge_if_due(store, settings, T0 + timedelta(hours=23)) is None
        assert retention.purge_if_due(store, settings, T0 + timedelta(hours=25)) == []
        assert rec in [d.recording_id for d in store.deletions(limit=10)]
        # the worker itself, on a box whose last purge was more than a day ago
        other = recording(store, settings, "older", made=T0 - timedelta(days=500))
        store.db.execute("UPDATE retention_runs SET at = '2000-01-01T00:00:00.000+00:00'")
    stop = threading.Event()
    worker = threading.Thread(target=Worker(settings).serve, args=(stop, 0.05), daemon=True)
    worker.start()
    try:
        with open_store(settings) as store:
            wait_until(lambda: other in [d.recording_id for d in store.deletions(limit=10)],
                       30, "the worker's daily purge")
            assert store.last_retention_run().trigger == "daily"
    finally:
        stop.set()
        worker.join(30)
    assert not worker.is_alive()


def test_erased_audio_of_an_encrypted_box_cannot_be_read_from_any_copy(settings, tmp_path,
                                                                        monkeypatch):
    """The sealed audio's key goes with it: a copy taken before (a backup, the other update
    slot) opens with nothing left on the box."""
    from device import encryption, unlock
    from device.store.keys import DataKeys
    from device.vault import SealedFileError, SealedReader, open_key

    monkeypatch.delenv("TINGJI_RUNTIME_DIR", raising=False)
    if unlock.file_system(unlock.runtime_dir()) not in unlock.MEMORY_FILE_SYSTEMS:
        pytest.skip("no tmpfs to keep the unlocked key in")
    encryption.init(settings, "a long unlock passphrase")
    encryption.unlock_box(settings, passphrase="a long unlock passphrase")
    try:
        with open_store(settings) as store:
            rec = recording(store, settings, "sealed", made=T0, reviewed=T0)
            plain = tmp_path / "plain.wav"
            plain.write_bytes(b"RIFF" + bytes(range(256)) * 64)
            sealed = settings.audio_dir / f"{rec}.wav.sealed"
            encryption.store_sealed(settings, rec, plain, sealed)
            (settings.audio_dir / f"{rec}.wav").unlink()
            store.update_recording(rec, audio_file=sealed.name)
            copy = tmp_path / "copy.sealed"
            copy.write_bytes(sealed.read_bytes())
            with DataKeys(encryption.keys_path(settings)) as keys:
                key = keys.get(encryption.key_name(rec))
            private = unlock.current(settings.data_dir)
            with SealedReader(copy, open_key(key, private)) as reader:  # readable before
                assert reader.read_range(0, 4) == b"RIFF"
            store.add_retention_rule("audio", 7)
            assert retention.purge(store, settings, T0 + timedelta(days=8), "test")
            assert not sealed.exists()
            with DataKeys(encryption.keys_path(settings)) as keys:
                assert not [n for n in keys.names() if n.startswith("recording:")]  # gone
            # the only key that opened it is gone: any other key the box could hold fails
            other = encryption.new_recording_key(settings, rec + 1)
            with pytest.raises(SealedFileError), SealedReader(copy, other) as reader:
                reader.read_range(0, 4)
    finally:
        encryption.lock_box(settings)
