"""Progress bars (rich) for anything that takes more than a few seconds; off when not a TTY."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sized
from typing import TypeVar

__all__ = ["progress_bar"]

T = TypeVar("T")


def progress_bar(items: Iterable[T], description: str, *, enabled: bool = True) -> Iterator[T]:
    """Yield ``items`` while drawing a rich progress bar on stderr (if enabled and a TTY)."""
    if not enabled or not sys.stderr.isatty():
        yield from items
        return
    from rich.progress import Progress

    total = len(items) if isinstance(items, Sized) else None
    with Progress(transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)
