"""`svdtool cache list|clear`: what svdtool keeps in its own cache (named models exported on first use, the log)."""

from __future__ import annotations

from typing import Optional

import typer

from svdtool import cache as svdtool_cache
from svdtool.console import console

from .common import run_command

app = typer.Typer(help="List or clear svdtool's cache (SVDTOOL_CACHE, default ~/.cache/svdtool).", no_args_is_help=True,
                  rich_markup_mode=None)


@app.command("list")
def list_cache() -> None:
    """Each cached item with its size, and where the last run's library log is."""

    def work() -> None:
        entries = svdtool_cache.cached_entries()
        for path, size in entries:
            console.print(f"{size / 2**20:10.1f} MiB  {path}", soft_wrap=True, markup=False)
        total = sum(size for _, size in entries) / 2**20
        console.print(f"{len(entries)} items, {total:.1f} MiB in {svdtool_cache.cache_root()}", markup=False)

    run_command(work)


@app.command("clear")
def clear_cache(
    names: Optional[list[str]] = typer.Argument(None, help="named models whose IR to remove (default: everything)"),
) -> None:
    """Remove cached IRs (they are exported again on next use) and logs."""

    def work() -> None:
        removed = svdtool_cache.clear(names or None)
        console.print(f"removed {len(removed)} items from {svdtool_cache.cache_root()}", markup=False)

    run_command(work)
