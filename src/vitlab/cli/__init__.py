"""The ``vitlab`` command: one thin module per subcommand, heavy imports deferred to ``run``.

Each subcommand module has ``add_parser(subparsers)`` and ``run(args) -> int``. User errors
(``ValueError``, missing files) are printed as one line naming the problem, with exit status 2;
no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import attention, benchmark, convert, data, evaluate, export, inspect, models, predict, serve, summary, train
from ._common import cli_spelling

COMMANDS = (models, summary, convert, predict, train, evaluate, attention, inspect, export, benchmark, serve, data)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="vitlab",
        description=(
            "Vision Transformers: named models, summaries, checkpoints, inference, training and attention figures."
        ),
    )
    parser.add_argument("--version", action="version", version=f"vitlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vitlab`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except BrokenPipeError:  # `vitlab models | head`: the reader has gone, which is not an error
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - Python flushes stderr at exit; keep it quiet
        return 0
    except (ValueError, OSError) as err:  # CheckpointError is a ValueError; a full disk is an OSError
        print(f"vitlab {args.command}: error: {cli_spelling(str(err), args.command)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: outputs are written atomically, so nothing half-written is left
        print(f"vitlab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
