"""The `svdtool` command: a thin typer layer over the library, one module per command group (as huggingface_hub's
`hf`). Heavy imports happen inside each command, so `--help` is instant. Help text is plain (no rich markup), so
brackets such as `[thresholds]` print as written."""

from __future__ import annotations

import typer

from . import bench, cache, export, generate, push, quantize, serve, validate

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Stable Video Diffusion → OpenVINO on CPU: export, quantize, generate, validate, push, serve.")


def _print_version(value: bool) -> None:
    if value:
        from svdtool import __version__

        typer.echo(f"svdtool {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                          help="print svdtool's version and exit")) -> None:
    pass  # the app's help is Typer(help=...)'s; this callback only carries --version


app.command()(export.export)
app.command()(generate.generate)
app.command()(quantize.quantize)
app.command()(quantize.inspect)
app.command()(validate.validate)
app.command()(validate.reference)
app.command()(validate.metrics)
app.command()(push.push)
app.command()(bench.bench)
app.command()(serve.serve)
app.add_typer(cache.app, name="cache")


def main() -> None:
    """Console entry point."""
    app()
