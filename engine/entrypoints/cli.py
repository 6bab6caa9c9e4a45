"""The `pagedlm` command: a thin dispatcher over subcommands, one module each.

A subcommand module exposes `register(subparsers)`, which adds its parser and sets
`handler(args) -> int`. Heavy imports (torch) belong inside a handler, so that
`pagedlm memory` stays instant. To add a subcommand, add its module to `SUBCOMMANDS`.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn, Sequence

SUBCOMMANDS: tuple[str, ...] = ("engine.entrypoints.cli_memory", "engine.entrypoints.cli_generate",
                                 "engine.entrypoints.cli_trace", "engine.entrypoints.cli_bench",
                                 "engine.entrypoints.cli_conform")


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr and exit status 2 (argparse's default prints
    the whole usage block first, which buries the message)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pagedlm",
        description="pagedlm: a small paged LLM inference engine and its tools.",
        epilog="Run `pagedlm <command> --help` for a command's options and examples.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for module_name in SUBCOMMANDS:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status (2 for usage errors)."""
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
