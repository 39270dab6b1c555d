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
from minivae.models import ACTIVATIONS, ARCHS, BOTTLENECKS, DEFAULT_INIT
from minivae.nn import INITS
from minivae.nn.iwae import OBJECTIVES
from minivae.nn.losses import LOSS_FORMS, effective_beta
from minivae.training.schedules import LR_SCHEDULES, SCHEDULES

OPTIMIZERS = ("adam", "adam-keras", "sgd")
ON_NONFINITE = ("stop", "skip")
BINARIZE = ("none", "dynamic")


@dataclass
class TrainConfig:
    """Everything a run depends on. Defaults give the main job: the MLP VAE, a couple of minutes on a CPU."""

    arch: str = field(default="mlp", metadata={"help": f"model: {' | '.join(ARCHS)}"})
    latent: int = field(default=20, metadata={"help": "latent size"})
    hidden: list[int] = field(
        default_factory=lambda: [400],
        metadata={"help": "hidden layer sizes of the mlp model, encoder order (the decoder mirrors them): "
                  "400, or 200 200 for two layers (default: 400)"},
    )  # fmt: skip
    activation: str = field(
        default="relu", metadata={"help": f"the mlp model's hidden activation: {' | '.join(ACTIVATIONS)}"}
    )
    objective: str = field(
        default="elbo",
        metadata={
            "help": "elbo: the (beta-)VAE loss of --loss; iwae: the importance-weighted bound of Burda et al. "
            "2015 with --k samples per image (beta 1; --k 1 is the ELBO with a one-sample KL)"
        },
    )
    k: int = field(default=1, metadata={"help": "samples of z per image for --objective iwae"})
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
    lr_schedule: str = field(
        default="constant",
        metadata={
            "help": "constant: --lr throughout; burda: --lr * 10^(-i/7) for 3^i epochs, i = 0, 1, ... "
            "(Burda et al. 2015; their 3,280 epochs are i = 0..7, and --epochs 1093 runs i = 0..6)"
        },
    )
    lr_stages: list[int] = field(
        default_factory=list,
        metadata={
            "help": "with --lr-schedule burda: the epochs of stage i = 0, 1, ... in place of 3^i, each at "
            "--lr * 10^(-i/7), the last stage's lr kept after it; 1 1 1 3 9 27 81 243 runs the paper's "
            "eight rates in 366 epochs (default: none, the paper's 3^i)"
        },
    )
    adam_eps: float | None = field(
        default=None,
        metadata={"help": "Adam's eps (default: the optimizer's own, 1e-8 for adam, 1e-7 for adam-keras)"},
    )
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
    threads: int | None = field(
        default=None,
        metadata={
            "help": "BLAS threads per step (default: the policy in minivae.threads: one per core no other "
            "program is busy on, picked when the run starts; OPENBLAS_NUM_THREADS, if set, is used instead). "
            "Same-seed runs are bit-identical at the same thread count"
        },
    )

    def validate(self) -> TrainConfig:
        """Raise UserError naming the first bad value and what it should be (its type, then its range)."""
        for f in fields(self):
            check_type(f.name, getattr(self, f.name), f.type)
        choices = {
            "arch": ARCHS, "loss": LOSS_FORMS, "bottleneck": BOTTLENECKS, "optimizer": OPTIMIZERS,
            "backend": BACKENDS, "dtype": DTYPES, "dataset": DATASETS, "on_nonfinite": ON_NONFINITE,
            "beta_schedule": SCHEDULES, "binarize": BINARIZE, "activation": ACTIVATIONS,
            "objective": OBJECTIVES, "lr_schedule": LR_SCHEDULES,
        }  # fmt: skip
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise UserError(
                    f"--{flag(name)} {getattr(self, name)!r} is not known: choose one of {', '.join(allowed)}"
                )
        if self.init is not None and self.init not in INITS:
            raise UserError(f"--init {self.init!r} is not known: choose one of {', '.join(INITS)}")
        for name in ("latent", "epochs", "batch_size", "beta_cycles", "k"):
            if getattr(self, name) < 1:
                raise UserError(f"--{flag(name)} must be a whole number >= 1, got {getattr(self, name)}")
        if not self.hidden or min(self.hidden) < 1:
            raise UserError(f"--hidden takes one or more whole numbers >= 1, got {flag_value(self.hidden)}")
        self.validate_objective()
        if self.lr_stages and (self.lr_schedule != "burda" or min(self.lr_stages) < 1):
            raise UserError(
                "--lr-stages takes the epochs of each stage, whole numbers >= 1, with --lr-schedule burda; "
                f"got {flag_value(self.lr_stages)} with --lr-schedule {self.lr_schedule}"
            )
        if self.threads is not None and self.threads < 1:
            raise UserError(
                f"--threads must be a whole number >= 1, got {self.threads}; omit it for the policy"
            )
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

    def __post_init__(self) -> None:
        # one size given as a number (a config written before hidden was a list, or hidden=400 in code)
        if isinstance(self.hidden, int) and not isinstance(self.hidden, bool):
            self.hidden = [self.hidden]
        elif isinstance(self.hidden, (list, tuple)):
            self.hidden = list(self.hidden)
        if isinstance(self.lr_stages, tuple):
            self.lr_stages = list(self.lr_stages)

    def validate_objective(self) -> None:
        """--objective iwae's constraints (the bound has beta 1 and no schedule on it); --k and
        --adam-eps only where they apply."""
        if self.objective == "elbo" and self.k != 1:
            raise UserError(f"--k {self.k} needs --objective iwae (the elbo objective draws one z per image)")
        bound_setting = (self.loss, self.beta, self.beta_schedule)
        if self.objective == "iwae" and bound_setting != ("elbo", 1.0, "constant"):
            raise UserError(
                "--objective iwae is the importance-weighted bound on log p(x): it needs --loss elbo, --beta 1 "
                f"and --beta-schedule constant (got {self.loss}, {self.beta:g}, {self.beta_schedule})"
            )
        if self.adam_eps is not None:
            if not (math.isfinite(self.adam_eps) and self.adam_eps > 0):
                raise UserError(f"--adam-eps must be a finite number > 0, got {self.adam_eps}")
            if self.optimizer == "sgd":
                raise UserError("--adam-eps is Adam's: give --optimizer adam or adam-keras, or leave it out")

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
        d = {**{k: v for k, v in ADDED_FIELDS.items() if k not in d}, **d}
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


