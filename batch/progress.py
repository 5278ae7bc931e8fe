"""The batch's one progress bar: videos done / failed / rate."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from svdtool.console import console


class BatchProgress:
    def __init__(self, total: int):
        self.total, self.failed, self.start = total, 0, time.perf_counter()
        self.progress = Progress(SpinnerColumn(), TextColumn("[bold]batch"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[failed]} failed · {task.fields[rate]}"), TimeElapsedColumn(),
                                 TimeRemainingColumn(), console=console, disable=not sys.stderr.isatty())
        self.task = self.progress.add_task("batch", total=total, failed=0, rate="- videos/h")

    def __enter__(self) -> "BatchProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def update(self, ok: bool) -> None:
        self.failed += not ok
        finished = self.progress.tasks[0].completed + 1
        rate = 3600 * (finished - self.failed) / max(time.perf_counter() - self.start, 1e-9)
        self.progress.update(self.task, advance=1, failed=self.failed, rate=f"{rate:.0f} videos/h")
