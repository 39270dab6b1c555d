"""Grade the exercises: python lessons/exercises/check.py [NAME ...] [--solution] [--list] [--dir DIR]

Each exercise is a file here (ex01_linear.py ... ex12_iwae.py) with one function or class to complete.
This script imports your file, checks it in float64 against finite differences and against minivae's
own implementation on shapes drawn by hypothesis, and prints per exercise PASS or FAIL with every
measured error beside its tolerance. When an error has the shape of a common bug (a ratio of exactly
1/N, a transposed shape, a flipped sign, the numbers of a known wrong variant) it names that bug.

    python lessons/exercises/check.py              # every exercise
    python lessons/exercises/check.py linear relu  # just these
    python lessons/exercises/check.py --list       # what each covers and which lesson teaches it
    python lessons/exercises/check.py --solution   # grade minivae's own implementation (all pass)
    python lessons/exercises/check.py --dir DIR    # grade the exNN_*.py files in DIR instead

Exit code 0 only when every exercise asked for passes; 1 otherwise; 2 for a bad command line.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from _checker import Exercise, Outcome, grade, report  # noqa: E402
from _layers import (  # noqa: E402
    BCE_DIAGNOSES,
    COL2IM_DIAGNOSES,
    CONV2D_DIAGNOSES,
    IM2COL_DIAGNOSES,
    LINEAR_DIAGNOSES,
    RELU_DIAGNOSES,
    SIGMOID_DIAGNOSES,
    check_bce,
    check_col2im,
    check_conv2d,
    check_im2col,
    check_linear,
    check_relu,
    check_sigmoid,
)
from _vae import (  # noqa: E402
    ADAM_DIAGNOSES,
    IWAE_DIAGNOSES,
    KL_DIAGNOSES,
    REPARAM_DIAGNOSES,
    TRAIN_STEP_DIAGNOSES,
    check_adam,
    check_iwae,
    check_kl,
    check_reparam,
    check_train_step,
)

import minivae.nn as nn  # noqa: E402
from minivae.analysis.likelihood import logsumexp  # noqa: E402
from minivae.nn.losses import bce_with_logits, kl_normal  # noqa: E402
from minivae.nn.optim import Adam  # noqa: E402
from minivae.nn.reparam import Reparameterize  # noqa: E402
from minivae.training.loop import train_step  # noqa: E402


def _solution_step(model, optimizer, x, eps, beta):
    return train_step(model, optimizer, x, eps, beta, "elbo")[0].total


def _solution_log_mean_exp(log_w):
    """From minivae's logsumexp: L = lse(log w) - log k, weights = exp(log w - lse)."""
    lse = logsumexp(log_w, axis=1)
    return lse - math.log(log_w.shape[1]), np.exp(log_w - lse[:, None])


