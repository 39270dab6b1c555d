"""The README's code blocks run as written: each Python block in a fresh interpreter, and each `minivae`
command line of its shell blocks through the CLI's own parser (running them all would train for hours)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from minivae.cli import build_parser

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```", README.read_text(), flags=re.M | re.S)
PYTHON = [code for lang, code in BLOCKS if lang == "python"]
SHELL = [code for lang, code in BLOCKS if lang == "bash"]


def test_the_readme_has_its_blocks():
    """The layer protocol, the training step and the data snippet (a guard against a broken regex)."""
    assert len(PYTHON) >= 3 and len(SHELL) >= 3
    assert any("optimizer.step()" in code and "vae_loss" in code for code in PYTHON)


@pytest.mark.parametrize(
    "code",
    [pytest.param(c, marks=[pytest.mark.slow] if "load_mnist(" in c else []) for c in PYTHON],
    ids=[f"python{i}" for i in range(len(PYTHON))],
)
def test_python_block_runs_as_written(code, tmp_path):
    """In its own interpreter, from an empty directory: nothing defined elsewhere is used. The data block
    loads real MNIST (fetched once into the cache), so it is slow."""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip(), "each block prints what it computed"


def minivae_lines() -> list[str]:
    lines = []
    for code in SHELL:
        for line in code.splitlines():
            command = line.split("#")[0].strip()
            for part in command.split("&&"):
                if part.strip().startswith("minivae "):
                    lines.append(part.strip())
    return lines


@pytest.mark.parametrize("line", minivae_lines())
def test_minivae_command_lines_parse(line):
    """Every flag a README command gives exists, with a value the parser accepts."""
    argv = shlex.split(line)[1:]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse's way of refusing
        pytest.fail(f"`{line}` is refused by minivae's parser (exit {e.code})")
    assert args.command == argv[0]
