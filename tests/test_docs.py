"""The documentation stays true: the generated pages are current, the README is a launch pad, and every `svdtool`
command the README and the guides show names a command and options that exist."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from svdtool.cli import app
from svdtool.cli.reference import markdown

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def test_cli_reference_is_current():
    assert (ROOT / "docs" / "cli.md").read_text() == markdown(), \
        "docs/cli.md is stale: run `python -m svdtool.cli.reference docs/cli.md`"


def test_performance_page_is_current():
    from performance_page import page

    assert (ROOT / "docs" / "performance.md").read_text() == page(), \
        "docs/performance.md is stale: run `python bench/performance_page.py docs/performance.md`"


def test_bench_holds_benchmarks_the_docs_cite():
    """Every script in bench/ is named by the docs (the site's pages, README, CONTRIBUTING, or a results page the docs
    link), so none is a leftover; svd-mini's training and research tools live in models/training/."""
    pages = [*(ROOT / "docs").rglob("*.md"), ROOT / "README.md", ROOT / "CONTRIBUTING.md", *(ROOT / "bench" / "results").glob("*.md")]
    text = "\n".join(page.read_text() for page in pages)
    scripts = [path for path in (ROOT / "bench").iterdir() if path.suffix in (".py", ".sh") and path.name != "common.py"]
    uncited = [path.name for path in scripts if f"bench/{path.name}" not in text]
    assert not uncited, f"bench/ scripts no page cites (cite them or delete them): {uncited}"
    assert not [path.name for path in scripts if path.name.startswith(("mini_", "train_"))], "svd-mini's tools: models/training/"


def test_readme_is_a_launch_pad():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    assert 'pip install -e ".[test]" && pytest' in readme  # the test command CI runs
    for page in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / page).is_file(), f"README links to {page}, which does not exist"


def shown_commands() -> list[tuple[str, list[str]]]:
    """(file, argv) of every `svdtool ...` command in a bash block of the README or a guide, joined across `\\`."""
    commands = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        if path.name == "cli.md":
            continue
        for block in re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                for part in re.split(r"&&|;|\|", line.split(" #")[0]):
                    words = shlex.split(part, comments=True)
                    if words and words[0] == "svdtool":
                        commands.append((path.name, words[1:]))
    return commands


COMMANDS = shown_commands()


def test_the_docs_show_commands():
    assert len(COMMANDS) >= 20 and {"export", "quantize", "generate", "validate", "serve"} <= {argv[0] for _, argv in COMMANDS}


@pytest.mark.parametrize("where,argv", COMMANDS, ids=[f"{where}:{' '.join(argv)[:50]}" for where, argv in COMMANDS])
def test_a_shown_command_names_real_options(where, argv):
    path = [argv[0]] + ([argv[1]] if argv[0] == "cache" and len(argv) > 1 else [])
    result = CliRunner().invoke(app, [*path, "--help"], terminal_width=200)
    assert result.exit_code == 0, f"{where}: `svdtool {' '.join(path)}` is not a command"
    known = set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", result.output))
    for word in argv:
        option = word.split("=")[0]
        if option.startswith("-") and option != "-":
            assert option in known, f"{where}: `svdtool {' '.join(argv)}` uses {option}, which `svdtool {' '.join(path)}` lacks"
