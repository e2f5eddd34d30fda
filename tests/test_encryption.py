"""Encrypted audio at rest: imports stored sealed, played back by range once unlocked,
transcribed only while unlocked (queued meanwhile), erased with their key."""

from __future__ import annotations

import re

import numpy as np
import pytest

from device import audio, databases, encryption, unlock
from device.audit import Auditor
from device.databases import open_store
from device.jobs import Runner
from device.pipeline import delete_recording, import_audio
from device.vault import SealedFileError, SealedReader, WrongSecretError, open_key
from tests.conftest import PASSPHRASE
from tests.crashes import killed_at_each_step
from tests.webutil import ENGLISH, make_box


def _pcm_wav(tmp_path, speech_wav):
    """The clip as 16-bit PCM, and a stretch of its samples' bytes to look for."""
    samples = audio.decode(speech_wav)
    path = tmp_path / "interview.wav"
    audio.write_wav(path, samples)
    pcm = path.read_bytes()
    return path, pcm[len(pcm) // 2 : len(pcm) // 2 + 64]


def _everything(folder) -> bytes:
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())


def test_an_import_is_stored_sealed_plays_by_range_and_is_erased_with_its_key(sealed_box,
                                                                              tmp_path,
                                                                              speech_wav):
    settings, recovery = sealed_box
    source, needle = _pcm_wav(tmp_path, speech_wav)
    box = make_box(settings)
    with open_store(settings) as store:
        recording, _ = import_audio(store, settings, source, title="Sealed")
    assert recording.audio_file == f"{recording.id}.wav.sealed"
    assert needle not in _everything(settings.data_dir)  # no sample of it in the clear
    plain = source.read_bytes()
    url = f"/recordings/{recording.id}/audio"
    whole = box.reviewer.client.get(url)
    assert whole.status_code == 200 and whole.content == plain
    assert whole.headers["content-type"] == "audio/wav"
    part = box.reviewer.client.get(url, headers={"range": "bytes=70000-70999"})
    assert part.status_code == 206 and part.content == plain[70000:71000]
    assert part.headers["content-range"] == f"bytes 70000-70999/{len(plain)}"
    tail = box.reviewer.client.get(url, headers={"range": "bytes=-100"})
    assert tail.content == plain[-100:]
    assert box.reviewer.client.get(url, headers={"range": "bytes=9999999-"}).status_code == 416
    assert "<strong>unlocked</strong>" in box.admin.client.get("/system").text
    # locked: the audio is refused with the reason, not served or broken
    encryption.lock_box(settings)
    refused = box.reviewer.client.get(url)
    assert refused.status_code == 423 and "locked" in refused.text
    system = box.admin.client.get("/system").text
    assert "<strong>locked</strong>" in system and "0 recording(s) made since" in system
    with pytest.raises(WrongSecretError):
        encryption.unlock_box(settings, passphrase="not the passphrase")
    encryption.unlock_box(settings, recovery=recovery)  # the recovery key works too
    # deleted: its key is destroyed; a copy of the ciphertext taken before opens with
    # nothing left on the box
    copy = tmp_path / "copy.sealed"
    copy.write_bytes((settings.audio_dir / recording.audio_file).read_bytes())
    with open_store(settings) as store:
        other, _ = import_audio(store, settings, source, title="Another")
        delete_recording(store, settings, recording.id)
    private = unlock.current(settings.data_dir)
    from device.store.keys import DataKeys

    with DataKeys(encryption.keys_path(settings)) as keys:
        names = keys.names()
        assert [n for n in names if n.startswith("recording:")] == \
            [encryption.key_name(other.id)]
        for name in names:  # the databases' keys included
            with pytest.raises(SealedFileError), \
                    SealedReader(copy, open_key(keys.get(name), private)) as reader:
                reader.read_range(0, 16)


