"""The repository stands alone: what it tells a reader (README, docs, --help texts,
docstrings) points only at files it ships, and docs/architecture.md keeps up with the layer
contracts that `make lint` enforces."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

import pytest

from actors.cli import BENCHMARKS, _parser
from bench._report import bench_parser

ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURE = ROOT / "docs" / "architecture.md"

# Documents that lived beside the repository, in a design folder a user does not have.
OUTSIDE = re.compile(
    r"\.\./shared|\bdesign/|\b(?:quality|runtime|agent|chat|protocol)\.md\b", re.IGNORECASE
)
SKIPPED = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", "duplex.egg-info"}


def _shipped_text_files() -> list[Path]:
    files = []
    for path in ROOT.rglob("*"):
        if SKIPPED.intersection(path.relative_to(ROOT).parts) or not path.is_file():
            continue
        if path.suffix in {".py", ".md", ".toml", ".txt"} or path.name in {"Makefile", "run"}:
            files.append(path)
    return files


def test_nothing_in_the_repository_points_at_files_outside_it() -> None:
    this = Path(__file__).resolve()
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _shipped_text_files()
        if path != this
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert found == [], "\n".join(found)


def _help_texts() -> dict[str, str]:
    """Every `--help` text, by command: duplex's own and each bench's (its docstring)."""
    parser = _parser()
    texts = {"duplex": parser.format_help()}
    commands = next(a for a in parser._actions if a.dest == "command")
    texts |= {f"duplex {name}": sub.format_help() for name, sub in commands.choices.items()}
    for name in BENCHMARKS:
        module = importlib.import_module(f"bench.{name}")
        texts[f"duplex bench {name}"] = bench_parser(name, module.__doc__).format_help()
    return texts


HELP_TEXTS = _help_texts()


@pytest.mark.parametrize("command", sorted(HELP_TEXTS))
def test_help_texts_cite_only_what_ships(command: str) -> None:
    found = OUTSIDE.search(HELP_TEXTS[command])
    assert found is None, f"{command} --help cites {found.group()}"


def test_paths_the_readme_names_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "../" not in readme
    named = set(re.findall(r"`((?:actors|protocol|storage|bench|tests|docs)/[\w./-]*)`", readme))
    named |= set(re.findall(r"`([\w-]+\.(?:md|toml))`", readme))
    assert "docs/architecture.md" in named
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert missing == [], missing


def test_the_architecture_names_every_layer_in_order_and_every_contract() -> None:
    text = ARCHITECTURE.read_text()
    diagram = re.search(r"```\n(.*?)```", text, re.S)
    assert diagram is not None
    layers = [line.split()[0] for line in diagram.group(1).splitlines() if line[:1].isalpha()]
    assert layers == ["face", "chat", "agent", "queue", "storage", "wire", "kernel"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = [c["name"] for c in pyproject["tool"]["importlinter"]["contracts"]]
    missing = [name for name in contracts if name not in text]
    assert missing == [], f"contracts docs/architecture.md does not explain: {missing}"
    for heading in ("## The contracts", "## Durable commands and acknowledgements"):
        assert heading in text
    assert "## Where to start reading" in text
