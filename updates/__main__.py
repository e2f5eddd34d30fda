"""python -m updates: signed update bundles and the box's A/B slots (the Makefile calls these).

    keys [--private PATH] [--name NAME]           ed25519 pair: private key outside the repo,
                                                  public key into updates/keys/ (firmware)
    bundle VERSION OUT [--key PATH] [--no-wheels] [--notes TEXT]
    bundle-model MODEL_TAR VERSION OUT [--key PATH]
    flash BUNDLE [--target DIR] [--allow-downgrade] [--trust KEYDIR] [--no-health-check]
    rollback [--target DIR]
    status [--target DIR] [--json]
    recover [--target DIR]                        finish or undo an interrupted update
    run [--target DIR]                            start the active slot's appliance
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from device.errors import TingjiError
from updates import bundle as bundles
from updates.box import Box
from updates.slots import flash, recover, rollback, status

DEFAULT_KEY = Path(os.environ.get("TINGJI_SIGNING_KEY",
                                  Path.home() / ".config" / "tingji" / "signing.key"))
DEFAULT_TARGET = Path(os.environ.get("TINGJI_ROOT", "/opt/tingji"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m updates", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("keys", help="create the signing key pair")
    p.add_argument("--private", type=Path, default=DEFAULT_KEY)
    p.add_argument("--name", default="tingji")
    p = commands.add_parser("bundle", help="build a signed firmware bundle")
    p.add_argument("version")
    p.add_argument("out", type=Path)
    p.add_argument("--key", type=Path, default=DEFAULT_KEY)
    p.add_argument("--no-wheels", action="store_true",
                   help="for boxes that already have this exact dependency set")
    p.add_argument("--find-links", type=Path, help="extra wheels (the llama-cpp wheelhouse)")
    p.add_argument("--notes", default="")
    p = commands.add_parser("bundle-model", help="sign a model bundle (models make-bundle)")
    p.add_argument("model_tar", type=Path)
    p.add_argument("version")
    p.add_argument("out", type=Path)
    p.add_argument("--key", type=Path, default=DEFAULT_KEY)
    for name in ("flash", "rollback", "status", "recover", "run"):
        p = commands.add_parser(name)
        p.add_argument("--target", type=Path, default=DEFAULT_TARGET)
        if name == "flash":
            p.add_argument("bundle", type=Path)
            p.add_argument("--allow-downgrade", action="store_true")
            p.add_argument("--trust", type=Path, help="public keys, for a box's first flash")
            p.add_argument("--no-health-check", action="store_true")
        if name == "status":
            p.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (TingjiError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def cmd_keys(args) -> int:
    private, public = bundles.write_keys(args.private, bundles.KEYS_DIR, args.name)
    print(f"private key: {private} (keep it off the box and out of the repository)")
    print(f"public key:  {public} (commit it: boxes trust the firmware's keys)")
    return 0


def cmd_bundle(args) -> int:
    lock = bundles.freeze()
    wheels = None
    if not args.no_wheels:
        import tempfile

        wheels = Path(tempfile.mkdtemp(prefix="tingji-wheels-"))
        print(f"collecting {len(lock.splitlines())} locked wheels …", file=sys.stderr)
        bundles.download_wheels(lock, wheels, args.find_links)
    out = bundles.build(args.out, args.version, args.key, lock=lock, wheels=wheels,
                        notes=args.notes)
    print(out)
    return 0


def cmd_bundle_model(args) -> int:
    print(bundles.build(args.out, args.version, args.key, kind="model",
                        model_bundle=args.model_tar))
    return 0


def cmd_flash(args) -> int:
    box = Box(args.target)
    try:
        result = flash(box, args.bundle, allow_downgrade=args.allow_downgrade,
                       trust=args.trust, health_check=not args.no_health_check)
    except TingjiError as exc:
        _audit(box, "update_failed", {"bundle": str(args.bundle), "reason": str(exc)})
        raise
    _audit(box, "update_installed", {"bundle": str(args.bundle), **{
        k: v for k, v in result.items() if k != "state"},
        "allow_downgrade": bool(args.allow_downgrade)})
    print(json.dumps({k: v for k, v in result.items() if k != "state"}))
    return 0


def cmd_rollback(args) -> int:
    box = Box(args.target)
    result = rollback(box)
    _audit(box, "update_rolled_back", {"slot": result["slot"], "version": result["version"]})
    print(f"slot {result['slot']} ({result['version']}) is active")
    return 0


def _audit(box: Box, action: str, details: dict) -> None:
    """An entry in the box's audit trail (its data directory's), when it has a database."""
    if not box.database.exists():
        return
    from device.audit import on_console
    from device.databases import open_store
    from device.settings import Settings

    settings = Settings(data_dir=box.data_dir, models_dir=box.models_dir)
    with open_store(settings) as store:  # while locked: entered at the unlock
        on_console(settings, store, action, details=details)


def cmd_status(args) -> int:
    info = status(Box(args.target))
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    for role in ("active", "inactive"):
        slot = info[role]
        print(f"{role:<9} slot {slot['slot'] if slot else '-'}: "
              f"{(slot or {}).get('version') or 'empty'}")
    print(f"floor     {info['floor'] or '-'}")
    last = info["last_update"]
    print(f"last      {last['outcome']} {last['version']}: {last['detail']}" if last
          else "last      -")
    if info["update_in_progress"]:
        print("an update was interrupted: `python -m updates recover` (or any flash) ends it")
    return 0


def cmd_recover(args) -> int:
    print(recover(Box(args.target)) or "nothing to recover")
    return 0


def cmd_run(args) -> int:
    box = Box(args.target)
    recover(box)
    slot = box.active()
    if slot is None or box.slot_info(slot) is None:
        raise TingjiError(f"{box.root} has no complete active slot: flash a bundle first")
    code = box.slots / slot / "code"
    os.chdir(code)
    python = str(box.python(slot))
    os.execve(python, [python, "-m", "device", "run"], box.environment(slot))


COMMANDS = {"keys": cmd_keys, "bundle": cmd_bundle, "bundle-model": cmd_bundle_model,
            "flash": cmd_flash, "rollback": cmd_rollback, "status": cmd_status,
            "recover": cmd_recover, "run": cmd_run}

if __name__ == "__main__":
    sys.exit(main())
