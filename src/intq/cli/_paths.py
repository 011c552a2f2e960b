"""Output paths, checked before any slow work: the name, the folder, what is there now, and
every file the command reads, all compared after resolving symlinks (hard links too).

The files a command reads include its defaults: the zoo's shipped weights (``shipped_files``)
are read by ``quantize``, ``qat`` and ``eval`` whenever a zoo model is named, so no output may
replace one (``intq train`` may rewrite the weights of the model it trains, as the zoo's
error message for missing weights suggests).
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

from intq.errors import IntqError, UsageError
from intq.outputs import clean_stale
from intq.zoo.registry import WEIGHTS_DIR

__all__ = ["check_output", "shipped_files"]

_NAME_MAX = 255  # bytes per path component on Linux file systems
_KINDS = {stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFIFO: "a named pipe", stat.S_IFSOCK: "a socket"}


def shipped_files() -> list[Path]:
    """The files shipped with the zoo (weights and their record), which commands read."""
    return sorted(p for p in WEIGHTS_DIR.iterdir() if p.is_file())


def check_output(path: Path, *, suffix: str, inputs: Iterable[Path],
                 rewrites: Path | None = None) -> Path:
    """``path`` if it can be written: ends in ``suffix``, has no over-long name, its folder
    exists and is writable, it is a regular file or absent, and it is none of ``inputs``
    nor a shipped zoo file (but ``rewrites``) once symlinks are resolved. Stale temporaries
    of earlier, killed writes of ``path`` are removed."""
    if path.suffix != suffix:
        raise UsageError(f"output {path}: the file name must end in {suffix}")
    _check_name_lengths(path)
    if not path.parent.is_dir():
        raise IntqError(f"output directory {path.parent} does not exist; create it first")
    _check_kind(path)
    shipped = [p for p in shipped_files() if rewrites is None or not _same_file(p, rewrites)]
    for source in [*inputs, *shipped]:
        if _same_file(path, source):
            raise IntqError(f"output {path} is an input file; choose another name")
    try:  # the only sure test (permissions, read-only mounts, root), before any slow work
        tempfile.TemporaryFile(dir=path.parent).close()
    except OSError as exc:
        raise IntqError(f"output directory {path.parent} is not writable ({exc.strerror}); "
                        "choose another output path") from None
    clean_stale(path.parent, f".{path.name}.", ".tmp")
    return path


def _check_name_lengths(path: Path) -> None:
    for part in path.parts:
        if len(os.fsencode(part)) > _NAME_MAX:
            raise UsageError(f"output {path}: a path component is {len(os.fsencode(part))} "
                             f"bytes long, more than the {_NAME_MAX} file systems allow")


def _check_kind(path: Path) -> None:
    """A directory, a device, a pipe or a socket is never replaced by a file."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:  # absent, or a dangling symlink (replaced by the file)
        return
    if stat.S_ISDIR(mode):
        raise IntqError(f"output {path} is a directory; give a file name")
    if not stat.S_ISREG(mode):
        kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        raise IntqError(f"output {path} is {kind}, not a regular file; give a file path")


def _same_file(path: Path, source: Path) -> bool:
    if os.path.realpath(path) == os.path.realpath(source):
        return True
    try:
        return path.exists() and source.exists() and path.samefile(source)
    except OSError:  # an unreadable or over-long input name: loading it reports that
        return False
