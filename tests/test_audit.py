"""The audit trail: a hash chain whose signed heads catch any change, removal, insertion,
reordering or cut-off tail, written by many clients at once without losing or doubling an
entry; and what the web UI writes to it."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest

from device.audit import HEAD_EVERY, KEY_FILE, Auditor, export_lines, verify, verify_export
from device.databases import open_store


def _trail(settings, entries: int = 250) -> Auditor:
    auditor = Auditor(settings)
    with open_store(settings) as store:
        for n in range(entries):
            auditor.record(store, "view_recording", object=f"recording:{n % 7 + 1}",
                           address="192.0.2.7", details={"n": n, "格式": "docx"})
    return auditor


def _verify(settings, auditor):
    with open_store(settings) as store:
        return verify(store, auditor.key.public_key())


def _trail_file(settings):
    """The trail's database (beside the main one)."""
    return settings.data_dir / "audit.db"


def _sql(settings, statements: str) -> None:
    with sqlite3.connect(_trail_file(settings)) as db:
        db.executescript(statements)


def test_an_intact_trail_verifies_with_a_signed_head_every_hundred_entries(settings):
    auditor = _trail(settings)
    result = _verify(settings, auditor)
    assert result.ok and result.entries == 250 and result.heads == 250 // HEAD_EVERY
    with open_store(settings) as store:
        auditor.sign_head(store, "shutdown")
        assert [h.entry_id for h in store.audit_heads()] == [100, 200, 250]
    assert _verify(settings, auditor).ok


@pytest.mark.parametrize("tamper,entry,says", [
    ("UPDATE audit SET details = '{\"n\": 999}' WHERE id = 42", 42, "was changed"),
    ("UPDATE audit SET username = 'mallory' WHERE id = 7", 7, "was changed"),
    ("DELETE FROM audit WHERE id = 150", 150, "is missing"),
    ("UPDATE audit SET id = id + 1000 WHERE id = 60", 60, "is missing"),
    # two entries swapped, with their hashes: the links no longer follow
    ("UPDATE audit SET id = -80 WHERE id = 80; UPDATE audit SET id = 80 WHERE id = 81; "
     "UPDATE audit SET id = 81 WHERE id = -80", 80, "does not follow"),
    # a forged entry at the end: not linked to the last one
    ("INSERT INTO audit (id, at, action, details, prev, hash) SELECT 251, at, 'sign_in', "
     "'{}', hash, hash FROM audit WHERE id = 3", 251, "does not follow"),
    # linked, but its hash is made up
    ("INSERT INTO audit (id, at, action, details, prev, hash) SELECT 251, at, 'sign_in', "
     "'{}', hash, hash FROM audit WHERE id = 250", 251, "was changed"),
    # everything after the last signed head replaced: the heads still vouch for entry 200
    ("UPDATE audit_heads SET signature = substr(signature, 1, 60) || '0000' WHERE "
     "entry_id = 100", 100, "bad signature"),
])
def test_any_change_to_the_trail_is_found_and_named(settings, tamper, entry, says):
    auditor = _trail(settings)
    _sql(settings, tamper)
    result = _verify(settings, auditor)
    assert not result.ok and result.bad_entry == entry and says in result.problem, result


def test_a_tail_cut_off_after_a_signed_head_is_found(settings):
    auditor = _trail(settings)
    _sql(settings, "DELETE FROM audit WHERE id > 180")
    result = _verify(settings, auditor)
    assert not result.ok and "ends at entry 180" in result.problem
    assert "181–200 were cut off" in result.problem


