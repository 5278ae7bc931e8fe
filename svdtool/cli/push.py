"""`svdtool push`: a verified IR folder and its model card to the Hugging Face Hub, in one commit."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from svdtool.console import console

from .common import Verbose, run_command


def push(
    model_dir: Path = typer.Argument(..., help="exported or quantized IR folder"),
    repo_id: str = typer.Option(..., "--repo-id", help="USER/NAME on the Hub"),
    private: bool = typer.Option(False, "--private", help="create the repo private"),
    revision: Optional[str] = typer.Option(None, "--revision", help="branch to push to (created if missing)"),
    commit_message: Optional[str] = typer.Option(None, "--commit-message"),
    token: Optional[str] = typer.Option(None, "--token", help="Hub token (default: HF_TOKEN or the saved login)"),
    create_pr: bool = typer.Option(False, "--create-pr", help="open a pull request instead of committing"),
    validation: Optional[Path] = typer.Option(None, "--validation", help="a `svdtool validate` report folder to show in the card"),
    dry_run: bool = typer.Option(False, "--dry-run", help="show files, sizes and the model card; upload nothing"),
    verbose: Verbose = False,
) -> None:
    """Publish the folder and a generated model card to the Hugging Face Hub, in one commit."""

    def work() -> None:
        from rich.markdown import Markdown

        from svdtool.push import push as run_push

        plan = run_push(model_dir, repo_id, private=private, revision=revision, commit_message=commit_message, token=token,
                        create_pr=create_pr, dry_run=dry_run, validation_dir=validation)
        if dry_run:
            for name, size in plan["files"].items():
                console.print(f"  {size / 2**20:10.2f} MiB  {name}", soft_wrap=True)
            console.print(f"[bold]dry run[/]: {len(plan['files']) + 1} files (with README.md) would go to {repo_id}; model card:")
            console.print(Markdown(plan["card"]))

    run_command(work, verbose)
