"""Every python example in the README and in docs/*.md runs, and .ci/run runs exactly the README's test
command."""

import contextlib
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def promised_outputs(block: str) -> list[str]:
    """Outputs written as a comment after ``print(...)`` (same line or next); "..." marks a sketch."""
    lines = block.splitlines()
    out = []
    for i, line in enumerate(lines):
        if not line.lstrip().startswith("print("):
            continue
        same = re.search(r"\)\s*#\s*(.*)$", line)
        text = same.group(1) if same else ""
        if not text and i + 1 < len(lines) and lines[i + 1].lstrip().startswith("# "):
            text = lines[i + 1].strip()[2:]
        if text and "..." not in text and not text.startswith(("clearly", "->")):
            out.append(text.strip())
    return out


def run_blocks(text: str, name: str) -> tuple[int, int]:
    """Run a page's python blocks in order in one namespace; returns (blocks run, promises checked)."""
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    namespace: dict = {}
    checked = 0
    for block in blocks:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(block, name, "exec"), namespace)
        printed = out.getvalue().splitlines()
        for line in promised_outputs(block):
            assert line in printed, f"{name} promises {line!r}, printed {printed}"
            checked += 1
    return len(blocks), checked


def test_python_examples_run_and_print_what_they_say():
    ran, checked = run_blocks(README, "README.md")
    assert ran >= 2 and checked >= 3


DOCS_PAGES = sorted(path.name for path in (ROOT / "docs").glob("*.md"))


@pytest.mark.parametrize("page", DOCS_PAGES)
def test_python_examples_of_the_docs_pages_run_and_print_what_they_say(page):
    run_blocks((ROOT / "docs" / page).read_text(), page)


def test_the_front_page_fits_a_screenful_and_links_every_docs_page():
    assert len(README.splitlines()) <= 200
    for page in DOCS_PAGES:
        assert f"(docs/{page}" in README, f"README does not link docs/{page}"


def test_relative_links_of_the_readme_and_the_docs_resolve():
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
            if not target.startswith(("http://", "https://")):
                assert (path.parent / target).exists(), f"{path.name} links {target}, which does not exist"


def test_ci_runs_the_readme_test_command():
    command = re.search(r"## Install and test.*?```bash\n(.*?)\n```", README, flags=re.S).group(1).strip()
    assert "python -m pytest" in command
    assert command in (ROOT / ".ci" / "run").read_text()


def test_quickstart_command_installs_and_runs_the_quickstart_config():
    section = re.search(r"## Quickstart: the main job.*?```bash\n(.*?)\n```", README, flags=re.S).group(1)
    assert section.startswith("python3 -m venv .venv") and 'pip install -e ".[train]"' in section
    config = re.search(r"geo-pe-train --config (\S+)$", section).group(1)
    assert (ROOT / "configs" / f"{config}.yaml").is_file()  # shipped with the package as train/configs
    from train.config import resolve_config

    assert resolve_config(config) == ROOT / "train" / "configs" / f"{config}.yaml"
