"""The training configuration: one dataclass, validated, mapped one-to-one onto `minivae train`'s flags."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from minivae.backend import BACKENDS, DTYPES
from minivae.data import DATASETS
from minivae.errors import UserError
from minivae.models import ARCHS, BOTTLENECKS, DEFAULT_INIT
from minivae.nn import INITS
from minivae.nn.losses import LOSS_FORMS, effective_beta
from minivae.training.schedules import SCHEDULES

OPTIMIZERS = ("adam", "adam-keras", "sgd")
ON_NONFINITE = ("stop", "skip")
BINARIZE = ("none", "dynamic")


@dataclass
class TrainConfig:
    """Everything a run depends on. Defaults give the main job: the MLP VAE, a couple of minutes on a CPU."""

    arch: str = field(default="mlp", metadata={"help": f"model: {' | '.join(ARCHS)}"})
    latent: int = field(default=20, metadata={"help": "latent size"})
    hidden: int = field(default=400, metadata={"help": "hidden units of the mlp model"})
    beta: float = field(default=1.0, metadata={"help": "KL weight, in the units of --loss"})
    loss: str = field(
        default="elbo",
        metadata={
            "help": "elbo: per-image sum BCE + beta KL (nats); seed: the Keras study's pixel-mean form"
        },
    )
    beta_schedule: str = field(
        default="constant",
        metadata={
            "help": "how the KL weight moves with the step: constant (--beta throughout); linear (KL annealing: "
            "from 0 up to --beta over --beta-warmup-epochs, then --beta); cyclical (Fu et al. 2019: "
            "--beta-cycles cycles over --epochs, in each beta rises from 0 to --beta over the first "
            "--beta-cycle-ratio of the cycle, then stays); capacity (Burgess et al. 2018: loss = recon + "
            "beta |KL - C|, C rising from 0 to --capacity-max nats over --capacity-epochs; --loss elbo only)"
        },
    )
    beta_warmup_epochs: float = field(
        default=0.0,
        metadata={"help": "linear schedule: epochs (fractions allowed) to reach --beta (0: all of --epochs)"},
    )
    beta_cycles: int = field(
        default=4, metadata={"help": "cyclical schedule: number of cycles over --epochs"}
    )
    beta_cycle_ratio: float = field(
        default=0.5,
        metadata={"help": "cyclical schedule: fraction of each cycle over which beta rises, in (0, 1]"},
    )
    capacity_max: float = field(
        default=25.0, metadata={"help": "capacity schedule: the final KL target C_max, in nats per image"}
    )
    capacity_epochs: float = field(
        default=0.0,
        metadata={
            "help": "capacity schedule: epochs over which C rises to --capacity-max (0: all of --epochs)"
        },
    )
    init: str | None = field(
        default=None,
        metadata={
            "help": f"{' | '.join(INITS)} (default: "
            + ", ".join(f"{init} for {arch}" for arch, init in DEFAULT_INIT.items())
            + ")"
        },
    )
    bottleneck: str = field(
        default="relu",
        metadata={"help": f"conv model's 32-unit bottleneck activation: {' | '.join(BOTTLENECKS)}"},
    )
    optimizer: str = field(
        default="adam", metadata={"help": "adam (PyTorch's) | adam-keras (eps on the raw sqrt(v)) | sgd"}
    )
    lr: float = field(default=1e-3, metadata={"help": "learning rate"})
    epochs: int = field(default=10, metadata={"help": "passes over the training set"})
    batch_size: int = field(default=128, metadata={"help": "images per step"})
    val_fraction: float = field(
        default=0.1, metadata={"help": "last fraction of the training set held out for validation (0: none)"}
    )
    patience: int = field(
        default=0,
        metadata={"help": "stop after this many epochs without a better validation loss (0: never)"},
    )
    seed: int = field(default=0, metadata={"help": "seeds the weights, the shuffling and the noise"})
    backend: str = field(default="numpy", metadata={"help": f"{' | '.join(BACKENDS)}"})
    dtype: str = field(default="float32", metadata={"help": f"{' | '.join(DTYPES)}"})
    dataset: str = field(default="mnist", metadata={"help": f"{' | '.join(DATASETS)}"})
    binarize: str = field(
        default="none",
        metadata={
            "help": "none: grey levels in [0, 1] are the BCE targets; dynamic: every training batch is drawn "
            "afresh as pixel ~ Bernoulli(grey level) (Burda et al. 2015's MNIST), validation and test sets "
            "once from a fixed stream, so log p(x) is a likelihood of binary images"
        },
    )
    train_limit: int = field(default=0, metadata={"help": "use only the first N training images (0: all)"})
    test_limit: int = field(default=0, metadata={"help": "evaluate on the first N test images (0: all)"})
    grad_clip: float = field(default=0.0, metadata={"help": "clip the global gradient norm to this (0: off)"})
    on_nonfinite: str = field(
        default="stop",
        metadata={"help": "what a NaN/Inf loss or gradient does: stop the run, or skip the batch"},
    )
    tsne_points: int = field(default=2000, metadata={"help": "test images in the t-SNE map (0: no map)"})

    def validate(self) -> TrainConfig:
        """Raise UserError naming the first bad value and what it should be (its type, then its range)."""
        for f in fields(self):
            check_type(f.name, getattr(self, f.name), f.type)
        choices = {
            "arch": ARCHS, "loss": LOSS_FORMS, "bottleneck": BOTTLENECKS, "optimizer": OPTIMIZERS,
            "backend": BACKENDS, "dtype": DTYPES, "dataset": DATASETS, "on_nonfinite": ON_NONFINITE,
            "beta_schedule": SCHEDULES, "binarize": BINARIZE,
        }  # fmt: skip
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise UserError(
                    f"--{flag(name)} {getattr(self, name)!r} is not known: choose one of {', '.join(allowed)}"
                )
        if self.init is not None and self.init not in INITS:
            raise UserError(f"--init {self.init!r} is not known: choose one of {', '.join(INITS)}")
        for name in ("latent", "hidden", "epochs", "batch_size", "beta_cycles"):
            if getattr(self, name) < 1:
                raise UserError(f"--{flag(name)} must be a whole number >= 1, got {getattr(self, name)}")
        for name in ("patience", "train_limit", "test_limit", "tsne_points"):
            if getattr(self, name) < 0:
                raise UserError(f"--{flag(name)} must be >= 0, got {getattr(self, name)}")
        for name in ("beta", "grad_clip", "beta_warmup_epochs", "capacity_max", "capacity_epochs"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise UserError(f"--{flag(name)} must be a finite number >= 0, got {v}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise UserError(f"--lr must be a finite number > 0, got {self.lr}")
        if not 0 < self.beta_cycle_ratio <= 1:
            raise UserError(f"--beta-cycle-ratio must be in (0, 1], got {self.beta_cycle_ratio}")
        if self.beta_schedule == "capacity" and self.loss != "elbo":
            raise UserError(
                "--beta-schedule capacity needs --loss elbo: its target C is a KL in nats per image"
            )
        if not 0 <= self.val_fraction < 1:
            raise UserError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.patience and not self.val_fraction:
            raise UserError("--patience needs a validation set: give --val-fraction > 0, or --patience 0")
        return self

    @property
    def effective_beta(self) -> float:
        """beta in standard ELBO units (nats): for the seed form, 2 * 784 * beta / latent."""
        return effective_beta(self.loss, self.beta, self.latent)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """The config a dict (config.json, a checkpoint's config) describes: every field, no others, each
        of its type; the ranges are checked by validate()."""
        if not isinstance(d, dict):
            raise UserError(f"the config is a {type(d).__name__}, expected a JSON object of the fields")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise UserError(f"unknown config keys {unknown}; known: {sorted(known)}")
        missing = [k for k in known if k not in d]
        if missing:
            raise UserError(
                f"the config lacks {', '.join(missing)}: it should give every field of TrainConfig"
            )
        for f in fields(cls):
            check_type(f.name, d[f.name], f.type)
        return cls(**d)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def flag(name: str) -> str:
    return name.replace("_", "-")


TYPE_WORDS = {
    "int": "a whole number",
    "float": "a number",
    "str": "a string",
    "str | None": "a string or null",
}


def check_type(name: str, value: Any, annotation: Any) -> None:
    """Raise UserError when `value` is not of field `name`'s type (the annotation as written: int, float,
    str, str | None); a bool is not a number, and an int is a float."""
    kind = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    ok = {
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "str | None": lambda v: v is None or isinstance(v, str),
    }.get(kind)
    if ok is not None and not ok(value):
        raise UserError(
            f"--{flag(name)} must be {TYPE_WORDS[kind]}, got {value!r} (a {type(value).__name__})"
        )


# The seed study's protocol: Keras conv model, 48,000 / 12,000 split, batch 32, 15 epochs,
# Adam 1e-3 in Keras's form, early stopping with patience 5, its loss form with beta_seed = 0.0005.
SEED_PRESET: dict[str, Any] = dict(
    arch="conv", latent=15, loss="seed", beta=0.0005, init="glorot", optimizer="adam-keras",
    batch_size=32, epochs=15, val_fraction=0.2, patience=5,
)  # fmt: skip

# Named starting points; flags given on the command line override them.
PRESETS: dict[str, dict[str, Any]] = {
    "seed": SEED_PRESET,
    # The same with LeakyReLU in the bottleneck, so its units cannot die (see the README).
    "seed-leaky": SEED_PRESET | dict(bottleneck="leaky_relu"),
    # PyTorch's example VAE setting: the quality benchmark.
    "pytorch-example": dict(
        arch="mlp", latent=20, beta=1.0, batch_size=128, lr=1e-3, epochs=10, val_fraction=0.0
    ),
}
