"""The admin's console commands: accounts, glossary, profiles, machine info."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from device import databases
from device.audit import on_console
from device.databases import open_store
from device.errors import TingjiError
from device.profiles import load_profiles
from device.settings import Settings, hardware_profile


def cmd_profiles(settings: Settings, args: argparse.Namespace) -> int:
    for p in load_profiles(settings.data_dir).values():
        print(f"{p.name:<12} {p.language:<5} {p.model:<14} {p.script:<11} {p.title}  ({p.source})")
    return 0


def _read_password() -> str:
    from device.accounts import check_new_password

    if sys.stdin.isatty():
        import getpass

        password = getpass.getpass("new password: ")
        if getpass.getpass("again: ") != password:
            raise TingjiError("the passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\n")
    check_new_password(password)  # InvalidInput is a TingjiError: one line, exit 1
    return password


def cmd_users(settings: Settings, args: argparse.Namespace) -> int:
    from device.accounts import hash_password

    with open_store(settings) as store:
        if args.action is None:
            for user in store.list_users():
                print(f"{user.id:>4} {user.username:<20} {user.role}")
            return 0
        user = store.find_user(args.name)
        if args.action == "add":
            if user is not None:
                raise TingjiError(f"the user name {args.name!r} is taken")
            password = _read_password()
            created = store.create_user(args.name, hash_password(password), args.role)
            on_console(settings, store, "create_user", f"user:{created.id}",
                       {"username": args.name, "role": args.role})
            return 0
        if user is None:
            raise TingjiError(f"no user named {args.name!r}")
        if args.action == "passwd":
            password = _read_password()
            store.update_user(user.id, password_hash=hash_password(password))
            store.end_sessions(user.id)
            on_console(settings, store, "reset_password", f"user:{user.id}")
        else:
            store.delete_user(user.id)
            on_console(settings, store, "delete_user", f"user:{user.id}",
                       {"username": user.username})
    return 0


def cmd_glossary(settings: Settings, args: argparse.Namespace) -> int:
    with open_store(settings) as store:
        if args.action == "add":
            print(store.add_glossary(args.term, args.misheard))
            on_console(settings, store, "add_glossary", details={"term": args.term})
        elif args.action == "remove":
            if not store.remove_glossary(args.id):
                raise TingjiError(f"no glossary entry with id {args.id}")
            on_console(settings, store, "remove_glossary", details={"id": args.id})
        else:
            for g in store.glossary():
                fix = f"  (corrects {g.misheard})" if g.misheard else ""
                print(f"{g.id:>4} {g.term}{fix}")
    return 0


def cmd_retention(settings: Settings, args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from device import retention

    with open_store(settings) as store:
        if args.action == "add":
            rule = store.add_retention_rule(args.what, args.days, args.profile)
            on_console(settings, store, "add_retention_rule", details=asdict(rule))
        elif args.action == "remove":
            store.remove_retention_rule(args.id)
            on_console(settings, store, "remove_retention_rule", details={"id": args.id})
        elif args.action == "purge":
            for d in retention.purge(store, settings, datetime.now(UTC), "console"):
                print(f"erased the {d.what} of recording {d.recording.id} ({d.recording.title})")
            return 0
        for rule in store.retention_rules():
            since = "the transcript is confirmed" if rule.what == "audio" else "it was made"
            print(f"{rule.id:>4} {rule.what} {rule.days} days after {since}"
                  f" ({rule.profile or 'all profiles'})")
        for d in retention.due(store, datetime.now(UTC) + retention.PREVIEW):
            print(f"     {d.at:%Y-%m-%d %H:%M} UTC: the {d.what} of recording "
                  f"{d.recording.id} ({d.recording.title})")
    return 0


def cmd_hold(settings: Settings, args: argparse.Namespace) -> int:
    with open_store(settings) as store:
        recording = store.set_legal_hold(args.id, args.reason)
        on_console(settings, store, "hold" if args.reason else "release_hold",
                   f"recording:{recording.id}", {"reason": args.reason})
    return 0


def cmd_tls(settings: Settings, args: argparse.Namespace) -> int:
    from device import tls

    if args.action == "install":
        cert = tls.install(settings, args.cert.read_bytes(), args.key.read_bytes())
    elif args.action == "rollback":
        cert = tls.rollback(settings)
    else:
        cert = tls.current(settings)
        if cert is None:
            print("no certificate yet: the first start serving the LAN makes one")
            return 0
    if args.action:
        with open_store(settings) as store:
            on_console(settings, store, f"tls_{args.action}", details={
                "fingerprint": cert.fingerprint})
        print("restart the appliance (or use the System page) to serve it", file=sys.stderr)
    print(f"{cert.origin} certificate for {', '.join(cert.names)}; valid until "
          f"{cert.not_after:%Y-%m-%d}; SHA-256 {cert.fingerprint}")
    return 0


def cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    from device.audit import export_lines, load_key, verify

    key = load_key(settings)
    with open_store(settings) as store:
        if args.action == "verify":
            result = verify(store, key.public_key())
            if not result.ok:
                print(f"audit trail BROKEN: {result.problem}", file=sys.stderr)
                return 1
            restarts = (f"; new segments after a break at entries "
                        f"{', '.join(map(str, result.restarts))}" if result.restarts else "")
            print(f"audit trail intact: {result.entries} entries, {result.heads} signed "
                  f"heads{restarts}")
            return 0
        out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
        try:
            for line in export_lines(store, key, args.since):
                out.write(line + "\n")
        finally:
            if args.out:
                out.close()
    return 0


def cmd_backup(settings: Settings, args: argparse.Namespace) -> int:
    """The main database, the audit trail and the accounts copied into a new folder; on a
    box with a key the databases stay encrypted under their keys (they open on this box,
    unlocked, only)."""
    folder = Path(args.folder)
    if folder.exists() and any(folder.iterdir()):
        raise TingjiError(f"{folder} is not empty: choose a new or empty folder")
    folder.mkdir(parents=True, exist_ok=True)
    with databases.main_store(settings) as store:
        copies = store.backup(folder)
        on_console(settings, store, "backup_database", details={"folder": str(folder)})
    print(f"copied to {folder}: {', '.join(p.name for p in copies)}"
          + ("; the databases are encrypted, as the box keeps them"
             if store.key is not None else ""))
    return 0


def cmd_voiceprints(settings: Settings, args: argparse.Namespace) -> int:
    from device.store.voiceprints import Voiceprints

    if not settings.voiceprints_path.exists():
        if args.action in ("remove", "backup"):
            raise TingjiError("no voice is remembered on this box")
        return 0
    with open_store(settings) as store, Voiceprints.of(settings, store) as prints:
        if args.action == "remove":
            gone = prints.delete(args.id)
            print(f"deleted the voiceprint of {gone.name}")
            with open_store(settings) as store:
                on_console(settings, store, "delete_voiceprint", f"voiceprint:{args.id}",
                           {"name": gone.name})
        elif args.action == "backup":
            prints.backup(args.file)
            with open_store(settings) as store:
                on_console(settings, store, "backup_voiceprints", details={
                    "file": str(args.file)})
            print(f"{len(prints.all())} voiceprints copied to {args.file}")
        else:
            for v in prints.all():
                print(f"{v.id:>4} {v.name}  from {v.recording_title or '?'} ({v.speaker}, "
                      f"{v.seconds:.0f} s), {v.enrolled_at[:10]} by {v.enrolled_by or '-'}; "
                      f"used in {len(prints.uses(v.id))} recordings")
    return 0


def cmd_info(settings: Settings, args: argparse.Namespace) -> int:
    from models.store import load_manifest, status

    info = {
        "settings": {k: str(v) for k, v in asdict(settings).items()},
        "hardware": hardware_profile(settings).as_dict(),
        "models": {m.id: status(m, settings.models_dir) for m in load_manifest().values()},
    }
    print(json.dumps(info, ensure_ascii=False, indent=2))
    return 0
