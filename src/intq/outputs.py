"""Every file and temporary folder intq writes: atomic, with one file mode, no leftovers.

A file NAME is written to ``.NAME.<pid>-<random>.tmp`` in its folder, fsynced, given mode
``0666 & ~umask`` (the mode of any new file; ``mkstemp`` alone would give 0600) and renamed
onto NAME, so NAME is complete or absent. A process killed halfway (SIGKILL) leaves its
temporary behind; the next write of NAME removes every ``.NAME.<pid>-*.tmp`` whose process
is gone. Temporary folders (``temporary_folder``) carry the pid the same way and are
cleaned alike. A full disk or another ``OSError`` while writing is an ``OutputError``: an
``OSError`` for library callers and one ``IntqError`` line for the CLI.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from intq.errors import IntqError

__all__ = [
    "OutputError",
    "clean_stale",
    "file_mode",
    "temporary_folder",
    "write_atomic",
]

_RANDOM = r"[a-z0-9_]{8}"  # tempfile's random part


class OutputError(IntqError, OSError):
    """Writing an output failed (a full disk, a vanished folder): ``cannot write F: why``."""

    def __str__(self) -> str:
        return str(self.strerror)


def file_mode() -> int:
    """The mode a new file gets: ``0o666`` minus the process umask (read from
    /proc/self/status where it can be, so the umask never changes, even briefly)."""
    try:
        line = next(ln for ln in Path("/proc/self/status").read_text().splitlines()
                    if ln.startswith("Umask:"))
        mask = int(line.split()[1], 8)
    except (OSError, StopIteration, IndexError, ValueError):
        mask = os.umask(0)
        os.umask(mask)
    return 0o666 & ~mask


def write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file, fsync, ``file_mode()``, rename).
    An error or Ctrl-C leaves ``path`` as it was and no temporary file."""
    path = Path(path)
    clean_stale(path.parent, f".{path.name}.", ".tmp")
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-",
                                   suffix=".tmp")
    except OSError as exc:
        raise OutputError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise OutputError(exc.errno, f"cannot write {path}: {exc.strerror or exc}"
                              ) from None
        raise
    return path


@contextlib.contextmanager
def temporary_folder(prefix: str) -> Iterator[Path]:
    """A fresh folder ``<tmp>/<prefix><pid>-<random>``, removed afterwards (also on Ctrl-C
    or SIGTERM, see ``intq.cli``); folders of earlier, killed runs are removed first."""
    base = Path(tempfile.gettempdir())
    clean_stale(base, prefix)
    with tempfile.TemporaryDirectory(prefix=f"{prefix}{os.getpid()}-", dir=base) as folder:
        yield Path(folder)


def clean_stale(folder: Path, prefix: str, suffix: str = "") -> list[Path]:
    """Remove the entries ``<prefix><pid>-<random><suffix>`` of ``folder`` (intq's naming)
    that this user owns and whose process ``pid`` no longer runs; return them. Errors are
    ignored (best effort)."""
    pattern = re.compile(f"{re.escape(prefix)}(\\d+)-{_RANDOM}{re.escape(suffix)}")
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match and _is_stale(entry, int(match.group(1))):
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def _is_stale(entry: os.DirEntry, pid: int) -> bool:
    try:
        info = entry.stat(follow_symlinks=False)
    except OSError:
        return False
    if info.st_uid != os.getuid() or not (stat.S_ISREG(info.st_mode)
                                          or stat.S_ISDIR(info.st_mode)):
        return False
    return not _running(pid)


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except (OverflowError, ValueError):
        return False
    return True
