"""The box key and sealed files: wrong secrets, recovery, damage, and power cuts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

from device.vault import (
    CHUNK,
    Keyring,
    SealedFileError,
    SealedReader,
    SealedWriter,
    VaultError,
    WrongSecretError,
    new_data_key,
    open_key,
    seal_key,
    sealed_size,
)

PASSPHRASE = "correct horse battery"


def _raw(private) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())


def test_the_box_key_opens_with_the_passphrase_or_the_recovery_key_only(tmp_path):
    keyring, recovery = Keyring.create(PASSPHRASE)  # the real Argon2id cost
    path = tmp_path / "keyring.json"
    keyring.save(path)
    assert path.stat().st_mode & 0o777 == 0o600
    loaded = Keyring.load(path)
    private = loaded.unlock(PASSPHRASE)
    assert _raw(private) not in path.read_bytes()  # only wrapped on disk
    with pytest.raises(WrongSecretError, match="wrong passphrase"):
        loaded.unlock("correct horse batterY")
    # the recovery key, however it is typed back, opens the same key
    assert _raw(loaded.unlock_with_recovery(recovery.lower().replace("-", " "))) == \
        _raw(private)
    with pytest.raises(WrongSecretError):
        loaded.unlock_with_recovery(recovery[:-1] + ("2" if recovery[-1] != "2" else "3"))
    # a new passphrase re-wraps the key: the old one stops working, the recovery key not
    renewed = loaded.with_passphrase(loaded.unlock_with_recovery(recovery), "a new secret!")
    renewed.save(path)
    again = Keyring.load(path)
    assert _raw(again.unlock("a new secret!")) == _raw(private)
    with pytest.raises(WrongSecretError):
        again.unlock(PASSPHRASE)
    assert _raw(again.unlock_with_recovery(recovery)) == _raw(private)
    with pytest.raises(VaultError, match="at least 8 characters"):
        Keyring.create("short")


def test_a_damaged_keyring_is_a_clear_error(tmp_path):
    path = tmp_path / "keyring.json"
    path.write_text("{not json")
    with pytest.raises(VaultError, match="the keyring cannot be read"):
        Keyring.load(path)


def test_data_keys_are_sealed_without_a_secret_and_open_only_on_their_box():
    keyring, _ = Keyring.create(PASSPHRASE, _fast=True)
    other, _ = Keyring.create(PASSPHRASE, _fast=True)
    data_key = new_data_key()
    sealed = seal_key(data_key, keyring.public_key)  # the public key is all it takes
    assert data_key not in sealed
    assert open_key(sealed, keyring.unlock(PASSPHRASE)) == data_key
    with pytest.raises(VaultError, match="does not open"):
        open_key(sealed, other.unlock(PASSPHRASE))
    damaged = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(VaultError):
        open_key(damaged, keyring.unlock(PASSPHRASE))


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 12345])
def test_a_sealed_file_reads_back_any_range_and_holds_no_plaintext(tmp_path, size):
    plain = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    key = new_data_key()
    path = tmp_path / "x.sealed"
    with open(path, "wb") as out:
        writer = SealedWriter(out, key)
        for start in range(0, size, 10_000):  # written in pieces, as audio arrives
            writer.write(plain[start : start + 10_000])
        writer.close()
    assert path.stat().st_size == sealed_size(size)
    if size >= 64:
        assert plain[size // 2 : size // 2 + 32] not in path.read_bytes()
    with SealedReader(path, key) as reader:
        assert reader.size == size
        assert b"".join(reader.chunks()) == plain
        rng = np.random.default_rng(1)
        for _ in range(20):
            a, b = sorted(int(v) for v in rng.integers(0, size + 1, 2))
            assert reader.read_range(a, b) == plain[a:b]
    with pytest.raises(SealedFileError), SealedReader(path, new_data_key()) as reader:
        list(reader.chunks())  # another key opens no chunk, not even an empty last one


def test_a_damaged_chunk_is_named_and_the_rest_still_reads(tmp_path):
    key = new_data_key()
    plain = os.urandom(3 * CHUNK)
    path = tmp_path / "x.sealed"
    with open(path, "wb") as out:
        writer = SealedWriter(out, key)
        writer.write(plain)
        writer.close()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40  # a bit flipped in the second chunk
    path.write_bytes(bytes(data))
    with SealedReader(path, key) as reader:
        assert reader.read_range(0, CHUNK) == plain[:CHUNK]
        assert reader.read_range(2 * CHUNK, 3 * CHUNK) == plain[2 * CHUNK :]
        with pytest.raises(SealedFileError, match="chunk 2 of 3 is damaged"):
            reader.read_range(CHUNK, CHUNK + 1)
    # cut at a chunk's edge: the file no longer ends with its last chunk
    good = tmp_path / "y.sealed"
    with open(good, "wb") as out:
        writer = SealedWriter(out, key)
        writer.write(plain)
        writer.close()
    cut = tmp_path / "cut.sealed"
    cut.write_bytes(good.read_bytes()[: -(CHUNK + 16)])
    with SealedReader(cut, key) as reader, pytest.raises(SealedFileError, match="cut short"):
        reader.read_range(0, reader.size)


def test_a_decoder_reads_sealed_audio_as_a_file(tmp_path, speech_wav):
    key = new_data_key()
    sealed = tmp_path / "speech.sealed"
    with open(speech_wav, "rb") as source, open(sealed, "wb") as out:
        writer = SealedWriter(out, key)
        writer.write(source.read())
        writer.close()
    def samples(source) -> np.ndarray:
        with av.open(source) as container:
            return np.concatenate([f.to_ndarray().reshape(-1)
                                   for f in container.decode(audio=0)])

    with SealedReader(sealed, key) as reader:
        assert np.array_equal(samples(reader), samples(str(speech_wav)))


CHANGER = """
import sys, itertools
from pathlib import Path
from device.vault import Keyring
path = Path(sys.argv[1])
keyring = Keyring.load(path)
try:  # the run before was killed after one change or the other
    private = keyring.unlock("old passphrase")
