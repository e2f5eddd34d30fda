"""python -m device: a thin command line over the pipeline.

    transcribe PATH [--profile P | --language L] [--script S] [--term T]… [--speakers N]
                        [--title T] [--fast] [--json]
    retranscribe ID [--profile P] [--script S] [--term T]… [--fast]
                        queue it again: a quick draft's accurate transcript, or after a fix
    diarize ID [--speakers N] [--overwrite]   find the speakers again, keeping text edits
    search QUERY [--limit N] [--json]
    jobs [--status S]
    record [--title T] [--source mic|file:PATH] [--device D] [--profile P] [--duration S]
                        [--speakers N]
                        record with a live transcript; on a terminal: p pause, r resume,
                        m NOTE marker, q (or Enter, Ctrl-C) stop
    devices             input devices
    profiles            dialect profiles and where they come from
    glossary [add TERM [--misheard M] | remove ID]
    tls [install CERT KEY | rollback]
                        the HTTPS certificate: show it (fingerprint), install the
                        organisation's, or return to the previous one
    audit verify | export [--since DATE] [--out FILE]
                        check the audit trail's hash chain and signed heads; signed JSONL
    backup FOLDER       the database, the audit trail and the accounts copied into a new
                        folder (a box with a key: encrypted, as it keeps them; unlocked)
    voiceprints [remove ID | backup FILE]
                        remembered voices; backup copies them to a file the admin chose
                        (they are in no export and in no update backup)
    retention [add audio|recording DAYS [--profile P] | remove ID | purge]
                        the rules that erase audio or recordings after some days, what
                        they erase in the next 7 days; purge erases what is due now
    hold ID --reason R | release ID
                        legal hold: a held recording is never erased
    users [add NAME --role R | passwd NAME | remove NAME]
                        accounts (the password is read from standard input, or asked
                        for on a terminal); passwd also ends the user's sessions
    keyring [init | key-file PATH]
                        the box key's state; init makes it (storage encrypted from then
                        on) and shows the recovery key once; key-file writes a file that
                        unlocks the box (removable media; a new one replaces it)
    unlock [--recovery | --key-file PATH] | lock
                        unlock the box (its queued work goes on) or lock it again
    worker              run queued jobs until stopped
    run                 the appliance: web UI + worker
    serve               the web UI alone (the update health check starts a new slot so)
    info                hardware profile, settings and models
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from device.cli.admin import (
    cmd_audit,
    cmd_backup,
    cmd_glossary,
    cmd_hold,
    cmd_info,
    cmd_profiles,
    cmd_retention,
    cmd_tls,
    cmd_users,
    cmd_voiceprints,
)
from device.cli.appliance import cmd_run, cmd_serve, cmd_worker
from device.cli.keys import cmd_keyring, cmd_lock, cmd_unlock
from device.cli.recording import cmd_devices, cmd_record
from device.cli.transcripts import (
    cmd_cancel,
    cmd_diarize,
    cmd_jobs,
    cmd_retranscribe,
    cmd_search,
    cmd_summarize,
    cmd_transcribe,
    fast_argument,
    profile_arguments,
)
from device.errors import TingjiError
from device.records import ROLES
from device.settings import Settings, SettingsError
from models.store import ModelError


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.load()
        # Services log at the configured level; one-shot commands only say what went wrong.
        level = settings.log_level if args.command in ("worker", "run") else "ERROR"
        logging.basicConfig(
            level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s"
        )
        return args.func(settings, args)
    except (TingjiError, ModelError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m device", description="tingji appliance")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("transcribe", help="import an audio file and transcribe it")
    p.add_argument("path", type=Path)
    profile_arguments(p)
    p.add_argument("--language", default=None,
                   help="a Whisper language code (zh, en, …): its plain profile")
    p.add_argument("--speakers", type=int, choices=range(1, 21), metavar="N",
                   help="how many people speak (default: counted)")
    p.add_argument("--title")
    fast_argument(p)
    p.add_argument("--json", action="store_true", help="print the transcript as JSON")
    p.set_defaults(func=cmd_transcribe)

    p = commands.add_parser("retranscribe", help="transcribe a stored recording again "
                            "(accurately, unless --fast)")
    p.add_argument("recording_id", type=int)
    profile_arguments(p)
    fast_argument(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_retranscribe)

    p = commands.add_parser("record", help="record with a live transcript")
    p.add_argument("--title")
    p.add_argument("--source", default="mic", help="mic (default) or file:PATH")
    p.add_argument("--device", help="input device name or index (see `devices`)")
    p.add_argument("--profile", help="dialect profile for the transcript; default auto")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--speakers", type=int, choices=range(1, 21), metavar="N",
                   help="how many people speak (default: counted)")
    p.add_argument("--speed", type=float, default=1.0,
                   help="file source: times real time (0 = as fast as it decodes)")
    p.add_argument("--no-live", action="store_true", help="no live transcript")
    p.add_argument("--no-final", action="store_true",
                   help="leave the final transcription to the worker")
    p.add_argument("--json", action="store_true", help="print the final transcript as JSON")
    p.add_argument("--fsync-trace", type=Path, help=argparse.SUPPRESS)  # power-cut tests
    p.set_defaults(func=cmd_record)

    p = commands.add_parser("devices", help="list audio input devices")
    p.set_defaults(func=cmd_devices)

    p = commands.add_parser("profiles", help="list the dialect profiles")
    p.set_defaults(func=cmd_profiles)

    p = commands.add_parser("glossary", help="the admin's hotwords and corrections")
    actions = p.add_subparsers(dest="action")
    add = actions.add_parser("add", help="add a term (with --misheard: also a correction)")
    add.add_argument("term")
    add.add_argument("--misheard", help="what the recogniser writes instead")
    remove = actions.add_parser("remove", help="remove an entry by id")
    remove.add_argument("id", type=int)
    p.set_defaults(func=cmd_glossary)

    p = commands.add_parser("tls", help="the HTTPS certificate")
    actions = p.add_subparsers(dest="action")
    install = actions.add_parser("install", help="use the organisation's certificate")
    install.add_argument("cert", type=Path, help="PEM certificate chain, the box's first")
    install.add_argument("key", type=Path, help="PEM private key")
    actions.add_parser("rollback", help="return to the previous certificate")
    p.set_defaults(func=cmd_tls)

    p = commands.add_parser("audit", help="the audit trail: verify it, export it")
    actions = p.add_subparsers(dest="action", required=True)
    actions.add_parser("verify", help="walk the hash chain and the signed heads")
    export = actions.add_parser("export", help="signed JSONL of the entries")
    export.add_argument("--since", default="", help="from this date on (2026-12-01)")
    export.add_argument("--out", type=Path, help="write here instead of standard output")
    p.set_defaults(func=cmd_audit)

    p = commands.add_parser("backup", help="copy the database, audit trail and accounts")
    p.add_argument("folder", type=Path, help="a new or empty folder (removable media)")
    p.set_defaults(func=cmd_backup)

    p = commands.add_parser("voiceprints", help="remembered voices (personal data)")
    actions = p.add_subparsers(dest="action")
    actions.add_parser("remove", help="delete a voiceprint by id").add_argument("id", type=int)
    actions.add_parser("backup", help="copy every voiceprint into a new database file") \
        .add_argument("file", type=Path)
    p.set_defaults(func=cmd_voiceprints)

    p = commands.add_parser("retention", help="rules that erase audio or recordings")
    actions = p.add_subparsers(dest="action")
    add = actions.add_parser("add", help="a rule: erase WHAT after DAYS")
    add.add_argument("what", choices=("audio", "recording"))
    add.add_argument("days", type=int)
    add.add_argument("--profile", help="only recordings of this dialect profile")
    actions.add_parser("remove", help="remove a rule by id").add_argument("id", type=int)
    actions.add_parser("purge", help="erase what the rules say is due now")
    p.set_defaults(func=cmd_retention)

    p = commands.add_parser("hold", help="legal hold: the recording is never erased")
    p.add_argument("id", type=int)
    p.add_argument("--reason", required=True, help="why: a case, a request")
    p.set_defaults(func=cmd_hold)
    p = commands.add_parser("release", help="release a recording's legal hold")
    p.add_argument("id", type=int)
    p.set_defaults(func=cmd_hold, reason=None)

    p = commands.add_parser("users", help="web accounts (e.g. reset a lost admin password)")
    actions = p.add_subparsers(dest="action")
    add = actions.add_parser("add", help="create an account")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, default="reviewer")
    actions.add_parser("passwd", help="set a new password").add_argument("name")
    actions.add_parser("remove", help="delete an account").add_argument("name")
    p.set_defaults(func=cmd_users)

    p = commands.add_parser("search", help="full-text search over all transcripts")
    p.add_argument("query")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_search)

    p = commands.add_parser("diarize", help="find the speakers of a transcribed recording "
                            "again (text edits and names reviewers gave are kept)")
    p.add_argument("recording_id", type=int)
    p.add_argument("--speakers", type=int, choices=range(1, 21), metavar="N",
                   help="how many people speak (default: counted)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the names reviewers gave too")
    p.set_defaults(func=cmd_diarize)

    p = commands.add_parser("summarize", help="summarise a transcribed recording")
    p.add_argument("recording_id", type=int)
    p.add_argument("--model", help="summariser model id (default: settings summary_model)")
    p.add_argument("--notes-model", help="model that reads a long transcript into notes "
                   "(default: settings summary_notes_model, else the summariser)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_summarize)

    p = commands.add_parser("cancel", help="cancel a queued or running job")
    p.add_argument("job_id", type=int)
    p.set_defaults(func=cmd_cancel)

    p = commands.add_parser("jobs", help="list jobs")
    p.add_argument("--status", choices=["queued", "running", "done", "failed"])
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_jobs)

    p = commands.add_parser("keyring", help="the box key: show its state, make it, or "
                                            "write a key file that unlocks the box")
    p.add_argument("action", nargs="?", choices=["init", "key-file"])
    p.add_argument("path", nargs="?", type=Path, help="key-file: where (removable media)")
    p.set_defaults(func=cmd_keyring)

    p = commands.add_parser("unlock", help="unlock the box (the passphrase from standard "
                                           "input, or asked for on a terminal)")
    p.add_argument("--recovery", action="store_true", help="with the recovery key instead")
    p.add_argument("--key-file", type=Path, help="with the key file at this path instead")
    p.set_defaults(func=cmd_unlock)

    p = commands.add_parser("lock", help="forget the unlocked key")
    p.set_defaults(func=cmd_lock)

    p = commands.add_parser("worker", help="run queued jobs until stopped")
    p.set_defaults(func=cmd_worker)

    p = commands.add_parser("run", help="start the appliance: web UI and worker")
    p.set_defaults(func=cmd_run)

    p = commands.add_parser("serve", help="the web UI alone (no worker)")
    p.set_defaults(func=cmd_serve)

    p = commands.add_parser("info", help="hardware profile, settings and models as JSON")
    p.set_defaults(func=cmd_info)
    return parser
