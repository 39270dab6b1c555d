"""Checks and diagnoses for the VAE exercises: reparam, kl, adam, train_step, iwae."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from _checker import TOL_FD, Diagnosis, Outcome, Worst, close, for_cases, is_ratio, mismatch

from minivae.analysis.likelihood import logsumexp
from minivae.models import VAE
from minivae.nn import Flatten, Linear, Reshape, Sequential, Tanh
from minivae.nn.gradcheck import check_function, numerical_gradient_at, rel_error
from minivae.nn.losses import bce_with_logits, kl_normal, vae_loss
from minivae.nn.optim import SGD, Adam
from minivae.nn.reparam import Reparameterize
from minivae.training.loop import train_step


def unpack(result: Any, n: int, what: str) -> tuple[Any, ...]:
    """result as an n-tuple, or a TypeError saying what the exercise must return."""
    if not isinstance(result, (tuple, list)) or len(result) != n:
        raise TypeError(f"{what} must return a tuple of {n}, got {type(result).__name__}")
    return tuple(result)


def shapes_fit(out: Outcome, pairs: dict[str, tuple[Any, Any]]) -> bool:
    """True if every student array has its reference's shape (a gradient check needs that)."""
    bad = {k: mismatch(a, b)[1] for k, (a, b) in pairs.items() if np.shape(a) != np.shape(b)}
    for k, why in bad.items():
        out.record(f"d{k} vs finite differences", math.inf, TOL_FD, why)
    return not bad


# ------------------------------------------------------------------------------------------ reparam


def reparam_probe(
    mod: Any, mu: np.ndarray, logvar: np.ndarray, eps: np.ndarray, dz: np.ndarray
) -> dict[str, Any]:
    layer, ref = mod.Reparameterize(), Reparameterize()
    p = {"mu": mu, "logvar": logvar, "eps": eps, "dz": dz, "z_ref": ref.forward(mu, logvar, eps)}
    p["dmu_ref"], p["dlogvar_ref"] = ref.backward(dz)
    p["z"] = layer.forward(mu.copy(), logvar.copy(), eps.copy())
    p["dmu"], p["dlogvar"] = unpack(layer.backward(dz.copy()), 2, "Reparameterize.backward")
    return p


def check_reparam(mod: Any, out: Outcome) -> None:
    rng = np.random.default_rng(6)
    mu, logvar, eps, dz = (s * rng.standard_normal((4, 3)) for s in (1.0, 1.5, 1.0, 1.0))
    p = out.probe["p"] = reparam_probe(mod, mu, logvar, eps, dz)
    for k in ("z", "dmu", "dlogvar"):
        out.measure(f"{k} vs minivae", p[k], p[f"{k}_ref"])
    if shapes_fit(out, {"mu": (p["dmu"], mu), "logvar": (p["dlogvar"], logvar)}):

        def f(mu: np.ndarray, logvar: np.ndarray) -> float:
            return float((np.asarray(mod.Reparameterize().forward(mu, logvar, eps)) * dz).sum())

        errors = check_function(
            f, {"mu": mu.copy(), "logvar": logvar.copy()}, {"mu": p["dmu"], "logvar": p["dlogvar"]}
        )
        for k, e in errors.items():
            out.record(f"d{k} vs finite differences", e, TOL_FD)
    worst = Worst(out)

    def run(case: dict[str, int]) -> None:
        r = np.random.default_rng(list(case.values()))
        q = reparam_probe(mod, *(r.standard_normal((case["N"], case["latent"])) for _ in range(4)))
        for k in ("z", "dmu", "dlogvar"):
            worst.add(f"{k} vs minivae, random shapes", q[k], q[f"{k}_ref"], case)

    worst.n = for_cases(lambda i: {"N": i(1, 5), "latent": i(1, 6)}, run)
    worst.record()


def _std(p: dict[str, Any]) -> np.ndarray:
    return np.exp(0.5 * p["p"]["logvar"])


