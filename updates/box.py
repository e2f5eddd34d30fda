"""An install root: where its slots, environments, data, models and state live, and the
state and log every update operation reads and writes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from device.audio import durable_file
from device.errors import TingjiError
from updates.bundle import KEYS_DIR, lock_hash, trusted_keys

SLOTS = ("a", "b")


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
        write_json(self.state_dir / "state.json", state)
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
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("TINGJI_") or k == "TINGJI_EGRESS_LOG"}  # the watch's log
        env.update(PYTHONPATH=str(self.slots / slot / "code"),
                   TINGJI_DATA_DIR=str(data_dir or self.data_dir),
                   TINGJI_MODELS_DIR=str(self.models_dir), HF_HUB_OFFLINE="1")
        return env

    def keys(self) -> dict:
        """The public keys the active firmware trusts."""
        active = self.active()
        folder = self.slots / active / "code" / "updates" / "keys" if active else KEYS_DIR
        return trusted_keys(folder)


def write_json(path: Path, value: dict) -> None:
    """Write atomically and durably (temp file, fsync, rename, fsync the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with durable_file(path) as f:
        f.write(json.dumps(value, indent=1).encode())