except Exception:
    private = keyring.unlock("new passphrase")
print("ready", flush=True)
for n in itertools.count():
    secret = "new passphrase" if n % 2 == 0 else "old passphrase"
    keyring = keyring.with_passphrase(private, secret)
    keyring.save(path)
"""


@pytest.mark.slow
def test_a_power_cut_during_a_passphrase_change_leaves_the_old_or_the_new(tmp_path):
    keyring, recovery = Keyring.create("old passphrase", _fast=True)
    path = tmp_path / "keyring.json"
    keyring.save(path)
    expected = _raw(keyring.unlock("old passphrase"))
    for delay in (0.05, 0.13, 0.21):
        child = subprocess.Popen([sys.executable, "-c", CHANGER, str(path)],
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        loaded = Keyring.load(path)
        opened = []
        for secret in ("old passphrase", "new passphrase"):
            try:
                opened.append(_raw(loaded.unlock(secret)))
            except WrongSecretError:
                pass
        assert opened == [expected]
        assert _raw(loaded.unlock_with_recovery(recovery)) == expected


def test_erasing_a_data_key_leaves_no_copy_of_it_and_its_recording_unreadable(tmp_path):
    from device.store.keys import DataKeys

    keyring, _ = Keyring.create(PASSPHRASE, _fast=True)
    private = keyring.unlock(PASSPHRASE)
    data_key = new_data_key()
    audio_file = tmp_path / "7.sealed"
    with open(audio_file, "wb") as out:
        writer = SealedWriter(out, data_key)
        writer.write(b"the interview " * 1000)
        writer.close()
    backup = tmp_path / "backup.sealed"  # a copy made before the deletion
    backup.write_bytes(audio_file.read_bytes())
    path = tmp_path / "keys.db"
    with DataKeys(path) as keys:
        sealed = seal_key(data_key, keyring.public_key)
        keys.put("recording:7", sealed)
        keys.put("recording:8", seal_key(new_data_key(), keyring.public_key))
        with SealedReader(backup, open_key(keys.get("recording:7"), private)) as reader:
            assert reader.read_range(0, 13) == b"the interview"
        assert keys.erase("recording:7") and not keys.erase("recording:7")
        assert keys.names() == ["recording:8"]
    leftovers = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert sealed not in leftovers and sealed[:32] not in leftovers
    # nothing left on the box opens the copy: every remaining key is another recording's
    with DataKeys(path) as keys:
        for name in keys.names():
            with pytest.raises(SealedFileError), \
                    SealedReader(backup, open_key(keys.get(name), private)) as reader:
                reader.read_range(0, 13)


def test_the_unlocked_key_is_shared_in_memory_only_and_locking_forgets_it(tmp_path,
                                                                         monkeypatch):
    from device import unlock

    monkeypatch.delenv("TINGJI_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    if unlock.file_system(Path("/dev/shm")) not in unlock.MEMORY_FILE_SYSTEMS:
        pytest.skip("this machine has no tmpfs at /dev/shm")
    keyring, _ = Keyring.create(PASSPHRASE, _fast=True)
    box, other_box = tmp_path / "data", tmp_path / "other"
    assert unlock.current(box) is None  # a box starts locked
    unlock.publish(box, keyring.unlock(PASSPHRASE))
    try:
        path = unlock.key_file(box)
        assert unlock.file_system(path) in unlock.MEMORY_FILE_SYSTEMS
        assert path.stat().st_mode & 0o777 == 0o600
        assert path.parent.stat().st_mode & 0o777 == 0o700
        assert _raw(unlock.current(box)) == _raw(keyring.unlock(PASSPHRASE))
        assert unlock.current(other_box) is None  # another data directory: its own key
        assert not any(p.name == "box.key" for p in tmp_path.rglob("*"))  # not on the disk
    finally:
        unlock.lock(box)
    assert unlock.current(box) is None and not path.exists()
    # a folder on a disk is passed over as the place for the key
    monkeypatch.setenv("TINGJI_RUNTIME_DIR", str(tmp_path))
    if unlock.file_system(tmp_path) not in unlock.MEMORY_FILE_SYSTEMS:
        assert unlock.runtime_dir() == Path("/dev/shm")
