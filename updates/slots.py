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
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from device.audio import durable_file, fsync_dir
from device.errors import TingjiError, is_disk_full
from device.libc import die_with_parent
from updates.bundle import (
    KEYS_DIR,
    Bundle,
    BundleError,
    extract,
    lock_hash,
    open_bundle,
    parse_version,
    trusted_keys,
)

SLOTS = ("a", "b")
HEALTH_TIMEOUT = 120.0


class UpdateFailed(TingjiError):
    """The update was not applied; the box stays on (or went back to) the old slot."""


class Box:
    """An install root (``make flash TARGET=…``)."""

    def __init__(self, root: Path):
        self.root = Path(root).absolute()
        self.slots = self.root / "slots"
        self.state_dir = self.root / "state"
        self.current = self.root / "current"

    # -- paths and state ------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def database(self) -> Path:
        return self.data_dir / "tingji.db"

    @property
    def journal(self) -> Path:
        return self.state_dir / "flash.json"

    def active(self) -> str | None:
        try:
            target = os.readlink(self.current)
        except OSError:
            return None
        name = Path(target).name
        return name if name in SLOTS else None

    def slot_info(self, name: str | None) -> dict | None:
        """The slot's SLOT.json, or None when the slot is missing or incomplete."""
        if name is None:
            return None
        try:
            return json.loads((self.slots / name / "SLOT.json").read_text())
        except (OSError, ValueError):
            return None

    def state(self) -> dict:
        try:
            return json.loads((self.state_dir / "state.json").read_text())
        except (OSError, ValueError):
            return {}

    def save_state(self, **changes: object) -> dict:
        state = {**self.state(), **changes}
        _write_json(self.state_dir / "state.json", state)
        return state

    def log(self, message: str) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / "updates.log", "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {message}\n")
            f.flush()
            os.fsync(f.fileno())

    def python(self, slot: str) -> Path:
        lock = (self.slots / slot / "requirements.lock").read_text()
        return self.root / "envs" / lock_hash(lock) / "bin" / "python"

    def environment(self, slot: str, data_dir: Path | None = None) -> dict[str, str]:
        """Variables under which a slot's code runs: its code first on the path, the data
        and the models from outside the slots."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("TINGJI_")}
        env.update(PYTHONPATH=str(self.slots / slot / "code"),
                   TINGJI_DATA_DIR=str(data_dir or self.data_dir),
                   TINGJI_MODELS_DIR=str(self.models_dir), HF_HUB_OFFLINE="1")
        return env

    def keys(self) -> dict:
        """The public keys the active firmware trusts."""
        active = self.active()
        folder = self.slots / active / "code" / "updates" / "keys" if active else KEYS_DIR
        return trusted_keys(folder)


def _write_json(path: Path, value: dict) -> None:
    """Write atomically and durably (temp file, fsync, rename, fsync the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with durable_file(path) as f:
        f.write(json.dumps(value, indent=1).encode())


def _point_current(box: Box, slot: str) -> None:
    """The atomic switch: a new symlink renamed over ``current``."""
    temporary = box.root / "current.tmp"
    temporary.unlink(missing_ok=True)
    os.symlink(Path("slots") / slot, temporary)
    os.replace(temporary, box.current)
    fsync_dir(box.root)


# -- the database ---------------------------------------------------------------------------------

def backup_database(box: Box, version: str) -> Path | None:
    """A consistent copy of the live database (SQLite's online backup), or None if there is
    no database yet.  Written under a temporary name, complete once renamed."""
    if not box.database.exists():
        return None
    folder = box.state_dir / "backups"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"tingji-before-{version}-{time.strftime('%Y%m%dT%H%M%S')}.db"
    partial = path.with_name(path.name + ".part")
    partial.unlink(missing_ok=True)
    source, copy = sqlite3.connect(box.database), sqlite3.connect(partial)
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
    source, live = sqlite3.connect(backup), sqlite3.connect(box.database, timeout=60)
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
    _write_json(box.journal, journal)
    box.log(f"flash {bundle.version} ({bundle.origin.name}) into slot {slot}")
    try:
        _install_slot(box, bundle, slot)
        backup = backup_database(box, bundle.version)
        journal.update(phase="migrating", backup=str(backup) if backup else None, migrated=True)
        _write_json(box.journal, journal)
        _migrate(box, slot, journal)
        if health_check:
            journal.update(phase="checking")
            _write_json(box.journal, journal)
            _health_check(box, slot, journal)
        journal.update(phase="switching", server_pid=None, child_pid=None)
        _write_json(box.journal, journal)
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
    _write_json(staging / "SLOT.json", {"version": bundle.version, "key_id": bundle.key_id,
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


def _migrate(box: Box, slot: str, journal: dict) -> None:
    """Run the new slot's migrations on the live database, in a child process recorded in
    the journal (so recovery can make sure it is gone before restoring the backup)."""
    box.data_dir.mkdir(parents=True, exist_ok=True)
    child = subprocess.Popen(
        [str(box.python(slot)), "-c",
         "import sys; from pathlib import Path; from device.store import Store; "
         "s = Store(Path(sys.argv[1])); print(s.schema_version); s.close()",
         str(box.database)],
        env=box.environment(slot), cwd=box.slots / slot / "code", stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, preexec_fn=_die_with_parent)
    journal["child_pid"] = child.pid
    _write_json(box.journal, journal)
    _, stderr = child.communicate(timeout=600)
    if child.returncode != 0:
        raise UpdateFailed(f"the database migration failed: {stderr.strip()[-500:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _health_check(box: Box, slot: str, journal: dict) -> None:
    """The new slot must serve /health (200, status ok) on a spare port and transcribe the
    bundled clip into the words of its reference."""
    code = box.slots / slot / "code"
    port = _free_port()
    env = {**box.environment(slot), "TINGJI_HOST": "127.0.0.1", "TINGJI_PORT": str(port)}
    log = open(box.state_dir / "healthcheck.log", "wb")
    server = subprocess.Popen([str(box.python(slot)), "-m", "device", "serve"], env=env,
                              cwd=code, stdin=subprocess.DEVNULL, stdout=log,
                              stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    journal["server_pid"] = server.pid
    _write_json(box.journal, journal)
    scratch = box.state_dir / "healthcheck-data"
    try:
        deadline, status = time.monotonic() + HEALTH_TIMEOUT, None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    status = (r.status, json.loads(r.read()).get("status"))
                    break
            except urllib.error.HTTPError as exc:  # it answered, and not 200: a verdict
                status = exc.code, None
                break
            except OSError:
                time.sleep(0.25)  # not listening yet
        if status != (200, "ok"):
            raise UpdateFailed(f"the new version's /health did not answer 200 ok ({status}); "
                               f"see {box.state_dir / 'healthcheck.log'}")
        shutil.rmtree(scratch, ignore_errors=True)
        clip = code / "updates" / "healthcheck.wav"
        result = subprocess.run(
            [str(box.python(slot)), "-m", "device", "transcribe", str(clip), "--json"],
            env={**box.environment(slot, data_dir=scratch), "TINGJI_AUTO_SUMMARIZE": "0"},
            cwd=code, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent)
        if result.returncode != 0:
            raise UpdateFailed(f"the new version could not transcribe the health-check clip: "
                               f"{result.stderr.strip()[-300:]}")
        from device.text import word_error_rate

        heard = " ".join(s["text"] for s in json.loads(result.stdout)["segments"])
        reference = (code / "updates" / "healthcheck.txt").read_text()
        if word_error_rate(reference.replace("nine", "9"), heard) > 0.34:
            raise UpdateFailed(f"the new version mis-heard the health-check clip: {heard!r}")
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(scratch, ignore_errors=True)


def _die_with_parent() -> None:
    """A child of the flash (migration, health check) is killed with it, even on kill -9."""
    die_with_parent(signal.SIGKILL)


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
    _point_current(box, other)
    state = box.save_state(previous=active, last={
        "version": info["version"], "outcome": "rolled back",
        "detail": f"slot {other} active again"})
    box.log(f"rollback: slot {other} ({info['version']}) active, slot {active} kept")
    return {"slot": other, "version": info["version"], "state": state}


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