# name, file, lesson, what it covers, check, diagnoses, minivae's solution
EXERCISES: tuple[Exercise, ...] = (
    Exercise(
        "linear",
        "ex01_linear.py",
        2,
        "Linear backward: dW, db, dx",
        check_linear,
        LINEAR_DIAGNOSES,
        lambda: SimpleNamespace(Linear=nn.Linear),
    ),
    Exercise(
        "relu",
        "ex02_relu.py",
        3,
        "ReLU forward and backward (the mask)",
        check_relu,
        RELU_DIAGNOSES,
        lambda: SimpleNamespace(ReLU=nn.ReLU),
    ),
    Exercise(
        "sigmoid",
        "ex03_sigmoid.py",
        3,
        "Sigmoid backward, s (1 - s)",
        check_sigmoid,
        SIGMOID_DIAGNOSES,
        lambda: SimpleNamespace(Sigmoid=nn.Sigmoid),
    ),
    Exercise(
        "bce",
        "ex04_bce.py",
        3,
        "BCE on logits: value and gradient, finite for any logit",
        check_bce,
        BCE_DIAGNOSES,
        lambda: SimpleNamespace(
            bce_with_logits=lambda logits, target: bce_with_logits(logits, target, "batchmean")
        ),
    ),
    Exercise(
        "im2col",
        "ex05_im2col.py",
        4,
        "im2col: every window as a column",
        check_im2col,
        IM2COL_DIAGNOSES,
        lambda: SimpleNamespace(im2col=nn.im2col),
    ),
    Exercise(
        "col2im",
        "ex06_col2im.py",
        4,
        "col2im, the adjoint of im2col",
        check_col2im,
        COL2IM_DIAGNOSES,
        lambda: SimpleNamespace(col2im=nn.col2im),
    ),
    Exercise(
        "conv2d",
        "ex07_conv2d.py",
        4,
        "Conv2d backward: dW, db, dx",
        check_conv2d,
        CONV2D_DIAGNOSES,
        lambda: SimpleNamespace(Conv2d=nn.Conv2d),
    ),
    Exercise(
        "reparam",
        "ex08_reparam.py",
        6,
        "the reparameterization, forward and backward",
        check_reparam,
        REPARAM_DIAGNOSES,
        lambda: SimpleNamespace(Reparameterize=Reparameterize),
    ),
    Exercise(
        "kl",
        "ex09_kl.py",
        7,
        "closed-form KL to N(0, I) and its gradients",
        check_kl,
        KL_DIAGNOSES,
        lambda: SimpleNamespace(kl_normal=lambda mu, logvar: kl_normal(mu, logvar, 1.0, "batchmean")),
    ),
    Exercise(
        "adam",
        "ex10_adam.py",
        8,
        "one Adam step with bias correction",
        check_adam,
        ADAM_DIAGNOSES,
        lambda: SimpleNamespace(Adam=Adam),
    ),
    Exercise(
        "train_step",
        "ex11_train_step.py",
        9,
        "the whole VAE training step",
        check_train_step,
        TRAIN_STEP_DIAGNOSES,
        lambda: SimpleNamespace(train_step=_solution_step),
    ),
    Exercise(
        "iwae",
        "ex12_iwae.py",
        13,
        "the IWAE bound's log-mean-exp and its gradient",
        check_iwae,
        IWAE_DIAGNOSES,
        lambda: SimpleNamespace(log_mean_exp=_solution_log_mean_exp),
    ),
)
BY_NAME = {ex.name: ex for ex in EXERCISES}


def select(names: list[str]) -> list[Exercise]:
    """The exercises named (all when none), in course order; a ValueError names an unknown one."""
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise ValueError(
            f"unknown exercise {', '.join(unknown)}: choose from {', '.join(BY_NAME)} (see --list)"
        )
    return [ex for ex in EXERCISES if not names or ex.name in names]


def run(names: list[str], directory: Path | None = HERE, file=None) -> list[Outcome]:
    """Grade the named exercises (directory None: minivae's solutions) and print each result."""
    outcomes = []
    for ex in select(names):
        outcomes.append(grade(ex, directory))
        report(outcomes[-1], file)
    return outcomes


def print_list(file=None) -> None:
    for ex in EXERCISES:
        print(f"{ex.name:<11} lesson {ex.lesson:<3} {ex.filename:<20} {ex.covers}", file=file)
        print(f"{'':<11} diagnoses: {', '.join(d.key for d in ex.diagnoses)}", file=file)


def summary(outcomes: list[Outcome]) -> str:
    passed = sum(o.passed for o in outcomes)
    todo = [o.exercise.name for o in outcomes if not o.passed]
    line = f"{passed} of {len(outcomes)} passed"
    return line + (f"; next: python lessons/exercises/check.py {todo[0]}" if todo else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog="names: " + ", ".join(BY_NAME)
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="exercises to grade (default: all)")
    parser.add_argument("--solution", action="store_true", help="grade minivae's own implementation")
    parser.add_argument("--list", action="store_true", help="list the exercises and what each covers")
    parser.add_argument(
        "--dir", type=Path, default=HERE, help="where the exNN_*.py files are (default: here)"
    )
    args = parser.parse_args(argv)
    if args.list:
        print_list()
        return 0
    try:
        select(args.names)
    except ValueError as e:
        parser.error(str(e))
    outcomes = run(args.names, None if args.solution else args.dir)
    print(summary(outcomes))
    return 0 if all(o.passed for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
