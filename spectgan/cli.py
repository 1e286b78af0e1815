"""The ``spectgan`` command line. Each command lives in the module that does its work; only that module is imported.

A module named in ``COMMANDS`` defines ``add_<command>_command(subparsers)``, which adds a subparser and sets
``func`` (called with the parsed arguments; returns an exit code or None).
"""
from __future__ import annotations

import argparse
import importlib
import sys

from spectgan.errors import SpectganError

COMMANDS: dict[str, str] = {
    "cohort": "spectgan.cohorts.simulated",
    "studies": "spectgan.cohorts.simulated",
    "stats": "spectgan.geometry.roi",
    "train": "spectgan.models.fastgan.train",
    "sample": "spectgan.models.fastgan.sample",
    "synthesize": "spectgan.cohorts.synthetic",
    "evaluate": "spectgan.evaluation.report",
    "import": "spectgan.cohorts.importer",
    "generate": "spectgan.client.cli",
    "models": "spectgan.tools.models",
    "export": "spectgan.export.pacs",
    "bench": "spectgan.tools.bench",
    "demo": "spectgan.demo",
    "reader-study": "spectgan.reader_study.cli",
    "workstation": "spectgan.tools.workstation",
}


def build_parser(commands: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spectgan", description="Synthetic brain perfusion SPECT (123I-IMP).")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in commands:
        module = importlib.import_module(COMMANDS[command])
        getattr(module, f"add_{command.replace('-', '_')}_command")(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    wanted = [argv[0]] if argv and argv[0] in COMMANDS else list(COMMANDS)
    parser = build_parser(wanted)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (SpectganError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as error:
        print(f"spectgan {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"spectgan {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
