"""The ``intq`` command line: one sub-module per command, errors as one line.

Exit codes: 0 success, 1 failure (IntqError, or an OSError such as a file name too long),
2 usage error (UsageError, argparse), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM,
handled like Ctrl-C: temporary files and folders are removed), 141 stdout closed early (e.g.
piped into ``head``; quietly). Every message is one line: control characters in names from
user data are escaped (``errors.printable``). ``--debug`` shows the Python traceback.
"""

import argparse
import contextlib
import errno
import importlib
import os
import signal
import sys
import threading

from intq.errors import IntqError, UsageError, printable

__all__ = ["main"]

# Sub-command modules, each with ``add_parser(subparsers)`` and ``run(args) -> int``.
_COMMANDS = ("zoo", "train", "quantize", "qat", "eval", "bench", "inspect")


_OS_HINTS = {errno.ENAMETOOLONG: " (a name in a path may have at most 255 bytes; use a "
                                 "shorter one)",
             errno.ELOOP: " (a symlink loop; fix or remove the link)"}


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that cleanups run as for Ctrl-C."""


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
        with _sigterm_as_interrupt():
            args = build_parser().parse_args(argv)
            if args.command is None:
                build_parser().print_help()
                return 2
            return int(args.run(args) or 0)
    except UsageError as exc:
        return _fail(exc, 2, debug)
    except IntqError as exc:
        return _fail(exc, 1, debug)
    except _Terminated:
        print("intq: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("intq: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _discard_stdout()
        return 141
    except OSError as exc:  # the environment: a name too long, a symlink loop, ...
        return _fail(exc, 1, debug, _os_error_text(exc))


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """While the block runs (in the main thread), SIGTERM raises ``_Terminated``."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_terminated(signum, frame) -> None:
    raise _Terminated


def _os_error_text(exc: OSError) -> str:
    if exc.filename is None:
        return exc.strerror or str(exc)
    hint = _OS_HINTS.get(exc.errno, "")
    return f"cannot use {exc.filename!r}: {exc.strerror}{hint}"


def _discard_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (captured output)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _fail(exc: Exception, code: int, debug: bool, text: str | None = None) -> int:
    if debug:
        raise exc
    print(f"intq: error: {printable(str(exc) if text is None else text)}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