REPARAM_DIAGNOSES = (
    Diagnosis(
        "variance_for_std",
        "z - mu = exp(logvar) * eps: exp(logvar) is the variance; the standard deviation is exp(logvar / 2)",
        lambda p: close(np.asarray(p["p"]["z"]) - p["p"]["mu"], np.exp(p["p"]["logvar"]) * p["p"]["eps"]),
    ),
    Diagnosis(
        "logvar_as_std",
        "z - mu = logvar * eps: logvar is a log-variance; the standard deviation is exp(logvar / 2)",
        lambda p: close(np.asarray(p["p"]["z"]) - p["p"]["mu"], p["p"]["logvar"] * p["p"]["eps"]),
    ),
    Diagnosis(
        "dlogvar_missing_half",
        "dlogvar is exactly twice minivae's: d exp(logvar / 2) / d logvar = exp(logvar / 2) / 2, the 1/2 is missing",
        lambda p: is_ratio(p["p"]["dlogvar"], p["p"]["dlogvar_ref"], 2.0),
    ),
    Diagnosis(
        "dlogvar_missing_std",
        "dlogvar has no std in it: dz/dlogvar = 0.5 exp(logvar / 2) eps = 0.5 (z - mu), not 0.5 eps",
        lambda p: (
            close(p["p"]["dlogvar"], 0.5 * p["p"]["dz"] * p["p"]["eps"])
            or close(p["p"]["dlogvar"], p["p"]["dz"] * p["p"]["eps"])
        ),
    ),
    Diagnosis(
        "dmu_scaled",
        "dmu = dz * std: z = mu + std * eps, so dz/dmu = 1 and dmu = dz",
        lambda p: close(p["p"]["dmu"], p["p"]["dz"] * _std(p)),
    ),
)


# ----------------------------------------------------------------------------------------------- kl


def kl_probe(mod: Any, mu: np.ndarray, logvar: np.ndarray) -> dict[str, Any]:
    p = {"mu": mu, "logvar": logvar, "N": mu.shape[0]}
    p["value_ref"], p["dmu_ref"], p["dlogvar_ref"] = kl_normal(mu, logvar, 1.0, "batchmean")
    p["value"], p["dmu"], p["dlogvar"] = unpack(mod.kl_normal(mu.copy(), logvar.copy()), 3, "kl_normal")
    return p


def check_kl(mod: Any, out: Outcome) -> None:
    rng = np.random.default_rng(7)
    mu, logvar = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    p = out.probe["p"] = kl_probe(mod, mu, logvar)
    for k in ("value", "dmu", "dlogvar"):
        out.measure(f"{'KL' if k == 'value' else k} vs minivae", p[k], p[f"{k}_ref"])
    if shapes_fit(out, {"mu": (p["dmu"], mu), "logvar": (p["dlogvar"], logvar)}):
        errors = check_function(
            mod.kl_normal,
            {"mu": mu.copy(), "logvar": logvar.copy()},
            {"mu": p["dmu"], "logvar": p["dlogvar"]},
        )
        for k, e in errors.items():
            out.record(f"d{k} vs finite differences", e, TOL_FD)
    worst = Worst(out)

    def run(case: dict[str, int]) -> None:
        r = np.random.default_rng(list(case.values()))
        q = kl_probe(
            mod,
            r.standard_normal((case["N"], case["latent"])),
            2 * r.standard_normal((case["N"], case["latent"])),
        )
        for k in ("value", "dmu", "dlogvar"):
            worst.add(f"{'KL' if k == 'value' else k} vs minivae, random shapes", q[k], q[f"{k}_ref"], case)

    worst.n = for_cases(lambda i: {"N": i(1, 5), "latent": i(1, 6)}, run)
    worst.record()


def _factor2(p: dict[str, Any], k: str) -> bool:
    return is_ratio(p["p"][k], p["p"][f"{k}_ref"], 2.0) or is_ratio(p["p"][k], p["p"][f"{k}_ref"], 0.5)


KL_DIAGNOSES = (
    Diagnosis(
        "dmu_factor_2",
        "dmu is off by exactly a factor of 2: d/dmu of 0.5 mu^2 is mu",
        lambda p: _factor2(p, "dmu"),
    ),
    Diagnosis(
        "dlogvar_factor_2",
        "dlogvar is off by exactly a factor of 2: d/dlogvar of 0.5 (exp(logvar) - logvar) is 0.5 (exp(logvar) - 1)",
        lambda p: _factor2(p, "dlogvar"),
    ),
    Diagnosis(
        "sign_flipped",
        "a sign is flipped (the KL, dmu or dlogvar is exactly minus minivae's): KL = 0.5 sum (exp(logvar) + "
        "mu^2 - 1 - logvar) >= 0",
        lambda p: any(is_ratio(p["p"][k], p["p"][f"{k}_ref"], -1.0) for k in ("value", "dmu", "dlogvar")),
    ),
    Diagnosis(
        "value_factor_2",
        "the KL is off by exactly a factor of 2: the 1/2 in 0.5 (exp(logvar) + mu^2 - 1 - logvar)",
        lambda p: _factor2(p, "value"),
    ),
    Diagnosis(
        "summed_over_batch",
        "N times minivae's: batchmean sums over the latent units and averages over the batch",
        lambda p: any(
            is_ratio(p["p"][k], p["p"][f"{k}_ref"], p["p"]["N"]) for k in ("value", "dmu", "dlogvar")
        ),
    ),
)


