"""The box's install root: two slots, the active one behind a symlink, and the flash,
rollback, recovery and status operations.

    ROOT/current -> slots/a       the active slot (an atomic symlink swap changes it)
    ROOT/slots/a, ROOT/slots/b    code/, requirements.lock, SLOT.json (present = complete)
    ROOT/envs/<lock hash>/        Python environments, one per locked dependency set
    ROOT/data/, ROOT/models/      recordings + database, model store: outside the slots
    ROOT/state/                   state.json (version floor, previous slot, last outcome),
                                  flash.json (the journal of an update in progress),
                                  updates.log, backups/

A flash never touches the active slot.  Its journal lets ``recover`` (run before every flash,
rollback and start) finish or undo an update that was killed at any moment: the box always
starts on a complete slot, and the database is restored when a migration ran for a slot that
did not become active.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from device.audio import fsync_dir
from device.errors import TingjiError, is_disk_full
from updates.box import Box, UpdateFailed, write_json
from updates.bundle import (
    Bundle,
    BundleError,
    extract,
    lock_hash,
    open_bundle,
    parse_version,
    trusted_keys,
)
from updates.checks import check_health, install_default_models, run_migrations

HEALTH_TIMEOUT = 120.0


def _point_current(box: Box, slot: str) -> None:
    """The atomic switch: a new symlink renamed over ``current``."""
    temporary = box.root / "current.tmp"
    temporary.unlink(missing_ok=True)
    os.symlink(Path("slots") / slot, temporary)
    os.replace(temporary, box.current)
    fsync_dir(box.root)


# -- the database ---------------------------------------------------------------------------------

def _connect(box: Box, path: Path, like: Path | None = None):
    """A connection to ``path``, a database of the box's form: SQLite's while its main
    database is in the clear, else SQLCipher's under the main database's key, which the box
    must be unlocked to give (``like``: the database whose form is followed)."""
    from device import encryption
    from device.settings import Settings
    from device.store._base import raw_connection

    like = like or path
    if not like.exists() or encryption.in_the_clear(like):
        return raw_connection(path, timeout=60)
    settings = Settings(data_dir=box.data_dir, models_dir=box.models_dir)
    try:
        key = encryption.database_key(settings, "main")
    except encryption.BoxLocked as exc:
        raise UpdateFailed("the box's database is encrypted and the box is locked: unlock it "
                           "(System page, or `python -m device unlock`), then update") from exc
    return raw_connection(path, key, timeout=60)


def backup_database(box: Box, version: str) -> Path | None:
    """A consistent copy of the live database (SQLite's online backup; an encrypted database
    is copied encrypted, under its key), or None if there is no database yet.  Written under
    a temporary name, complete once renamed."""
    if not box.database.exists():
        return None
    folder = box.state_dir / "backups"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"tingji-before-{version}-{time.strftime('%Y%m%dT%H%M%S')}.db"
    partial = path.with_name(path.name + ".part")
    partial.unlink(missing_ok=True)
    source, copy = _connect(box, box.database), _connect(box, partial, like=box.database)
    try:
        source.backup(copy)
    finally:
        copy.close()
        source.close()
    with open(partial, "rb") as f:
        os.fsync(f.fileno())
    os.replace(partial, path)
    fsync_dir(folder)
    return path


def restore_database(box: Box, backup: Path) -> None:
    """Put the backup's content back into the live database, through SQLite (a running
    appliance keeps a consistent view); idempotent."""
    source, live = _connect(box, backup), _connect(box, box.database)
    try:
        source.backup(live)
    finally:
        live.close()
        source.close()


def _prune_backups(box: Box, keep: int = 5) -> None:
    backups = sorted((box.state_dir / "backups").glob("tingji-before-*.db"),
                     key=lambda p: p.stat().st_mtime)
    for old in backups[:-keep]:
        old.unlink(missing_ok=True)
        for log in (old.with_name(old.name + "-wal"), old.with_name(old.name + "-shm")):
            log.unlink(missing_ok=True)


# -- recovery -------------------------------------------------------------------------------------

def recover(box: Box) -> str | None:
    """Finish or undo an update that was interrupted; returns what was done (or None)."""
    (box.root / "current.tmp").unlink(missing_ok=True)
    for leftover in list(box.slots.glob(".staging-*")) + list(box.slots.glob(".trash-*")) + \
            list((box.root / "envs").glob(".partial-*")):
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        journal = json.loads(box.journal.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        journal = {"phase": "installing"}  # torn journal write: nothing was changed yet
    for key in ("server_pid", "child_pid"):  # nothing of the flash may still be running
        if journal.get(key):
            _stop(journal[key])
    slot, version = journal.get("slot"), journal.get("version")
    if journal.get("phase") == "switching" and box.active() == slot:
        outcome = f"update to {version} completed on slot {slot} (interrupted after the switch)"
        box.save_state(floor=version, previous=journal.get("from"),
                       last={"version": version, "outcome": "installed", "detail": outcome})
    else:
        backup = journal.get("backup")
        if journal.get("migrated") and backup and Path(backup).exists():
            restore_database(box, Path(backup))
        outcome = (f"update to {version} was interrupted ({journal.get('phase')}); "
                   f"staying on slot {box.active()}"
                   + (", database restored" if journal.get("migrated") else ""))
        box.save_state(last={"version": version, "outcome": "interrupted", "detail": outcome})
    box.journal.unlink(missing_ok=True)
    box.log(outcome)
    return outcome


def _stop(pid: int) -> None:
    """Kill a leftover child of a flash and wait until it is gone."""
    try:
        if "python" not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
            return  # the pid was reused by something else
        os.kill(pid, 9)
    except OSError:
        return
    for _ in range(300):
        if not Path(f"/proc/{pid}").exists() or "Z" in _proc_state(pid):
            return
        time.sleep(0.05)


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


# -- flashing -------------------------------------------------------------------------------------

def flash(box: Box, bundle_path: Path, *, allow_downgrade: bool = False,
          trust: Path | None = None, health_check: bool = True) -> dict:
    """Install a signed bundle (see the module doc).  ``trust`` names the folder of public
    keys for a box with no active slot yet (its first flash)."""
    recover(box)
    active = box.active()
    keys = trusted_keys(trust) if active is None and trust is not None else box.keys()
    incoming = box.state_dir / "incoming"  # the verified copy: root's alone
    incoming.mkdir(mode=0o700, parents=True, exist_ok=True)
    incoming.chmod(0o700)
    copy = incoming / "bundle.tar"
    copy.unlink(missing_ok=True)
    try:
        bundle = open_bundle(Path(bundle_path), keys, copy)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        reason = f"the disk is full ({exc.strerror}): no room to copy the bundle"
        box.save_state(last={"version": None, "outcome": "failed", "detail": reason})
        box.log(f"update FAILED before it started: {reason}")
        raise UpdateFailed(f"{reason}; nothing was changed") from exc
    try:
        if bundle.kind == "model":
            return _flash_model(box, bundle, allow_downgrade)
        return _flash_firmware(box, bundle, active, allow_downgrade, health_check)
    finally:
        copy.unlink(missing_ok=True)


def _flash_firmware(box: Box, bundle: Bundle, active: str | None, allow_downgrade: bool,
                    health_check: bool) -> dict:

    installed = box.slot_info(active)
    floor = max((v for v in (box.state().get("floor"), installed and installed["version"]) if v),
                key=parse_version, default=None)
    if floor and parse_version(bundle.version) <= parse_version(floor):
        if not allow_downgrade:
            raise UpdateFailed(f"version {bundle.version} is not newer than {floor} "
                               "(installed or already accepted); nothing was changed")
        box.log(f"OVERRIDE: installing {bundle.version} over the floor {floor} "
                f"(allow_downgrade), by uid {os.getuid()}")
    box.save_state(floor=floor)  # persisted before anything is replaced
    slot = "b" if active == "a" else "a"
    journal = {"phase": "installing", "slot": slot, "from": active, "version": bundle.version,
               "bundle": str(bundle.origin)}
    write_json(box.journal, journal)
    box.log(f"flash {bundle.version} ({bundle.origin.name}) into slot {slot}")
    try:
        _install_slot(box, bundle, slot)
        backup = backup_database(box, bundle.version)
        journal.update(phase="migrating", backup=str(backup) if backup else None, migrated=True)
        write_json(box.journal, journal)
        run_migrations(box, slot, journal)
        install_default_models(box, slot, journal)
        if health_check:
            journal.update(phase="checking")
            write_json(box.journal, journal)
            check_health(box, slot, journal)
        journal.update(phase="switching", server_pid=None, child_pid=None)
        write_json(box.journal, journal)
        _point_current(box, slot)
    except BaseException as exc:
        shutil.rmtree(box.slots / f".staging-{slot}", ignore_errors=True)
        reason = str(exc) or type(exc).__name__
        if is_disk_full(exc):
            reason = f"the disk is full ({exc.strerror}); nothing was switched"
        if journal.get("migrated") and journal.get("backup"):
            restore_database(box, Path(journal["backup"]))
        box.save_state(last={"version": bundle.version, "outcome": "failed", "detail": reason})
        box.journal.unlink(missing_ok=True)
        box.log(f"update to {bundle.version} FAILED, staying on slot {active}: {reason}")
        if isinstance(exc, (TingjiError, OSError, subprocess.SubprocessError)):
            raise UpdateFailed(f"update to {bundle.version} failed, the box stays on "
                               f"{installed['version'] if installed else 'no version'}: "
                               f"{reason}") from exc
        raise
    state = box.save_state(floor=bundle.version, previous=active,
                           last={"version": bundle.version, "outcome": "installed",
                                 "detail": f"slot {slot} active"})
    box.journal.unlink(missing_ok=True)
    _prune_backups(box)
    box.log(f"update to {bundle.version} installed; slot {slot} active")
    return {"version": bundle.version, "slot": slot, "previous": active, "state": state}


def _install_slot(box: Box, bundle: Bundle, slot: str) -> None:
    """Extract into a staging folder (hashes checked), make sure its environment exists,
    then rename it into place: the inactive slot is replaced in one step."""
    box.slots.mkdir(parents=True, exist_ok=True)
    staging = box.slots / f".staging-{slot}"
    shutil.rmtree(staging, ignore_errors=True)
    extract(bundle, staging)
    _ensure_environment(box, staging, bundle.manifest["python"])
    write_json(staging / "SLOT.json", {"version": bundle.version, "key_id": bundle.key_id,
                                        "bundle": bundle.origin.name,
                                        "installed": time.strftime("%Y-%m-%dT%H:%M:%S")})
    old = box.slots / slot
    if old.exists():
        trash = box.slots / f".trash-{slot}"
        os.replace(old, trash)
        shutil.rmtree(trash)
    os.replace(staging, old)
    fsync_dir(box.slots)


def _ensure_environment(box: Box, staging: Path, python_version: str) -> None:
    """The locked dependency set's environment: reused when the box has it, else created
    offline from the bundle's wheels."""
    lock = (staging / "requirements.lock").read_text()
    env = box.root / "envs" / lock_hash(lock)
    if (env / "bin" / "python").exists():
        return
    wheels = staging / "wheels"
    if not wheels.is_dir():
        raise BundleError("the bundle's dependencies differ from every environment on this "
                          "box and it carries no wheels: build it with its wheels")
    partial = box.root / "envs" / f".partial-{lock_hash(lock)}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    python = shutil.which(f"python{python_version}") or shutil.which("python3")
    if python is None:
        raise BundleError(f"the bundle needs Python {python_version}, which this box lacks")
    subprocess.run([python, "-m", "venv", str(partial)], check=True)
    subprocess.run([str(partial / "bin" / "python"), "-m", "pip", "install", "--no-index",
                    "--find-links", str(wheels), "--disable-pip-version-check", "-q",
                    "-r", str(staging / "requirements.lock")], check=True)
    os.replace(partial, env)
    shutil.rmtree(wheels)  # installed: the slot keeps the lock, not the wheels


