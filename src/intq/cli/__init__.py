"""The ``intq`` command line: one sub-module per command, errors as one line.

Exit codes: 0 success, 1 failure (IntqError), 2 usage error (UsageError, argparse),
130 interrupted, 141 stdout closed early (e.g. piped into ``head``; quietly).
``--debug`` shows the Python traceback.
"""

import argparse
import importlib
import os
import sys

from intq.errors import IntqError, UsageError

__all__ = ["main"]

# Sub-command modules, each with ``add_parser(subparsers)`` and ``run(args) -> int``.
_COMMANDS = ("zoo", "train", "quantize", "qat", "eval", "bench", "inspect")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every command's sub-parser."""
    parser = _Parser(
        prog="intq",
        description="Quantize CNNs for efficient integer-only inference.",
    )
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in _COMMANDS:
        importlib.import_module(f"intq.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``intq`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            build_parser().print_help()
            return 2
        return int(args.run(args) or 0)
    except UsageError as exc:
        return _fail(exc, 2, debug)
    except IntqError as exc:
        return _fail(exc, 1, debug)
    except KeyboardInterrupt:
        print("intq: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _discard_stdout()
        return 141


def _discard_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (captured output)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _fail(exc: Exception, code: int, debug: bool) -> int:
    if debug:
        raise exc
    print(f"intq: error: {exc}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