# --------------------------------------------------------------------------------------------- adam

ADAM_STEPS = 30


def adam_gradients(seed: int, shapes: list[tuple[int, ...]]) -> list[list[np.ndarray]]:
    """ADAM_STEPS noisy gradients per parameter, each entry with its own scale in [1e-6, 1]: the tiny
    ones make eps matter, so eps inside or outside the square root shows."""
    rng = np.random.default_rng(seed)
    scales = [np.sign(rng.standard_normal(s)) * 10 ** rng.uniform(-6, 0, s) for s in shapes]
    return [[sc * (1 + 0.5 * rng.standard_normal(sc.shape)) for sc in scales] for _ in range(ADAM_STEPS)]


def adam_updates(cls: type, grads: list[list[np.ndarray]], **hyper: Any) -> list[np.ndarray]:
    """Each step's update p_t - p_(t-1), every parameter's laid end to end, for the optimizer class cls."""
    params = [np.random.default_rng(i).standard_normal(g.shape) for i, g in enumerate(grads[0])]
    slots = [np.zeros_like(p) for p in params]
    opt = cls([(f"p{i}", p, g) for i, (p, g) in enumerate(zip(params, slots))], **hyper)
    updates = []
    for step in grads:
        before = np.concatenate([p.ravel() for p in params])
        for slot, g in zip(slots, step):
            slot[...] = g
        opt.step()
        updates.append(np.concatenate([p.ravel() for p in params]) - before)
    return updates


def adam_variant(
    grads, lr, betas, eps, correct=(True, True), eps_inside=False, keep_state=True
) -> list[np.ndarray]:
    """The updates of Adam with one planted bug (the signatures the diagnoses look for)."""
    (b1, b2), g_all = betas, [np.concatenate([g.ravel() for g in step]) for step in grads]
    m, v, updates = np.zeros_like(g_all[0]), np.zeros_like(g_all[0]), []
    for t, g in enumerate(g_all, 1):
        if not keep_state:
            m, v = np.zeros_like(g), np.zeros_like(g)
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1**t) if correct[0] else m
        v_hat = v / (1 - b2**t) if correct[1] else v
        updates.append(-lr * m_hat / (np.sqrt(v_hat + eps) if eps_inside else np.sqrt(v_hat) + eps))
    return updates