def _flash_model(box: Box, bundle: Bundle, allow_downgrade: bool) -> dict:
    """A signed model bundle: verified, then installed into the model store (which checks
    every file's hash again and swaps the model in atomically).  Each model has a version
    floor, as the firmware has: an older signed bundle cannot bring back an older model."""
    from models.bundles import install_bundle, read_bundle_spec

    staging = box.root / "state" / "model-staging"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        extract(bundle, staging)
        model_id = read_bundle_spec(staging / "model.tar").id
        floors = box.state().get("model_floors", {})
        floor = floors.get(model_id)
        if floor and parse_version(bundle.version) <= parse_version(floor):
            if not allow_downgrade:
                raise UpdateFailed(f"model {model_id} {bundle.version} is not newer than "
                                   f"{floor} (installed or already accepted); nothing was "
                                   "changed")
            box.log(f"OVERRIDE: installing model {model_id} {bundle.version} over the floor "
                    f"{floor} (allow_downgrade), by uid {os.getuid()}")
        box.models_dir.mkdir(parents=True, exist_ok=True)
        installed = install_bundle(staging / "model.tar", box.models_dir, force=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    box.save_state(model_floors={**floors, model_id: bundle.version})
    box.log(f"model bundle {bundle.origin.name} ({bundle.version}) installed: {installed}")
    return {"model": str(installed), "version": bundle.version}


# -- rollback and status --------------------------------------------------------------------------

def rollback(box: Box) -> dict:
    """Return to the previous slot (the database is kept as it is: recordings made since
    stay; migrations only ever add to the schema)."""
    recover(box)
    active = box.active()
    other = "b" if active == "a" else "a"
    info = box.slot_info(other)
    if active is None or info is None:
        raise UpdateFailed("there is no complete previous slot to return to")
    if not _reads_encrypted(box, other):
        raise UpdateFailed(
            f"slot {other} ({info['version']}) has firmware from before the database's "
            f"encryption and cannot open it: the box stays on slot {active}")
    _point_current(box, other)
    state = box.save_state(previous=active, last={
        "version": info["version"], "outcome": "rolled back",
        "detail": f"slot {other} active again"})
    box.log(f"rollback: slot {other} ({info['version']}) active, slot {active} kept")
    return {"slot": other, "version": info["version"], "state": state}


def _reads_encrypted(box: Box, slot: str) -> bool:
    """Whether the firmware in ``slot`` can open the box's database as it is."""
    from device import encryption

    if not box.database.exists() or encryption.in_the_clear(box.database):
        return True
    return (box.slots / slot / "code" / "device" / "databases.py").is_file()


def status(box: Box) -> dict:
    active = box.active()
    inactive = "b" if active == "a" else "a"
    state = box.state()
    return {
        "root": str(box.root),
        "active": {"slot": active, **(box.slot_info(active) or {})} if active else None,
        "inactive": {"slot": inactive, **(box.slot_info(inactive) or {"version": None})},
        "floor": state.get("floor"),
        "last_update": state.get("last"),
        "update_in_progress": box.journal.exists(),
    }
