"""The ``trp`` command line: ``decompose``, ``macs``, ``export``, ``bench``, ``models``,
``train``, ``quickstart``, ``sweep``.

Every command prints what it did; errors are one line on stderr and exit status 2 (a
diverged training run: 3). When the reader of stdout goes away (``trp models | head -1``) the
command stops quietly with status 1, as Python's documentation advises for SIGPIPE.
"""

from __future__ import annotations

import argparse
import os
import select
import sys
from collections.abc import Sequence

from ..checkpoint import CheckpointError
from ..export import ExportMismatch
from . import model_commands, train_commands
from .common import CliError

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trp",
        description="Trained Rank Pruning: factorize CNN layers into low-rank pairs and count what it saves.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    model_commands.add_parsers(commands)
    train_commands.add_parsers(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from ..train import RunInterrupted, TrainingDiverged

    try:
        args.run(args)
        sys.stdout.flush()
    except BrokenPipeError as error:
        if not _stdout_is_closed():
            print(f"trp {args.command}: error: {error}", file=sys.stderr)
            return 2
        return 1
    except RunInterrupted as stop:
        if os.environ.get("RANK", "0") == "0":
            print(f"trp {args.command}: {stop}", file=sys.stderr)
    except TrainingDiverged as error:
        print(f"trp {args.command}: training diverged: {error}", file=sys.stderr)
        return 3
    except (CliError, CheckpointError, ValueError, OSError, ExportMismatch) as error:
        print(f"trp {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


def _stdout_is_closed() -> bool:
    """True when stdout is a pipe whose reader has gone (poll reports an error on it), so a
    broken pipe elsewhere, e.g. a data-loader worker's, is still reported. Points stdout at
    /dev/null so that the interpreter's last flush at exit does not raise again."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
    except (AttributeError, OSError, ValueError):  # no poll (Windows), or stdout is not a file
        return False
    if not any(mask & (select.POLLERR | select.POLLHUP) for _, mask in poller.poll(0)):
        return False
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return True