def check_adam(mod: Any, out: Outcome) -> None:
    hyper = {"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8}
    grads = adam_gradients(8, [(3, 4), (5,)])
    p = out.probe["p"] = {
        "updates": adam_updates(mod.Adam, grads, **hyper),
        "ref": adam_updates(Adam, grads, **hyper),
    }
    p["variants"] = {
        "none": adam_variant(grads, **hyper, correct=(False, False)),
        "m only": adam_variant(grads, **hyper, correct=(True, False)),
        "v only": adam_variant(grads, **hyper, correct=(False, True)),
        "eps inside": adam_variant(grads, **hyper, eps_inside=True),
        "no state": adam_variant(grads, **hyper, keep_state=False),
    }
    out.measure("step 1: the update vs minivae", p["updates"][0], p["ref"][0])
    errors = [mismatch(a, b)[0] for a, b in zip(p["updates"], p["ref"])]
    worst_t = int(np.argmax(errors))
    out.record(
        f"steps 1-{ADAM_STEPS}: each update vs minivae", errors[worst_t], 1e-8, f"worst at step {worst_t + 1}"
    )
    worst = Worst(out)
    b1s, b2s, lrs = (0.5, 0.8, 0.9), (0.9, 0.99, 0.999), (1e-3, 1e-2, 0.1)

    def run(case: dict[str, int]) -> None:
        h = {
            "lr": lrs[case["lr"]],
            "betas": (b1s[case["b1"]], b2s[case["b2"]]),
            "eps": 10.0 ** -case["-log10 eps"],
        }
        g = adam_gradients(case["seed"], [(2, 3)])
        mine, ref = adam_updates(mod.Adam, g, **h), adam_updates(Adam, g, **h)
        worst.add("every update vs minivae, other lr, betas, eps", np.stack(mine), np.stack(ref), case)

    worst.n = for_cases(
        lambda i: {"lr": i(0, 2), "b1": i(0, 2), "b2": i(0, 2), "-log10 eps": i(6, 10), "seed": i(0, 9)}, run
    )
    worst.record()


def _matches(p: dict[str, Any], variant: str) -> bool:
    return close(np.stack(p["p"]["updates"]), np.stack(p["p"]["variants"][variant]))


ADAM_DIAGNOSES = (
    Diagnosis(
        "no_bias_correction",
        "no bias correction: at step 1 each update is (1 - b1) / sqrt(1 - b2) = 3.2 times too large, and it is "
        "right only in the limit b^t -> 0; divide m by 1 - b1^t and v by 1 - b2^t",
        lambda p: _matches(p, "none"),
    ),
    Diagnosis(
        "half_bias_correction",
        "only one of the two moments is bias-corrected: m_hat = m / (1 - b1^t) and v_hat = v / (1 - b2^t)",
        lambda p: _matches(p, "m only") or _matches(p, "v only"),
    ),
    Diagnosis(
        "eps_inside_sqrt",
        "eps is inside the square root, sqrt(v_hat + eps): it belongs outside, sqrt(v_hat) + eps (it shows "
        "where gradients are tiny)",
        lambda p: _matches(p, "eps inside"),
    ),
    Diagnosis(
        "state_not_kept",
        "m and v start from zero every step: keep them in state and update them in place (m[...] = ...; "
        "`m = ...` only rebinds the name)",
        lambda p: _matches(p, "no state"),
    ),
    Diagnosis(
        "uphill",
        "every update is exactly minus minivae's: the step goes uphill; p -= lr * m_hat / (sqrt(v_hat) + eps)",
        lambda p: is_ratio(np.stack(p["p"]["updates"]), np.stack(p["p"]["ref"]), -1.0),
    ),
    Diagnosis(
        "not_in_place",
        "the parameters never move: update them in place (p -= ... or p[...] = ...), `p = p - ...` only "
        "rebinds the name",
        lambda p: not np.any(np.stack(p["p"]["updates"])),
    ),
)


# --------------------------------------------------------------------------------------- train_step

LR = 0.1  # plain SGD: the step moves each parameter by -LR * its gradient, so the update shows the gradient


def tiny_vae(seed: int = 0) -> VAE:
    """A float64 VAE on 4x4 images, 16 -> 6 -> (3, 3) -> 6 -> 16, tanh (smooth: no kinks for the
    finite differences)."""
    kw = {"rng": np.random.default_rng(seed), "dtype": "float64"}
    encoder = Sequential(Flatten(), Linear(16, 6, **kw), Tanh())
    decoder = Sequential(Linear(3, 6, **kw), Tanh(), Linear(6, 16, **kw), Reshape(1, 4, 4))
    return VAE(encoder, Linear(6, 3, **kw), Linear(6, 3, **kw), decoder, input_shape=(1, 4, 4))


def flat_params(model: VAE) -> np.ndarray:
    return np.concatenate([p.ravel() for _, p, _ in model.named_parameters()])


def variant_grads(model: VAE, x, eps, beta, kl_weight=None, z_path=True) -> np.ndarray:
    """Every parameter's gradient, laid end to end, from minivae's parts: the KL's gradients weighted by
    kl_weight (None: beta) and the reconstruction's path back through z kept or not (planted bugs)."""
    m = tiny_vae()
    m.load_state_dict(model.state_dict())
    mu, logvar = m.encode(x)
    logits = m.decode(m.reparam.forward(mu, logvar, eps))
    _, dlogits = bce_with_logits(logits, x, "batchmean")
    _, dmu_kl, dlogvar_kl = kl_normal(mu, logvar, 1.0, "batchmean")
    w = beta if kl_weight is None else kl_weight
    dmu_z, dlogvar_z = m.reparam.backward(m.decoder.backward(dlogits))
    if not z_path:
        dmu_z, dlogvar_z = 0.0, 0.0
    dh = m.fc_mu.backward(w * dmu_kl + dmu_z) + m.fc_logvar.backward(w * dlogvar_kl + dlogvar_z)
    m.encoder.backward(dh)
    return np.concatenate([g.ravel() for _, _, g in m.named_parameters()])


def fd_grads(model: VAE, x, eps, beta, per_param: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(flat indices, central differences of the loss there): per_param entries of every parameter."""
    m = tiny_vae()
    m.load_state_dict(model.state_dict())
    rng, idx, num, start = np.random.default_rng(0), [], [], 0

    def loss() -> float:
        logits, mu, logvar = m.forward(x, eps=eps)
        return float(vae_loss(logits, x, mu, logvar, beta, "elbo").total)

    for _, p, _ in m.named_parameters():
        k = rng.choice(p.size, min(per_param, p.size), replace=False)
        num.append(numerical_gradient_at(loss, p, k))
        idx.append(start + k)
        start += p.size
    return np.concatenate(idx), np.concatenate(num)


def reference_step(model: VAE, x: np.ndarray, eps: np.ndarray, beta: float) -> tuple[np.ndarray, Any]:
    """minivae's train_step on a copy of model: (the gradient its SGD update implies, the loss)."""
    ref = tiny_vae()
    ref.load_state_dict(model.state_dict())
    before = flat_params(ref)
    loss, _ = train_step(
        ref, SGD(ref.named_parameters(), lr=LR), x, eps, beta, "elbo", check_finite=False, check_values=False
    )
    return (before - flat_params(ref)) / LR, loss


def run_steps(
    mod_step: Any, model: VAE, batches: list[tuple[np.ndarray, np.ndarray]], beta: float
) -> list[dict[str, Any]]:
    """Two steps; for each, the loss returned, the gradient the update implies, and minivae's (from the
    same parameters), the finite differences and the planted bugs' gradients."""
    opt, steps = SGD(model.named_parameters(), lr=LR), []
    for x, eps in batches:
        before = flat_params(model)
        s = {"fd": fd_grads(model, x, eps, beta)}
        s["grads_ref"], s["loss_ref"] = reference_step(model, x, eps, beta)
        s["no_beta"] = variant_grads(model, x, eps, beta, kl_weight=1.0)
        s["no_kl"] = variant_grads(model, x, eps, beta, kl_weight=0.0)
        s["no_z_path"] = variant_grads(model, x, eps, beta, z_path=False)
        s["loss"] = mod_step(model, opt, x.copy(), eps.copy(), beta)
        s["grads"] = (before - flat_params(model)) / LR
        steps.append(s)
    return steps


def check_train_step(mod: Any, out: Outcome) -> None:
    rng, beta = np.random.default_rng(9), 0.3
    batches = [(rng.random((5, 1, 4, 4)), rng.standard_normal((5, 3))) for _ in range(2)]
    steps = out.probe["steps"] = run_steps(mod.train_step, tiny_vae(), batches, beta)
    for t, s in enumerate(steps, 1):
        out.measure(
            f"step {t}: the loss returned vs minivae", as_float(s["loss"]), float(s["loss_ref"].total)
        )
        out.measure(f"step {t}: (p - p_new) / lr vs minivae's gradient", s["grads"], s["grads_ref"])
        idx, num = s["fd"]
        out.record(
            f"step {t}: (p - p_new) / lr vs finite differences", rel_error(s["grads"][idx], num), TOL_FD
        )


def as_float(v: Any) -> Any:
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def _step_grads_match(p: dict[str, Any], variant: str) -> bool:
    return close(p["steps"][0]["grads"], p["steps"][0][variant])


TRAIN_STEP_DIAGNOSES = (
    Diagnosis(
        "kl_grad_without_beta",
        "the KL's gradients enter without beta: the loss is recon + beta KL, so mu and logvar get beta * dKL",
        lambda p: _step_grads_match(p, "no_beta"),
    ),
    Diagnosis(
        "kl_grad_missing",
        "the KL's gradients are missing: fc_mu and fc_logvar take the KL's dmu, dlogvar plus what comes back through z",
        lambda p: _step_grads_match(p, "no_kl"),
    ),
    Diagnosis(
        "z_path_missing",
        "nothing comes back through z: pass the decoder's dz through reparam.backward and add its (dmu, dlogvar)",
        lambda p: _step_grads_match(p, "no_z_path"),
    ),
    Diagnosis(
        "no_step",
        "the parameters did not move: call optimizer.step() after the backward",
        lambda p: not np.any(p["steps"][0]["grads"]) and not np.any(p["steps"][1]["grads"]),
    ),
    Diagnosis(
        "step_before_backward",
        "each step applies the previous step's gradients: optimizer.step() runs before the backward has "
        "written this step's (the order is forward, loss, backward, step)",
        lambda p: not np.any(p["steps"][0]["grads"]) and np.any(p["steps"][1]["grads"]),
    ),
    Diagnosis(
        "loss_without_beta",
        "the loss returned is recon + KL: weigh the KL by beta (recon + beta * KL)",
        lambda p: close(
            as_float(p["steps"][0]["loss"]),
            float(p["steps"][0]["loss_ref"].recon + p["steps"][0]["loss_ref"].kl),
        ),
    ),
)


# --------------------------------------------------------------------------------------------- iwae


def iwae_reference(log_w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log (1/k) sum_i exp(log w_i) for each row, and its gradient, the normalised weights (a softmax)."""
    lse = logsumexp(log_w, axis=1)
    return lse - math.log(log_w.shape[1]), np.exp(log_w - lse[:, None])


def iwae_probe(mod: Any, log_w: np.ndarray) -> dict[str, Any]:
    p = {"log_w": log_w, "k": log_w.shape[1]}
    p["value_ref"], p["weights_ref"] = iwae_reference(log_w)
    p["value"], p["weights"] = unpack(mod.log_mean_exp(log_w.copy()), 2, "log_mean_exp")
    return p


def check_iwae(mod: Any, out: Outcome) -> None:
    rng = np.random.default_rng(10)
    p = out.probe["p"] = iwae_probe(
        mod, -200 + 20 * rng.standard_normal((3, 7))
    )  # log w of real images: -100s
    out.measure("L_k vs reference", p["value"], p["value_ref"])
    out.measure("weights (dL_k / dlog w) vs reference", p["weights"], p["weights_ref"])
    q = out.probe["extreme"] = iwae_probe(
        mod, np.array([[-1000.0], [800.0]]) + 3 * rng.standard_normal((2, 5))
    )
    out.measure("L_k at log w ~ -1000 and +800", q["value"], q["value_ref"])
    out.measure("weights at log w ~ -1000 and +800", q["weights"], q["weights_ref"])
    log_w = 3 * rng.standard_normal((3, 7))
    weights = unpack(mod.log_mean_exp(log_w.copy()), 2, "log_mean_exp")[1]
    if shapes_fit(out, {"log_w": (weights, log_w)}):
        errors = check_function(
            lambda log_w: float(np.sum(mod.log_mean_exp(log_w)[0])), {"log_w": log_w}, {"log_w": weights}
        )
        out.record("weights vs finite differences of sum L_k", errors["log_w"], TOL_FD)
    worst = Worst(out)

    def run(case: dict[str, int]) -> None:
        r = np.random.default_rng(list(case.values()))
        q = iwae_probe(mod, -300 + 50 * r.standard_normal((case["N"], case["k"])))
        worst.add("L_k vs reference, random N and k", q["value"], q["value_ref"], case)
        worst.add("weights vs reference, random N and k", q["weights"], q["weights_ref"], case)

    worst.n = for_cases(lambda i: {"N": i(1, 4), "k": i(1, 50)}, run)
    worst.record()


def _normalised(w: Any) -> np.ndarray:
    w = np.asarray(w, dtype=float)
    return w / w.sum(axis=1, keepdims=True)


IWAE_DIAGNOSES = (
    Diagnosis(
        "overflow",
        "not finite for log w near -1000 or +800: exp(log w) underflows to 0 or overflows; subtract the "
        "row's maximum m first, L = m + log mean exp(log w - m)",
        lambda p: (
            not (
                np.isfinite(np.asarray(p["extreme"]["value"], float)).all()
                and np.isfinite(np.asarray(p["extreme"]["weights"], float)).all()
            )
        ),
    ),
    Diagnosis(
        "missing_log_k",
        "L_k is log k too large: that is log sum w; the bound is log of the mean, minus log k",
        lambda p: close(p["p"]["value"], p["p"]["value_ref"] + math.log(p["p"]["k"])),
    ),
    Diagnosis(
        "mean_of_log_w",
        "L_k is the mean of log w (the k-sample average ELBO estimate); the IWAE bound is the log of the mean of w",
        lambda p: close(p["p"]["value"], p["p"]["log_w"].mean(axis=1)),
    ),
    Diagnosis(
        "weights_unnormalised",
        "the weights point the right way but do not sum to 1 over the k samples: dL_k/dlog w_i = w_i / sum_j w_j",
        lambda p: (
            not close(p["p"]["weights"], p["p"]["weights_ref"])
            and close(_normalised(p["p"]["weights"]), p["p"]["weights_ref"])
        ),
    ),
)