def test_ten_clients_appending_at_once_lose_and_double_nothing(settings):
    auditor = Auditor(settings)

    def client(k: int) -> None:
        with open_store(settings) as store:
            for n in range(100):
                auditor.record(store, "edit_segment", object=f"client:{k}", details={"n": n})

    threads = [threading.Thread(target=client, args=(k,)) for k in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    with open_store(settings) as store:
        seen = [(e.object, e.details["n"]) for e in store.audit_rows()]
    assert sorted(seen) == sorted((f"client:{k}", n) for k in range(10) for n in range(100))
    result = _verify(settings, auditor)
    assert result.ok and result.entries == 1000 and result.heads == 10


def test_an_export_is_signed_and_checks_without_the_box(settings):
    auditor = _trail(settings, 30)
    with open_store(settings) as store:
        lines = list(export_lines(store, auditor.key))
        since = list(export_lines(store, auditor.key, since="2000-01-01"))
    assert len(lines) == 31 and json.loads(lines[0])["details"]["格式"] == "docx"
    assert verify_export(lines, auditor.key.public_key()) == 30
    assert verify_export(since, auditor.key.public_key()) == 30
    forged = lines[:5] + [lines[5].replace('"n": 5', '"n": 6')] + lines[6:]
    with pytest.raises(ValueError, match="entry 6 was changed"):
        verify_export(forged, auditor.key.public_key())
    with pytest.raises(ValueError, match="entry 12 does not follow"):
        verify_export(lines[:10] + lines[11:], auditor.key.public_key())
    trailer = json.loads(lines[-1])
    trailer["export"]["lines_sha256"] = "0" * 64
    with pytest.raises(ValueError, match="not the ones signed"):
        verify_export(lines[:-1] + [json.dumps(trailer)], auditor.key.public_key())


def test_a_damaged_database_page_is_reported_and_appending_goes_on(settings):
    auditor = _trail(settings, 1500)
    with open_store(settings) as store:
        store.trail.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        leaves = [r[0] for r in store.trail.execute(
            "SELECT pageno FROM dbstat WHERE name = 'audit' AND pagetype = 'leaf' "
            "ORDER BY pageno")]
    page = leaves[len(leaves) // 2]  # a page in the middle of the trail
    data = bytearray(_trail_file(settings).read_bytes())
    data[(page - 1) * 4096 + 8:page * 4096 - 100] = b"\xff" * (4096 - 108)
    _trail_file(settings).write_bytes(bytes(data))
    result = _verify(settings, auditor)
    assert not result.ok and "database is damaged from entry" in result.problem
    assert 1 < result.bad_entry < 1500
    with open_store(settings) as store:  # the box keeps its trail going
        entry = auditor.record(store, "sign_in", address="192.0.2.9")
    assert entry.id == 1501


def test_an_unwritable_trail_is_set_aside_and_a_new_segment_says_where_it_broke(settings):
    auditor = _trail(settings, 1500)
    with open_store(settings) as store:
        store.trail.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        last_leaf = store.trail.execute(
            "SELECT pageno FROM dbstat WHERE name = 'audit' AND pagetype = 'leaf' "
            "ORDER BY pageno DESC LIMIT 1").fetchone()[0]
    data = bytearray(_trail_file(settings).read_bytes())
    data[(last_leaf - 1) * 4096 + 8:last_leaf * 4096 - 100] = b"\xff" * (4096 - 108)
    _trail_file(settings).write_bytes(bytes(data))
    with open_store(settings) as store:  # the end of the trail cannot be read
        entry = auditor.record(store, "sign_in", address="192.0.2.9")
        restart = store.audit_entries(action="audit_chain_restarted")[0]
        kept = restart.details["after_entry"]
        assert 1000 < kept < 1500 and restart.id == kept + 1 and entry.id == kept + 2
        assert restart.details["damaged_table"].startswith("audit_damaged_")
        assert "malformed" in restart.details["chain_restarted"]
        again = auditor.record(store, "sign_out", address="192.0.2.9")
        assert again.prev == entry.hash  # the new segment goes on as a chain
        result = verify(store, auditor.key.public_key())
    # the break is reported (signed heads covered the entries lost with the page), and the
    # new segment is recognised as one
    assert not result.ok and result.restarts == (kept + 1,)


def _make_audit_key(data_dir: str, start, keys) -> None:
    from device.audit import load_key, public_hex
    from device.settings import Settings

    start.wait(10)
    keys.put(public_hex(load_key(Settings.load().replace(data_dir=Path(data_dir)))))


def test_processes_starting_together_on_a_new_box_make_one_audit_key(tmp_path):
    """The web server, the worker and the recorder all sign the trail: started together on a
    new box, they must not each write a key of their own over the others' (one of them
    failed to start on a rename that another had just made)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    start, keys = context.Barrier(6), context.Queue()
    processes = [context.Process(target=_make_audit_key, args=(str(tmp_path), start, keys))
                 for _ in range(6)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert [process.exitcode for process in processes] == [0] * 6
    made = {keys.get(timeout=5) for _ in processes}
    assert len(made) == 1
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == [KEY_FILE]