@pytest.mark.slow
def test_a_recording_imported_while_locked_is_transcribed_after_the_unlock(sealed_box,
                                                                           tmp_path,
                                                                           speech_wav,
                                                                           engines):
    settings, _ = sealed_box
    source, _ = _pcm_wav(tmp_path, speech_wav)
    encryption.lock_box(settings)
    runner = Runner(settings, engines)
    with open_store(settings) as store:
        recording, job = import_audio(store, settings, source)  # no secret needed
        assert runner.run(store, runner.claim(store, job.id)) is False  # it cannot start
        waiting = store.get_job(job.id)
        assert (waiting.status, waiting.attempts) == ("queued", 0)
        assert store.get_recording(recording.id).status == "queued"
        encryption.unlock_box(settings, passphrase=PASSPHRASE)
        assert runner.run(store, runner.claim(store, job.id))
        text = " ".join(s.text for s in store.segments(recording.id)).lower()
    assert "country" in text or "americans" in text, text


def test_an_upload_is_sealed_as_it_arrives(sealed_box, tmp_path, speech_wav, monkeypatch):
    """The uploaded bytes reach the disk sealed: every byte written to the upload's file is
    watched, and no stretch of the clip's samples is among them."""
    from web.routers import imports

    settings, _ = sealed_box
    source, needle = _pcm_wav(tmp_path, speech_wav)
    written = bytearray()
    opened = imports._open_new

    class Watched:
        def __init__(self, out):
            self._out = out

        def write(self, data):
            written.extend(data)
            return self._out.write(data)

        def __getattr__(self, name):
            return getattr(self._out, name)

    monkeypatch.setattr(imports, "_open_new", lambda path: Watched(opened(path)))
    box = make_box(settings)
    response = box.interviewer.api("PUT", "/api/upload?filename=talk.wav",
                                   content=source.read_bytes())
    assert response.status_code == 200, response.text
    assert len(written) > len(source.read_bytes()) and needle not in written
    with open_store(settings) as store:
        recording = store.get_recording(response.json()["recording_id"])
    assert recording.audio_file == f"{recording.id}.wav.sealed"
    assert needle not in _everything(settings.data_dir)
    played = box.interviewer.client.get(f"/recordings/{recording.id}/audio")
    assert played.content == source.read_bytes()
    assert not list((settings.data_dir / "uploads").iterdir())


@pytest.mark.slow  # a dozen Argon2id derivations at the box's real cost
def test_the_admin_unlocks_locks_and_recovers_on_the_system_page(sealed_box):
    settings, recovery = sealed_box
    box = make_box(settings)
    admin = box.admin

    def post(url, **form):
        return admin.client.post(url, data={**form, "csrf_token": admin.csrf},
                                 follow_redirects=False)

    assert post("/admin/lock").status_code == 303 and encryption.locked(settings)
    page = admin.client.get("/system").text
    assert 'action="/admin/unlock"' in page and "<strong>locked</strong>" in page
    wrong = post("/admin/unlock", passphrase="a wrong passphrase")
    assert wrong.status_code == 400 and "wrong passphrase" in wrong.text
    assert encryption.locked(settings)
    assert post("/admin/unlock", passphrase=PASSPHRASE).status_code == 303
    assert not encryption.locked(settings)
    # a new passphrase: the old one stops working, the new one and the recovery key work
    assert post("/admin/passphrase", current="nope nope", new="the next one").status_code == 400
    assert post("/admin/passphrase", current=PASSPHRASE, new="the next one").status_code == 303
    post("/admin/lock")
    assert post("/admin/unlock", passphrase=PASSPHRASE).status_code == 400
    assert post("/admin/unlock", passphrase="the next one").status_code == 303
    # the recovery key unlocks and replaces a forgotten passphrase
    post("/admin/lock")
    assert post("/admin/unlock", recovery=recovery, new_passphrase="short").status_code == 400
    assert post("/admin/unlock", recovery=recovery,
                new_passphrase="remembered at last").status_code == 303
    assert not encryption.locked(settings)
    encryption.lock_box(settings)
    encryption.unlock_box(settings, passphrase="remembered at last")
    # guessing is paused: after five wrong secrets in 15 minutes (three so far), 429 even
    # for the right one; every try is in the audit trail with its answer
    post("/admin/lock")
    assert post("/admin/unlock", passphrase="guess").status_code == 400
    assert post("/admin/unlock", passphrase="guess").status_code == 400
    assert post("/admin/unlock", passphrase="guess").status_code == 429
    assert post("/admin/unlock", passphrase="remembered at last").status_code == 429
    assert encryption.locked(settings)
    encryption.unlock_box(settings, passphrase="remembered at last")
    admin.client.get("/system")  # the entries made while locked join the trail
    with open_store(settings) as store:
        answers = [e.details["status"] for e in store.audit_entries(limit=200)
                   if e.action == "unlock_box"]
    assert answers.count(429) == 2 and answers.count(400) == 5  # 4 wrong, 1 short


