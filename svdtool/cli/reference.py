"""docs/cli.md, the CLI reference, written from the app's own `--help` (tests/test_docs.py fails when it is stale).

    python -m svdtool.cli.reference docs/cli.md
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import typer
from typer.testing import CliRunner

from . import app

WIDTH = 110  # the help's line width on the page, fixed so that the page does not depend on the terminal


def _commands(group: click.Group, prefix: list[str]) -> list[list[str]]:
    paths = []
    for name in group.list_commands(click.Context(group)):
        command = group.get_command(click.Context(group), name)
        paths.append([*prefix, name])
        if isinstance(command, click.Group):
            paths += _commands(command, [*prefix, name])
    return paths


def markdown() -> str:
    runner = CliRunner()
    root = typer.main.get_command(app)
    sections = ["# CLI reference", "",
                "Every command's `--help`, generated from the app by `python -m svdtool.cli.reference docs/cli.md`; "
                "a test fails when this page is stale.", ""]
    for path in [[], *_commands(root, [])]:
        result = runner.invoke(app, [*path, "--help"], terminal_width=WIDTH, prog_name="svdtool")
        title = " ".join(["svdtool", *path])
        sections += [f"## `{title}`", "", "```text", result.output.rstrip(), "```", ""]
    return "\n".join(sections)


if __name__ == "__main__":
    Path(sys.argv[1]).write_text(markdown())
