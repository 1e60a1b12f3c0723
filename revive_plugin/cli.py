"""The ``revive`` command (also ``python -m revive_plugin``).

Each subcommand lives in the module that does its work; a module joins the command by defining
``add_parser(subparsers)``, which adds one subcommand and sets ``func(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

SUBCOMMAND_MODULES = (
    "revive_plugin.bench.cli",
    "revive_plugin.analysis.cli",
    "revive_plugin.data.cli",
    "revive_plugin.editing.cli",
    "revive_plugin.models",
)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="revive",
        description="REVIVE: dominant-subspace protection for sequential knowledge editing.",
    )
    parser.add_argument("--version", action="version", version=f"revive-plugin {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and (e.name == name or name.startswith(e.name + ".")):
                continue
            raise
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError, KeyError, TypeError) as e:
        print(f"revive: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
