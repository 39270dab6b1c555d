"""β schedules: the KL weight (and the capacity target) as pure functions of the training step.

With t the global step (0 at the first step) and E = steps per epoch:

- "constant":  β(t) = β.
- "linear":    KL annealing (Bowman et al. 2016): β(t) = β · min(1, t / W), W = warm-up epochs · E.
               β starts at 0, so early steps train a plain autoencoder and the KL is brought in slowly.
- "cyclical":  Fu et al. 2019: training is cut into M cycles of L = T / M steps (T = epochs · E);
               inside a cycle τ = (t mod L) / L in [0, 1) and β(t) = β · min(1, τ / R), R = 0.5 by
               default: β rises linearly over the first half of each cycle, then stays at β.
- "capacity":  Burgess et al. 2018: loss = recon + γ · |KL − C(t)|, C(t) = C_max · min(1, t / W_C),
               W_C = capacity epochs · E. γ is the run's β; KL and C are in nats.

Every value depends only on (step, steps per epoch, config), never on the training history, so a
resumed run sees exactly the β an uninterrupted run would have seen, and stays bit-identical.

The learning rate moves per epoch, a pure function of the epoch e (0-based) in the same way:

- "constant":  lr(e) = lr.
- "burda":     Burda et al. 2015: stage i lasts 3^i epochs at lr · 10^(-i/7), i = 0, 1, 2, ...; stage i
               starts at epoch (3^i - 1) / 2 (the sum 1 + 3 + ... + 3^(i-1)). Their run is stages 0..7,
               3,280 epochs; --epochs 1093 stops after stage 6, --epochs 364 after stage 5.
               --lr-stages L0 L1 ... gives the stages other lengths (stage i lasts L_i epochs, at the
               same lr · 10^(-i/7)); after the last, its lr stays.
"""

from __future__ import annotations

from typing import Any

SCHEDULES = ("constant", "linear", "cyclical", "capacity")
LR_SCHEDULES = ("constant", "burda")


def ramp(t: float, length: float) -> float:
    """min(1, t / length), the fraction of a linear rise done after t of `length` steps (1 when length <= 0)."""
    return 1.0 if length <= 0 else min(1.0, t / length)


def linear_beta(step: int, beta: float, warmup_steps: float) -> float:
    """β · min(1, step / warmup_steps): 0 at step 0, β from step `warmup_steps` on."""
    return beta * ramp(step, warmup_steps)


def cyclical_beta(step: int, beta: float, total_steps: float, cycles: int, ratio: float = 0.5) -> float:
    """Fu et al. 2019: `cycles` cycles over total_steps; β rises over the first `ratio` of each, then stays."""
    length = total_steps / cycles
    tau = (step % length) / length  # position inside the current cycle, in [0, 1)
    return beta * ramp(tau, ratio)


def capacity(step: int, capacity_max: float, capacity_steps: float) -> float:
    """C(t) = C_max · min(1, step / capacity_steps), in nats."""
    return capacity_max * ramp(step, capacity_steps)


def _epochs_or_run(epochs: float, cfg: Any) -> float:
    """0 means "the whole run" (cfg.epochs)."""
    return epochs if epochs > 0 else cfg.epochs


def beta_at(step: int, steps_per_epoch: int, cfg: Any) -> float:
    """The KL weight of training step `step` (0-based) for a TrainConfig, in the units of cfg.loss.

    For "capacity" this is γ, the weight of |KL − C|.
    """
    if cfg.beta_schedule in ("constant", "capacity"):
        return cfg.beta
    if cfg.beta_schedule == "linear":
        return linear_beta(step, cfg.beta, _epochs_or_run(cfg.beta_warmup_epochs, cfg) * steps_per_epoch)
    if cfg.beta_schedule == "cyclical":
        return cyclical_beta(
            step, cfg.beta, cfg.epochs * steps_per_epoch, cfg.beta_cycles, cfg.beta_cycle_ratio
        )
    raise ValueError(f"unknown beta schedule {cfg.beta_schedule!r}: choose one of {', '.join(SCHEDULES)}")


def capacity_at(step: int, steps_per_epoch: int, cfg: Any) -> float | None:
    """The capacity target C (nats) of training step `step`, or None when the schedule has none."""
    if cfg.beta_schedule != "capacity":
        return None
    return capacity(step, cfg.capacity_max, _epochs_or_run(cfg.capacity_epochs, cfg) * steps_per_epoch)


def final_beta_capacity(cfg: Any) -> tuple[float, float | None]:
    """Where the schedule ends up: (β, C_max or None). The validation loss uses these, so that its
    values are comparable from epoch to epoch while β or C is still moving (a rising β would otherwise
    make the early epochs look best)."""
    return cfg.beta, (cfg.capacity_max if cfg.beta_schedule == "capacity" else None)


def burda_stage(epoch: int) -> int:
    """The stage i of epoch `epoch` (0-based) in Burda et al.'s schedule: the i with
    (3^i - 1) / 2 <= epoch < (3^(i+1) - 1) / 2."""
    i = 0
    while (3 ** (i + 1) - 1) // 2 <= epoch:
        i += 1
    return i


def stage_of(epoch: int, lengths: list[int]) -> int:
    """The stage of epoch `epoch` (0-based) when stage i lasts lengths[i] epochs; past the last stage, the
    last stage's index."""
    end = 0
    for i, length in enumerate(lengths):
        end += length
        if epoch < end:
            return i
    return len(lengths) - 1


def lr_at(epoch: int, cfg: Any) -> float:
    """The learning rate of epoch `epoch` (0-based) for a TrainConfig."""
    if cfg.lr_schedule == "constant":
        return cfg.lr
    if cfg.lr_schedule == "burda":
        i = stage_of(epoch, cfg.lr_stages) if cfg.lr_stages else burda_stage(epoch)
        return cfg.lr * 10.0 ** (-i / 7)
    raise ValueError(f"unknown lr schedule {cfg.lr_schedule!r}: choose one of {', '.join(LR_SCHEDULES)}")