# -- recording on an encrypted box --------------------------------------------------------

def test_sealed_segments_hold_every_sample_survive_a_torn_record_and_read_as_one_wav(tmp_path):
    from device import storage
    from device.vault import new_data_key

    key = new_data_key()
    samples = np.random.default_rng(5).uniform(-0.5, 0.5, 3 * audio.SAMPLE_RATE)
    samples = samples.astype(np.float32)
    folder = tmp_path / "capture"
    writer = storage.SegmentWriter(folder, segment_seconds=1.0, data_key=key)
    for block in np.array_split(samples, 37):  # blocks as a sound card hands them
        writer.write(block)
    writer.close()
    segments = storage.segment_files(folder, storage.SEALED_SUFFIX)
    assert len(segments) == 3 and not storage.segment_files(folder)
    pcm = storage.to_pcm(samples)
    assert pcm[1000:1064] not in _everything(folder)
    # a crash mid-record: the torn tail is cut off without the key; the rest stays
    with open(segments[-1], "ab") as f:
        f.write(b"\x00\x00\x10\x00" + b"half a record")
    assert storage.repair_sealed(folder) == samples.size
    assert storage.repair_sealed(folder) == samples.size  # idempotent
    wav = audio.SealedAudio(folder, key)
    with wav.open() as reader:
        whole = reader.read_range(0, reader.size)
        assert whole[:44] == storage.wav_header(len(pcm)) and whole[44:] == pcm
        assert reader.read_range(44 + 31_999, 44 + 32_003) == pcm[31_999:32_003]
    decoded = audio.decode(wav)
    assert np.array_equal(np.round(decoded * 32768).astype(np.int16),
                          np.frombuffer(pcm, dtype="<i2"))


@pytest.mark.slow
def test_a_locked_box_records_sealed_and_after_a_restart_and_the_unlock_transcribes_it(
        sealed_box, tmp_path, speech_wav, engines):
    import shutil

    from device.capture import FileSource
    from device.recorder import Recorder

    settings, _ = sealed_box
    source, needle = _pcm_wav(tmp_path, speech_wav)
    encryption.lock_box(settings)
    recorder = Recorder(settings, engines, live=False)
    recorder.start(FileSource(source, speed=8.0), title="Locked")
    recording = recorder.wait(60)
    assert recording.audio_file == f"{recording.id}.wav.sealed"
    assert (settings.audio_dir / recording.audio_file).is_dir()
    assert needle not in _everything(settings.data_dir)
    runner = Runner(settings, engines)
    with open_store(settings) as store:
        [job] = store.jobs_for(recording.id)
        assert runner.run(store, runner.claim(store, job.id)) is False  # waits
    encryption.lock_box(settings)  # a power cut: what the box kept in memory is gone
    shutil.rmtree(unlock.key_file(settings.data_dir).parent)
    with open_store(settings) as store:  # a new run, locked: the recording is out of reach
        assert store.list_recordings() == []
    encryption.unlock_box(settings, passphrase=PASSPHRASE)
    with open_store(settings) as store:  # moved into the main database at the unlock
        [job] = store.jobs_for(recording.id)
        assert runner.run(store, runner.claim(store, job.id))
        text = " ".join(s.text for s in store.segments(recording.id)).lower()
    assert "country" in text or "americans" in text, text
    box = make_box(settings)
    played = box.admin.client.get(f"/recordings/{recording.id}/audio",
                                  headers={"range": "bytes=0-99"})
    assert played.status_code == 206 and played.content[:4] == b"RIFF"
    assert played.content[44:100] == source.read_bytes()[44:100]
    with open_store(settings) as store:
        delete_recording(store, settings, recording.id)
    assert not (settings.audio_dir / recording.audio_file).exists()


