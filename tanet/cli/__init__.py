"""``tanet <command>``: the only package that parses command-line arguments.

Each command is a pair ``_add_<name>(sub)`` (registers its parser, sets ``func``) and
``_cmd_<name>(args) -> int`` in one of the modules below, grouped by topic; each module lists its
commands in ``COMMANDS``. Heavy imports happen inside the command functions so that
``tanet --help`` stays instant. Every command takes ``--quiet`` and ``--debug``.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Sequence

from tanet.cli import datasets, features, inference, models, research, serving, training

# Registration order is the order in `tanet --help`.
GROUPS = (models, training, datasets, inference, features, serving, research)


def _common_options(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("--quiet", action="store_true", default=default,
                        help="no progress bars or per-epoch lines")
    parser.add_argument("--debug", action="store_true", default=default,
                        help="show tracebacks instead of one-line errors")


def build_parser() -> argparse.ArgumentParser:
    from tanet import __version__

    parser = argparse.ArgumentParser(
        prog="tanet", description="Video recognition with TAM / TANet (and TSN / TSM baselines).")
    parser.add_argument("--version", action="version", version=f"tanet {__version__}")
    _common_options(parser, False)
    common = argparse.ArgumentParser(add_help=False)
    _common_options(common, argparse.SUPPRESS)  # `tanet --quiet CMD` and `tanet CMD --quiet`
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_parser = sub.add_parser
    sub.add_parser = lambda *a, **k: add_parser(*a, parents=[common], **k)  # type: ignore
    for group in GROUPS:
        for add in group.COMMANDS:
            add(sub)
    return parser


def _downloads(*, quiet: bool) -> contextlib.AbstractContextManager:
    """--quiet hides the download progress bars of checkpoints fetched by name or URL."""
    if not quiet:
        return contextlib.nullcontext()
    from tanet.models.download import show_progress

    return show_progress(False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with _downloads(quiet=args.quiet):
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if getattr(e, "exit_code", None) is not None:  # engine.TrainingInterrupted: saved
            print(f"interrupted: {e}", file=sys.stderr)
            return int(e.exit_code)  # type: ignore[attr-defined]
        if not isinstance(e, (KeyError, ValueError, FileNotFoundError, RuntimeError,
                              FloatingPointError)):  # FloatingPointError: NonFiniteLossError
            raise
        if args.debug:
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