# Fields a config written by an older minivae may lack, with the value that reproduces such a run.
ADDED_FIELDS: dict[str, Any] = {
    "threads": None, "activation": "relu", "objective": "elbo", "k": 1, "lr_schedule": "constant",
    "adam_eps": None, "lr_stages": [],
}  # fmt: skip


def flag(name: str) -> str:
    return name.replace("_", "-")


def flag_value(value: Any) -> str:
    """A field's value as it is typed on the command line: a list as its items separated by spaces."""
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


TYPE_WORDS = {
    "int": "a whole number",
    "float": "a number",
    "str": "a string",
    "str | None": "a string or null",
    "int | None": "a whole number or null",
    "float | None": "a number or null",
    "list[int]": "a whole number or a list of whole numbers",
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
        "int | None": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
        "float | None": lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)),
        "list[int]": lambda v: all(
            isinstance(h, int) and not isinstance(h, bool) for h in (v if isinstance(v, list) else [v])
        ),
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

# Burda, Grosse & Salakhutdinov 2015, Table 1: dynamically binarised MNIST, two tanh layers of 200,
# latent 50, batch 20, Adam eps 1e-4, lr 1e-3 * 10^(-i/7) for 3^i epochs, i = 0..7; all 60,000 images.
BURDA_PRESET: dict[str, Any] = dict(
    arch="mlp", hidden=[200, 200], activation="tanh", latent=50, init="glorot", binarize="dynamic",
    batch_size=20, optimizer="adam", adam_eps=1e-4, lr=1e-3, lr_schedule="burda", epochs=3280,
    val_fraction=0.0,
)  # fmt: skip

# Named starting points; flags given on the command line override them.
PRESETS: dict[str, dict[str, Any]] = {
    "seed": SEED_PRESET,
    # The same with LeakyReLU in the bottleneck, so its units cannot die (see the README).
    "seed-leaky": SEED_PRESET | dict(bottleneck="leaky_relu"),
    "burda": BURDA_PRESET,
    # PyTorch's example VAE setting: the quality benchmark.
    "pytorch-example": dict(
        arch="mlp", latent=20, beta=1.0, batch_size=128, lr=1e-3, epochs=10, val_fraction=0.0
    ),
}