@pytest.mark.slow
def test_a_sealed_recording_cut_by_kill_9_is_recovered_while_locked(settings, tmp_path,
                                                                     monkeypatch):
    import signal
    import time

    from device import storage
    from device.recorder import capture_dir, recover_interrupted
    from tests.test_recorder import _pcm_exact, _record_process, _speech16

    monkeypatch.delenv("TINGJI_RUNTIME_DIR", raising=False)
    path, expected = _speech16(tmp_path, seconds=12)
    encryption.init(settings, PASSPHRASE)  # and never unlocked: the box records locked
    recorder = _record_process(settings, path)
    folder = capture_dir(settings, 1)
    deadline = time.monotonic() + 30
    while not (folder.is_dir() and storage.segment_files(folder, storage.SEALED_SUFFIX)):
        assert time.monotonic() < deadline, "the recorder never wrote a segment"
        time.sleep(0.002)
    started = time.monotonic()
    time.sleep(4.0)
    recorder.send_signal(signal.SIGKILL)
    captured = time.monotonic() - started + 0.1
    recorder.wait(10)
    assert recover_interrupted(settings) == [1]  # locked: moved as it is, not decrypted
    with open_store(settings) as store:
        recording = store.get_recording(1)
    assert recording.status == "recovered" and recording.audio_file == "1.wav.sealed"
    try:
        encryption.unlock_box(settings, passphrase=PASSPHRASE)
        stored = _pcm_exact(audio.decode(encryption.stored_audio(settings, recording)))
    finally:
        encryption.lock_box(settings)
    assert np.array_equal(stored, expected[: stored.size])  # a clean prefix, no gaps
    assert captured - stored.size / audio.SAMPLE_RATE <= 0.25


def test_first_start_can_make_the_box_key_and_shows_the_recovery_key_once(settings,
                                                                        monkeypatch):
    from fastapi.testclient import TestClient

    from tests.webutil import PASSWORD, form_token
    from web.app import create_app

    monkeypatch.delenv("TINGJI_RUNTIME_DIR", raising=False)
    app = create_app(settings)
    client = TestClient(app, headers=ENGLISH)
    token = form_token(client.get("/setup").text)
    form = {"code": app.state.setup_code, "username": "root", "password": PASSWORD,
            "csrf_token": token}
    short = client.post("/setup", data={**form, "unlock_passphrase": "short"})
    assert short.status_code == 400 and "at least 8 characters" in short.text
    same = client.post("/setup", data={**form, "unlock_passphrase": PASSWORD})
    assert same.status_code == 400 and "passphrase other than the admin" in same.text
    assert not encryption.enabled(settings)
    try:
        made = client.post("/setup", data={**form, "unlock_passphrase": PASSPHRASE})
        assert made.status_code == 200
        shown = re.search(r'<code id="recovery-key">([0-9A-Z-]+)</code>', made.text).group(1)
        assert encryption.enabled(settings) and not encryption.locked(settings)
        assert shown not in encryption.keyring_path(settings).read_text()  # shown, not kept
        assert client.get("/system").status_code == 200  # signed in as the admin
        encryption.lock_box(settings)
        assert "The box is locked" in client.get("/").text  # the admin is told at once
        encryption.unlock_box(settings, recovery=shown)
        assert "The box is locked" not in client.get("/").text
    finally:
        encryption.lock_box(settings)


def _plain_recordings(settings, source, count: int) -> list[int]:
    """Recordings imported before the box had its key: their audio in the clear."""
    with open_store(settings) as store:
        ids = [import_audio(store, settings, source, title=f"Plain {n}")[0].id
               for n in range(count)]
        assert all(not encryption.is_sealed(store.get_recording(i).audio_file) for i in ids)
    return ids


