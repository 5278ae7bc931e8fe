"""Rich console and progress bars shared by every stage."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

console = Console(stderr=True, highlight=False)


def make_progress() -> Progress:
    """A progress bar with a description, a bar, n/N and elapsed time (quiet when stderr is not a terminal)."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=not sys.stderr.isatty(),
    )


@contextmanager
def progress_task(description: str, total: int) -> Iterator[callable]:
    """Yield an `advance()` callable for one bar of `total` steps."""
    with make_progress() as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)
