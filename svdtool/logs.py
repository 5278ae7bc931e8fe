"""Keep the console for svdtool's own output: what libraries log (transformers, diffusers, optimum, nncf, torch,
OpenVINO, Ray...) and Python warnings go to a log file in svdtool's cache at WARNING and up; with `--verbose` they
also reach the console, at INFO, with the libraries' progress bars."""

from __future__ import annotations

import logging
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .cache import cache_root

LIBRARY_LOGGERS = ("transformers", "diffusers", "optimum", "nncf", "torch", "huggingface_hub", "openvino", "ray",
                   "datasets", "py.warnings", "PIL", "matplotlib", "urllib3", "httpx", "filelock")
_state = {"verbose": False}
_handlers: list[logging.Handler] = []


def log_file() -> Path:
    return cache_root() / "logs" / "last-run.log"


def configure(verbose: bool, append: bool = False) -> None:
    """Route library output for this run; call before libraries are imported (their settings read the environment).
    A child process of the run passes `append`, so it adds to the run's log instead of starting a new one."""
    _state["verbose"] = verbose
    level = "info" if verbose else "error"  # what they print while being imported, before `adopt` takes them over
    for variable, value in (("TRANSFORMERS_VERBOSITY", level), ("DIFFUSERS_VERBOSITY", level),
                            ("HF_HUB_DISABLE_PROGRESS_BARS", "0" if verbose else "1"), ("TQDM_DISABLE", "0" if verbose else "1"),
                            ("RAY_DEDUP_LOGS", "1")):
        os.environ[variable] = value
    root = logging.getLogger()
    for handler in _handlers:  # a second run in one process (tests) replaces the first run's handlers
        root.removeHandler(handler)
        handler.close()
    _handlers.clear()
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    path = log_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    _handlers.append(logging.FileHandler(path, mode="a" if append else "w"))
    if verbose:
        from rich.logging import RichHandler

        from .console import console

        _handlers.append(RichHandler(console=console, show_path=False))
    for handler in _handlers:
        root.addHandler(handler)
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    adopt()


def adopt(*names: str) -> None:
    """Take back loggers that a library gave its own console handler on import (transformers, diffusers, nncf and
    torch do): their records go to our handlers. Call again after importing such a library."""
    root = logging.getLogger()
    if not root.handlers:  # a child process importing before its `configure`: nothing reaches logging's lastResort
        root.addHandler(logging.NullHandler())
    for name in names or LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.INFO if _state["verbose"] else logging.WARNING)


def verbose() -> bool:
    return _state["verbose"]


@contextmanager
def library_progress_hidden() -> Iterator[None]:
    """Hide progress bars a library draws on rich's global console (nncf's), unless `--verbose`: each long stage shows
    one bar, ours."""
    if verbose():
        yield
        return
    import rich

    console = rich.get_console()
    quiet, console.quiet = console.quiet, True
    try:
        yield
    finally:
        console.quiet = quiet


@contextmanager
def library_output_to_log() -> Iterator[None]:
    """Send what native code writes to file descriptor 2 (Ray's C++ core worker prints its notices there, bypassing
    Python's logging) and what Python code prints to sys.stdout (Ray's driver relays its processes' notices there) to
    the log file, unless `--verbose`; svdtool's console keeps the terminal meanwhile."""
    if verbose():
        yield
        return
    import sys

    from .console import console

    sys.stderr.flush()
    terminal = os.dup(2)
    console_file, stdout = console.file, sys.stdout
    console.file = os.fdopen(os.dup(terminal), "w", buffering=1)
    with open(log_file(), "a") as log:
        os.dup2(log.fileno(), 2)
    sys.stdout = open(log_file(), "a", buffering=1)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(terminal, 2)
        os.close(terminal)
        sys.stdout.close()
        sys.stdout = stdout
        console.file.close()
        console.file = console_file
