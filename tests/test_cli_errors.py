"""argparse's own errors keep the README's promise: one line `minivae <command>: error: ...` ending in a
pointer to that command's --help, exit code 2, no usage block, no traceback; a misspelt flag, command or
choice gets the closest one. `--help` itself is argparse's, unchanged."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

import minivae.cli
from minivae.cli import build_parser, main

# argv, the command the error names, what the message says (None: no suggestion may be made)
BAD = [
    # top level: a missing, an unknown, a misspelt command
    ([], "minivae", "the following arguments are required: command", None),
    (["trian"], "minivae", "invalid choice: 'trian'", "did you mean train?"),
    (["evalute", "runs/x"], "minivae", "invalid choice: 'evalute'", "did you mean evaluate?"),
    (["frobnicate"], "minivae", "invalid choice: 'frobnicate'", None),
    (["--quiet"], "minivae", "the following arguments are required: command", None),
    # train
    (["train", "--beta", "abc"], "minivae train", "argument --beta: invalid float value: 'abc'", None),
    (["train", "--latent", "x"], "minivae train", "argument --latent: invalid int value: 'x'", None),
    (["train", "--lattent", "5"], "minivae train", "unrecognized arguments: --lattent 5", "did you mean --latent?"),
    (["train", "--lattent=5"], "minivae train", "unrecognized arguments: --lattent=5", "did you mean --latent?"),
    (["train", "--xyzzy"], "minivae train", "unrecognized arguments: --xyzzy", None),
    (["train", "--epochs"], "minivae train", "argument --epochs: expected one argument", None),
    (["train", "--preset", "sed"], "minivae train", "argument --preset: invalid choice: 'sed'", "did you mean seed?"),
    (["train", "stray"], "minivae train", "unrecognized arguments: stray", None),
    # evaluate
    (["evaluate"], "minivae evaluate", "the following arguments are required: run", None),
    (["evaluate", "r", "--iwae-k", "lots"], "minivae evaluate", "argument --iwae-k: invalid int value", None),
    (["evaluate", "r", "--wich", "last"], "minivae evaluate", "unrecognized arguments: --wich last", "did you mean --which?"),
    (["evaluate", "r", "--which", "bst"], "minivae evaluate", "argument --which: invalid choice: 'bst'", "did you mean best?"),
    (["evaluate", "r", "--backend"], "minivae evaluate", "argument --backend: expected one argument", None),
    # sweep
    (["sweep", "--latents", "a"], "minivae sweep", "argument --latents: invalid int value: 'a'", None),
    (["sweep", "--betass", "1"], "minivae sweep", "unrecognized arguments: --betass 1", "did you mean --betas?"),
    (["sweep", "--seeds"], "minivae sweep", "argument --seeds: expected one argument", None),
    (["sweep", "--lat", "5"], "minivae sweep", "ambiguous option: --lat could match", None),
    (["sweep", "--betas"], "minivae sweep", "argument --betas: expected at least one argument", None),
    # data
    (["data"], "minivae data", "the following arguments are required", None),
    (["data", "fecth"], "minivae data", "invalid choice: 'fecth'", "did you mean fetch?"),
    (["data", "fetch", "--datset", "mnist"], "minivae data fetch", "unrecognized arguments: --datset mnist", "did you mean --dataset?"),
    (["data", "fetch", "--dataset", "fasion"], "minivae data fetch", "invalid choice: 'fasion'", "did you mean fashion-mnist?"),
    (["data", "fetch", "--source"], "minivae data fetch", "argument --source: expected one argument", None),
    (["data", "info", "--rot", "/tmp"], "minivae data info", "unrecognized arguments: --rot /tmp", "did you mean --root?"),
    (["data", "info", "--root"], "minivae data info", "argument --root: expected one argument", None),
]  # fmt: skip


def check_one_line(err: str, command: str, message: str, suggestion: str | None) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith(f"{command}: error: "), line
    assert line.endswith(f" (see {command} --help)"), line
    assert message in line, line
    if suggestion is None:
        assert "did you mean" not in line, line
    else:
        assert suggestion in line, line
    assert "usage:" not in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv,command,message,suggestion", BAD, ids=[" ".join(a) or "(none)" for a, *_ in BAD]
)
def test_argparse_errors_are_one_line(argv, command, message, suggestion, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    check_one_line(err, command, message, suggestion)


@pytest.mark.parametrize(
    "argv,command,message,suggestion",
    [BAD[1], BAD[5], BAD[7], BAD[-5]],
    ids=["unknown command", "bad type", "misspelt flag", "data fetch"],
)
def test_the_command_line_says_the_same(argv, command, message, suggestion):
    done = subprocess.run([sys.executable, "-m", "minivae", *argv], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stdout == ""
    check_one_line(done.stderr, command, message, suggestion)


@pytest.mark.parametrize(
    "argv", [[], ["train"], ["evaluate"], ["sweep"], ["data"], ["data", "fetch"], ["data", "info"]]
)
def test_help_is_argparse_own(argv, capsys, monkeypatch):
    """`--help` prints exactly what a plain argparse.ArgumentParser prints for the same flags."""

    def help_text(parser: argparse.ArgumentParser) -> str:
        with pytest.raises(SystemExit) as e:
            parser.parse_args([*argv, "--help"])
        assert e.value.code == 0
        out, err = capsys.readouterr()
        assert err == ""
        return out

    ours = help_text(build_parser())
    monkeypatch.setattr(minivae.cli, "Parser", argparse.ArgumentParser)
    plain = help_text(build_parser())
    assert ours == plain and "usage: minivae" in ours


def test_good_command_lines_still_parse():
    args = build_parser().parse_args(["sweep", "--latents", "5", "10", "--betas", "-0", "1"])
    assert args.latents == [5, 10] and args.betas == [0.0, 1.0]
    args = build_parser().parse_args(["data", "fetch", "-v", "--dataset", "fashion-mnist"])
    assert args.verbose and args.dataset == "fashion-mnist"
