"""The box key on the console: make it, unlock the box, lock it again."""

from __future__ import annotations

import argparse
import sys
import time

from device import encryption
from device.audit import on_console
from device.databases import open_store, seal_main
from device.errors import TingjiError
from device.settings import Settings
from device.vault import WrongSecretError

WRONG_SECRET_PAUSE = 2.0
"""Seconds a wrong passphrase costs on the console (Argon2id costs more each try)."""


def _read_secret(prompt: str, twice: bool = False) -> str:
    if sys.stdin.isatty():
        import getpass

        secret = getpass.getpass(prompt)
        if twice and getpass.getpass("again: ") != secret:
            raise TingjiError("the passphrases differ")
        return secret
    return sys.stdin.readline().rstrip("\n")


def cmd_keyring(settings: Settings, args: argparse.Namespace) -> int:
    """``keyring init``: encryption on from now on; the recovery key is shown once.
    ``keyring key-file PATH``: a key file that unlocks the box, for removable media."""
    if args.action == "key-file":
        if args.path is None:
            raise TingjiError("name the key file to write: keyring key-file /media/usb/box.key")
        encryption.make_key_file(settings, args.path)
        with open_store(settings) as store:
            on_console(settings, store, "key_file_made")
        print(f"key file written to {args.path}: `python -m device unlock --key-file "
              f"{args.path}` unlocks the box; keep it apart from the box (a new one replaces "
              "it)")
        return 0
    if args.action != "init":
        state = ("none (storage in the clear)" if not encryption.enabled(settings)
                 else "locked" if encryption.locked(settings) else "unlocked")
        print(f"box key: {state}")
        return 0
    recovery = encryption.init(settings, _read_secret("unlock passphrase: ", twice=True))
    print("The box key is made: new recordings are stored encrypted.\n"
          "Recovery key (shown once; print it or write it down and keep it apart from "
          f"the box):\n\n    {recovery}\n", flush=True)
    sealed = seal_main(settings, lambda rid: print(f"recording {rid}: its audio sealed, the "
                                                   "plaintext erased", flush=True))
    with open_store(settings) as store:
        on_console(settings, store, "keyring_created")
        if sealed:
            on_console(settings, store, "audio_sealed", details={"recordings": sealed})
    return 0


def cmd_unlock(settings: Settings, args: argparse.Namespace) -> int:
    if not encryption.enabled(settings):
        raise TingjiError("this box has no key (`python -m device keyring init` makes it)")
    used = ("key file" if args.key_file else "recovery key" if args.recovery
            else "passphrase")
    secret = None if args.key_file else _read_secret(
        "unlock passphrase: " if used == "passphrase" else f"{used}: ")
    with open_store(settings) as store:
        try:
            if args.key_file:
                encryption.unlock_box(settings, key_file=args.key_file)
            elif args.recovery:
                encryption.unlock_box(settings, recovery=secret)
            else:
                encryption.unlock_box(settings, passphrase=secret)
        except WrongSecretError:
            on_console(settings, store, "unlock_failed", details={"with": used})
            time.sleep(WRONG_SECRET_PAUSE)
            raise
        on_console(settings, store, "unlocked", details={"with": used})
    print("unlocked: queued work goes on")
    return 0


def cmd_lock(settings: Settings, args: argparse.Namespace) -> int:
    encryption.lock_box(settings)
    with open_store(settings) as store:
        on_console(settings, store, "locked")
    print("locked")
    return 0