def _heard(settings, recording_id: int) -> bytes:
    """A recording's stored audio as the box reads it (plain or sealed), its row read from
    the main database in whichever form it is (nothing sealed meanwhile)."""
    with databases.main_store(settings) as store:
        recording = store.get_recording(recording_id)
    stored = encryption.stored_audio(settings, recording)
    if isinstance(stored, audio.SealedAudio):
        with SealedReader(stored.path, stored.key) as sealed:
            return sealed.read()
    return stored.read_bytes()


def test_audio_stored_before_the_key_existed_is_sealed_and_its_plaintext_erased(
        settings, tmp_path, speech_wav, monkeypatch):
    monkeypatch.delenv("TINGJI_RUNTIME_DIR", raising=False)
    if unlock.file_system(unlock.runtime_dir()) not in unlock.MEMORY_FILE_SYSTEMS:
        pytest.skip("no tmpfs to keep the unlocked key in")
    source, needle = _pcm_wav(tmp_path, speech_wav)
    ids = _plain_recordings(settings, source, 2)
    assert needle in _everything(settings.data_dir)
    encryption.init(settings, PASSPHRASE)  # locked: sealing needs no secret
    assert databases.seal_main(settings) == ids  # the audio first, then the database
    assert databases.seal_main(settings) is None  # done: nothing left
    assert needle not in _everything(settings.data_dir)  # no sample left in the clear
    try:
        encryption.unlock_box(settings, passphrase=PASSPHRASE)
        with open_store(settings) as store:
            assert encryption.seal_existing(settings, store) == []
            assert all(store.get_recording(i).audio_file == f"{i}.wav.sealed" for i in ids)
        assert all(_heard(settings, i) == source.read_bytes() for i in ids)
    finally:
        encryption.lock_box(settings)


@pytest.mark.slow
def test_sealing_the_stored_audio_cut_by_kill_9_leaves_every_recording_readable(
        settings, tmp_path, monkeypatch):
    """Killed (SIGKILL, by itself) at each file operation in turn while it seals — the n-th
    file opened, renamed or removed, database opened or statement run, n = 1, 2, … until a
    run finishes:
    after every kill each recording reads, in its old or its new form; the run after
    finishes, and no plaintext or partial file is left."""
    monkeypatch.delenv("TINGJI_RUNTIME_DIR", raising=False)
    if unlock.file_system(unlock.runtime_dir()) not in unlock.MEMORY_FILE_SYSTEMS:
        pytest.skip("no tmpfs to keep the unlocked key in")
    source = tmp_path / "noise.wav"
    audio.write_wav(source, (np.random.default_rng(7).standard_normal(
        20 * audio.SAMPLE_RATE) * 0.1).astype(np.float32))
    ids = _plain_recordings(settings, source, 2)
    with open_store(settings) as store:  # a trail kept in the clear, sealed with the rest
        for rid in ids:
            Auditor(settings).record(store, "view_recording", object=f"recording:{rid}")
    viewed = [f"recording:{rid}" for rid in ids]
    encryption.init(settings, PASSPHRASE)
    encryption.unlock_box(settings, passphrase=PASSPHRASE)
    setup = ("from pathlib import Path\n"
             "from device import databases\n"
             "from device.settings import Settings\n"
             "s = Settings(data_dir=Path(sys.argv[1]))\n")
    work = "databases.seal_main(s)\n"  # the audio, then the database

    def every_recording_reads(step: int) -> None:
        assert all(_heard(settings, i) == source.read_bytes() for i in ids), step
        with databases.main_store(settings) as store:  # the trail too, in either form
            assert [e.object for e in store.audit_entries()] == viewed, step

    try:
        step = killed_at_each_step(setup, work, settings.data_dir, every_recording_reads)
        assert step > 10  # it was cut at every one of its steps before this run
        assert not encryption.in_the_clear(settings.database_path)
        assert not encryption.in_the_clear(databases.trail_path(settings))
        with open_store(settings) as store:
            assert encryption.seal_existing(settings, store) == []
            assert all(store.get_recording(i).audio_file == f"{i}.wav.sealed" for i in ids)
        assert sorted(p.name for p in settings.audio_dir.iterdir()) == \
            sorted(f"{i}.wav.sealed" for i in ids)  # no plaintext, no part left
    finally:
        encryption.lock_box(settings)
