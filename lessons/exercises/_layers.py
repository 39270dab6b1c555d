"""Checks and diagnoses for the layer exercises: linear, relu, sigmoid, bce, im2col, col2im, conv2d.

Each check runs the student's code three ways: on a fixed probe (kept for the diagnoses), against
finite differences in float64 (minivae.nn.gradcheck), and against minivae's own implementation on
shapes drawn by hypothesis.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from _checker import TOL_FD, Diagnosis, Outcome, Worst, close, for_cases, is_ratio, mismatch

from minivae.nn import Conv2d, Linear, ReLU, Sigmoid, col2im, im2col, sigmoid
from minivae.nn.conv import conv_transpose_stride1
from minivae.nn.gradcheck import check_function, check_layer
from minivae.nn.losses import bce_with_logits

# ------------------------------------------------------------------------------------ shared helpers


def twin(student_cls: type, ref_cls: type, *args: Any, seed: int = 0, **kw: Any) -> tuple[Any, Any]:
    """The student's layer and minivae's, float64, holding the same parameters."""
    if not kw and not args:  # a layer without parameters
        return student_cls(), ref_cls()
    ref = ref_cls(*args, rng=np.random.default_rng(seed), dtype="float64", **kw)
    mine = student_cls(*args, rng=np.random.default_rng(seed), dtype="float64", **kw)
    mine.load_state_dict(ref.state_dict())
    return mine, ref


def backward_probe(layer: Any, ref: Any, x: np.ndarray, dy: np.ndarray) -> dict[str, Any]:
    """Forward and backward through both layers; every array the diagnoses may want, as copies."""
    p = {"x": x, "dy": dy, "params": {k: v.copy() for k, v in ref.params.items()}, "N": x.shape[0]}
    p["y_ref"], p["y"] = ref.forward(x.copy()), layer.forward(x.copy())
    p["dx_ref"] = ref.backward(dy.copy())
    p["grads_ref"] = {k: g.copy() for k, g in ref.grads.items()}
    p["dx"] = layer.backward(dy.copy())
    p["grads"] = {k: np.array(g) for k, g in layer.grads.items()}
    return p


def measure_probe(out: Outcome, p: dict[str, Any], label: str) -> None:
    """The probe's dx and every parameter gradient against minivae's."""
    out.measure(f"{label}: dx vs minivae", p["dx"], p["dx_ref"])
    for k in p["grads_ref"]:
        out.measure(f"{label}: d{k} vs minivae", p["grads"].get(k), p["grads_ref"][k])


def gradcheck_layer(out: Outcome, layer: Any, x: np.ndarray, label: str) -> None:
    """check_layer's finite-difference errors, once the shapes are known to be right."""
    y = layer.forward(x.copy())
    dx = layer.backward(np.ones_like(y))
    wrong = [(k, g) for k, g in layer.grads.items() if np.shape(g) != layer.params[k].shape]
    if np.shape(dx) != x.shape:
        wrong.append(("x", dx))
    for k, g in wrong:
        out.record(
            f"{label}: d{k} vs finite differences",
            np.inf,
            TOL_FD,
            mismatch(g, x if k == "x" else layer.params[k])[1],
        )
    if not wrong:
        for k, e in check_layer(layer, x).items():
            out.record(f"{label}: d{'x' if k == 'input' else k} vs finite differences", e, TOL_FD)


def rng_for(case: dict[str, int]) -> np.random.Generator:
    """A generator seeded by the case, so each shape gets its own reproducible numbers."""
    return np.random.default_rng(list(case.values()))


# ------------------------------------------------------------------------------------------ linear


def check_linear(mod: Any, out: Outcome) -> None:
    rng = np.random.default_rng(0)
    # square first: there a transposed dW has the right shape, so it shows as values, not a crash
    sq, sq_ref = twin(mod.Linear, Linear, 4, 4)
    p = out.probe["square"] = backward_probe(
        sq, sq_ref, rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    )
    measure_probe(out, p, "4 -> 4, N=3")
    sq.backward(p["dy"].copy())  # a second backward must give the same gradients
    p["again"] = {k: np.array(g) for k, g in sq.grads.items()}
    out.measure("a second backward: dweight vs minivae", p["again"]["weight"], p["grads_ref"]["weight"])
    layer, ref = twin(mod.Linear, Linear, 5, 3)
    x = rng.standard_normal((4, 5))
    p = out.probe["rect"] = backward_probe(layer, ref, x, rng.standard_normal((4, 3)))
    measure_probe(out, p, "5 -> 3, N=4")
    gradcheck_layer(out, layer, x, "5 -> 3")
    worst = Worst(out)

    def run(case: dict[str, int]) -> None:
        r = rng_for(case)
        mine, ref = twin(mod.Linear, Linear, case["in"], case["out"], seed=case["N"])
        q = backward_probe(
            mine, ref, r.standard_normal((case["N"], case["in"])), r.standard_normal((case["N"], case["out"]))
        )
        for k in ("weight", "bias"):
            worst.add(f"d{k} vs minivae, random shapes", q["grads"][k], q["grads_ref"][k], case)
        worst.add("dx vs minivae, random shapes", q["dx"], q["dx_ref"], case)

    worst.n = for_cases(lambda i: {"N": i(1, 6), "in": i(1, 6), "out": i(1, 6)}, run)
    worst.record()


LINEAR_DIAGNOSES = (
    Diagnosis(
        "bias_averaged",
        "the bias gradient is exactly 1/N of minivae's: it is averaged over the batch; sum it (dy.sum(axis=0))",
        lambda p: any(
            is_ratio(q["grads"]["bias"], q["grads_ref"]["bias"], 1 / q["N"]) for q in (p["square"], p["rect"])
        ),
    ),
    Diagnosis(
        "weight_transposed",
        "the weight gradient is transposed, shaped (in, out): PyTorch's weight is (out, in), so dW = dy.T @ x",
        lambda p: (
            close(p["square"]["grads"]["weight"], p["square"]["grads_ref"]["weight"].T)
            or np.shape(p["rect"]["grads"]["weight"]) == (5, 3)
        ),
    ),
    Diagnosis(
        "dx_with_weight_transposed",
        "dx is dy @ W.T: with W shaped (out, in), dx = dy @ W (N, out) @ (out, in) -> (N, in)",
        lambda p: close(p["square"]["dx"], p["square"]["dy"] @ p["square"]["params"]["weight"].T),
    ),
    Diagnosis(
        "grads_accumulated",
        "a second backward doubles the gradients: minivae writes them (grads[k][...] = ...), it does not add (+=)",
        lambda p: is_ratio(p["square"]["again"]["weight"], p["square"]["grads_ref"]["weight"], 2.0),
    ),
)


# ------------------------------------------------------------------------------- relu and sigmoid


def activation_inputs(rng: np.random.Generator) -> np.ndarray:
    """(4, 6) inputs with exact zeros in the first row (where ReLU's derivative is a choice)."""
    x = rng.standard_normal((4, 6))
    x[0, :3] = 0.0
    return x


def check_activation(mod_cls: type, ref_cls: type, out: Outcome) -> None:
    """The probe (with exact zeros), a gradient check away from 0, and random shapes."""
    rng = np.random.default_rng(1)
    layer, ref = twin(mod_cls, ref_cls)
    x = activation_inputs(rng)
    p = out.probe["p"] = backward_probe(layer, ref, x, rng.standard_normal(x.shape))
    out.measure("forward y vs minivae", p["y"], p["y_ref"])
    out.measure("dx vs minivae (inputs with exact zeros)", p["dx"], p["dx_ref"])
    x_given = x.copy()
    mod_cls().forward(x_given)
    out.probe["input_changed"] = out.measure("the input after forward (left as it was)", x_given, x) > 0
    away = rng.standard_normal((3, 5))
    away = np.sign(away) * (0.1 + np.abs(away))  # |x| >= 0.1: no kink within h of any entry
    gradcheck_layer(out, mod_cls(), away, "x away from 0")
    worst = Worst(out)

    def run(case: dict[str, int]) -> None:
        r = rng_for(case)
        q = backward_probe(
            mod_cls(),
            ref_cls(),
            3 * r.standard_normal(tuple(case.values())),
            r.standard_normal(tuple(case.values())),
        )
        worst.add("dx vs minivae, random shapes", q["dx"], q["dx_ref"], case)

    worst.n = for_cases(lambda i: {"N": i(1, 4), "C": i(1, 3), "D": i(1, 6)}, run)
    worst.record()


def check_relu(mod: Any, out: Outcome) -> None:
    check_activation(mod.ReLU, ReLU, out)


RELU_DIAGNOSES = (
    Diagnosis(
        "mask_missing",
        "dx = dy everywhere: the mask is missing (or taken as y >= 0, which always holds); dx = dy * (x > 0)",
        lambda p: close(p["p"]["dx"], p["p"]["dy"]),
    ),
    Diagnosis(
        "mask_at_zero",
        "right except at x = 0 exactly, where dx = dy: minivae (and PyTorch) take the derivative at 0 as 0, "
        "so the mask is x > 0, not x >= 0",
        lambda p: (
            not close(p["p"]["dx"], p["p"]["dx_ref"])
            and close(p["p"]["dx"], np.where(p["p"]["x"] == 0, p["p"]["dy"], p["p"]["dx_ref"]))
        ),
    ),
    Diagnosis(
        "mask_inverted",
        "the gradient flows where x < 0 and stops where x > 0: the mask is inverted",
        lambda p: (
            close(p["p"]["dx"], p["p"]["dy"] * (p["p"]["x"] < 0))
            or close(p["p"]["dx"], p["p"]["dy"] * (p["p"]["x"] <= 0))
        ),
    ),
    Diagnosis(
        "forward_in_place",
        "forward changed its input (x[x < 0] = 0 writes into x, which the layer before still owns): return a new array",
        lambda p: p["input_changed"],
    ),
    Diagnosis(
        "mask_without_dy",
        "dx is the mask itself: multiply it by the upstream gradient, dx = dy * mask",
        lambda p: (
            close(p["p"]["dx"], (p["p"]["x"] > 0) * 1.0) or close(p["p"]["dx"], (p["p"]["x"] >= 0) * 1.0)
        ),
    ),
)


def check_sigmoid(mod: Any, out: Outcome) -> None:
    check_activation(mod.Sigmoid, Sigmoid, out)


def _s(p: dict[str, Any]) -> np.ndarray:
    return sigmoid(p["p"]["x"])


SIGMOID_DIAGNOSES = (
    Diagnosis(
        "derivative_s",
        "dx = dy * s: the derivative of the sigmoid is s (1 - s), not s",
        lambda p: close(p["p"]["dx"], p["p"]["dy"] * _s(p)),
    ),
    Diagnosis(
        "derivative_one_minus_s",
        "dx = dy * (1 - s): the derivative of the sigmoid is s (1 - s)",
        lambda p: close(p["p"]["dx"], p["p"]["dy"] * (1 - _s(p))),
    ),
    Diagnosis(
        "derivative_without_dy",
        "dx = s (1 - s), the local derivative alone: multiply by the upstream gradient dy",
        lambda p: close(p["p"]["dx"], _s(p) * (1 - _s(p))),
    ),
    Diagnosis(
        "sign_flipped",
        "dx is exactly minus minivae's: the sign is flipped (s' = s (1 - s) > 0)",
        lambda p: is_ratio(p["p"]["dx"], p["p"]["dx_ref"], -1.0),
    ),
)


# --------------------------------------------------------------------------------------------- bce

EXTREME_LOGITS = np.array([-1000.0, -100.0, -30.0, 0.0, 30.0, 100.0, 1000.0])


def bce_probe(f: Any, logits: np.ndarray, target: np.ndarray) -> dict[str, Any]:
    value, grad = f(logits.copy(), target)
    ref_value, ref_grad = bce_with_logits(logits, target, "batchmean")
    return {
        "value": value,
        "grad": grad,
        "value_ref": ref_value,
        "grad_ref": ref_grad,
        "N": logits.shape[0],
        "D": logits[0].size,
    }


def check_bce(mod: Any, out: Outcome) -> None:
    rng = np.random.default_rng(2)
    logits, target = 3 * rng.standard_normal((4, 6)), rng.random((4, 6))  # grey-level targets
    p = out.probe["p"] = bce_probe(mod.bce_with_logits, logits, target)
    out.measure("loss vs minivae", p["value"], p["value_ref"])
    out.measure("dlogits vs minivae", p["grad"], p["grad_ref"])
    extreme = np.tile(EXTREME_LOGITS, (3, 1))
    q = out.probe["extreme"] = bce_probe(
        mod.bce_with_logits, extreme, np.array([[0.0], [0.5], [1.0]]) * np.ones_like(extreme)
    )
    out.measure("loss at logits +-30, +-100, +-1000", q["value"], q["value_ref"])
    out.measure("dlogits at logits +-30, +-100, +-1000", q["grad"], q["grad_ref"])
    if close(p["grad"], p["grad_ref"], 1e-3):  # the gradient check needs a gradient of the right shape
        errors = check_function(
            lambda logits: mod.bce_with_logits(logits, target), {"logits": logits}, {"logits": p["grad"]}
        )
        out.record("dlogits vs finite differences", errors["logits"], TOL_FD)
    worst = Worst(out)

    def run(case: dict[str, int]) -> None:
        r = rng_for(case)
        shape = (case["N"], case["D"])
        q = bce_probe(mod.bce_with_logits, 4 * r.standard_normal(shape), r.random(shape))
        worst.add("loss vs minivae, random shapes", q["value"], q["value_ref"], case)
        worst.add("dlogits vs minivae, random shapes", q["grad"], q["grad_ref"], case)

    worst.n = for_cases(lambda i: {"N": i(1, 5), "D": i(1, 8)}, run)
    worst.record()


BCE_DIAGNOSES = (
    Diagnosis(
        "overflow",
        "not finite at large logits: log(sigmoid(x)) hits log(0), or exp(-x) overflows; write the loss as "
        "max(x, 0) - x t + log(1 + exp(-|x|)), finite for any logit",
        lambda p: (
            not (
                np.isfinite(np.asarray(p["extreme"]["value"], float)).all()
                and np.isfinite(np.asarray(p["extreme"]["grad"], float)).all()
            )
        ),
    ),
    Diagnosis(
        "grad_sign_flipped",
        "dlogits is exactly minus minivae's: the gradient is s(x) - t, not t - s(x)",
        lambda p: is_ratio(p["p"]["grad"], p["p"]["grad_ref"], -1.0),
    ),
    Diagnosis(
        "summed_over_batch",
        "N times minivae's: the loss or its gradient is summed over the batch; batchmean divides by N",
        lambda p: (
            is_ratio(p["p"]["value"], p["p"]["value_ref"], p["p"]["N"])
            or is_ratio(p["p"]["grad"], p["p"]["grad_ref"], p["p"]["N"])
        ),
    ),
    Diagnosis(
        "mean_over_pixels",
        "1/D of minivae's (D pixels per image): averaged over every element; batchmean sums each image's "
        "pixels and averages over the batch only",
        lambda p: (
            is_ratio(p["p"]["value"], p["p"]["value_ref"], 1 / p["p"]["D"])
            or is_ratio(p["p"]["grad"], p["p"]["grad_ref"], 1 / p["p"]["D"])
        ),
    ),
)


# ----------------------------------------------------------------------------------- im2col, col2im

IM2COL_PROBE = {"shape": (2, 2, 5, 6), "kh": 2, "kw": 3, "sh": 1, "sw": 2}


def check_im2col(mod: Any, out: Outcome) -> None:
    c = IM2COL_PROBE
    x = np.random.default_rng(3).standard_normal(c["shape"])
    p = out.probe["p"] = {"cols_ref": im2col(x, c["kh"], c["kw"], c["sh"], c["sw"])}
    p["cols_stride1"] = im2col(x, c["kh"], c["kw"], 1, 1)
    p["cols"] = mod.im2col(x.copy(), c["kh"], c["kw"], c["sh"], c["sw"])
    out.measure("cols vs minivae, x (2, 2, 5, 6), 2x3 kernel, stride (1, 2)", p["cols"], p["cols_ref"])
    worst = Worst(out)

    def run(case: dict[str, int]) -> None:
        x = rng_for(case).standard_normal((case["N"], case["C"], case["H"], case["W"]))
        k = (case["kh"], case["kw"], case["sh"], case["sw"])
        worst.add("cols vs minivae, random shapes and strides", mod.im2col(x.copy(), *k), im2col(x, *k), case)

    worst.n = for_cases(draw_conv_case, run)
    worst.record()


def draw_conv_case(i: Any) -> dict[str, int]:
    kh, kw = i(1, 3), i(1, 3)
    return {
        "N": i(1, 3),
        "C": i(1, 3),
        "kh": kh,
        "kw": kw,
        "sh": i(1, 3),
        "sw": i(1, 3),
        "H": i(kh, kh + 4),
        "W": i(kw, kw + 4),
    }


def same_rows(a: Any, b: np.ndarray) -> bool:
    """a holds b's rows (as a multiset) in another order."""
    a = np.asarray(a, dtype=float)
    return a.shape == b.shape and not close(a, b) and sorted(map(tuple, a)) == sorted(map(tuple, b))


IM2COL_DIAGNOSES = (
    Diagnosis(
        "rows_permuted",
        "the right patches in the wrong row order: row index (c, i, j), channel slowest, kernel column fastest",
        lambda p: same_rows(p["p"]["cols"], p["p"]["cols_ref"]),
    ),
    Diagnosis(
        "columns_permuted",
        "the right windows in the wrong column order: column index (r, q, n), output row slowest, image fastest",
        lambda p: same_rows(np.asarray(p["p"]["cols"]).T, p["p"]["cols_ref"].T),
    ),
    Diagnosis(
        "transposed",
        "cols is transposed: it should be (C*kh*kw, Ho*Wo*N), one column per window",
        lambda p: close(p["p"]["cols"], p["p"]["cols_ref"].T),
    ),
    Diagnosis(
        "stride_ignored",
        "these are the stride-1 windows: window (r, q) starts at (sh*r, sw*q), and Ho = (H - kh) // sh + 1",
        lambda p: close(p["p"]["cols"], p["p"]["cols_stride1"]),
    ),
)

COL2IM_PROBE = {"shape": (2, 3, 6, 7), "kh": 3, "kw": 3, "sh": 1, "sw": 2}  # windows overlap


def adjoint_error(
    mod: Any, x: np.ndarray, cols: np.ndarray, k: tuple[int, int, int, int]
) -> tuple[float, str]:
    """| <im2col(x), cols> - <x, col2im(cols)> |, relative to ||im2col(x)|| ||cols|| (Cauchy-Schwarz)."""
    back = mod.col2im(cols.copy(), x.shape, *k)
    error, why = mismatch(back, x)
    if why:
        return error, why
    forward = im2col(x, *k)
    lhs, rhs = float((forward * cols).sum()), float((x * np.asarray(back, float)).sum())
    return abs(lhs - rhs) / (np.linalg.norm(forward) * np.linalg.norm(cols)), ""


def check_col2im(mod: Any, out: Outcome) -> None:
    c = COL2IM_PROBE
    k = (c["kh"], c["kw"], c["sh"], c["sw"])
    rng = np.random.default_rng(4)
    cols = rng.standard_normal(im2col(np.zeros(c["shape"]), *k).shape)
    p = out.probe["p"] = {
        "y_ref": col2im(cols, c["shape"], *k),
        "ones_ref": col2im(np.ones_like(cols), c["shape"], *k),
    }
    p["ones"] = mod.col2im(np.ones_like(cols), c["shape"], *k)
    p["y"] = mod.col2im(cols.copy(), c["shape"], *k)
    out.measure("col2im(ones): windows covering each pixel", p["ones"], p["ones_ref"])
    out.measure("col2im(cols) vs minivae, x (2, 3, 6, 7), 3x3, stride (1, 2)", p["y"], p["y_ref"])
    worst, adjoint = Worst(out), {"error": 0.0, "why": "", "case": {}}

    def run(case: dict[str, int]) -> None:
        r = rng_for(case)
        x = r.standard_normal((case["N"], case["C"], case["H"], case["W"]))
        k = (case["kh"], case["kw"], case["sh"], case["sw"])
        cols = r.standard_normal(im2col(x, *k).shape)
        worst.add(
            "col2im vs minivae, random shapes and strides",
            mod.col2im(cols.copy(), x.shape, *k),
            col2im(cols, x.shape, *k),
            case,
        )
        error, why = adjoint_error(mod, x, cols, k)
        if not error <= adjoint["error"]:
            adjoint.update(error=error, why=why, case=case)

    worst.n = for_cases(draw_conv_case, run)
    at = ", ".join(f"{k}={v}" for k, v in adjoint["case"].items())
    note = f"worst of {worst.n} shapes, at {at}" if adjoint["error"] else f"{worst.n} shapes, every one exact"
    out.record(
        "adjoint: <im2col(x), c> = <x, col2im(c)>",
        adjoint["error"],
        1e-12,
        note + (f"; {adjoint['why']}" if adjoint["why"] else ""),
    )
    worst.record()


COL2IM_DIAGNOSES = (
    Diagnosis(
        "overwrites",
        "col2im(ones) is 1 on every covered pixel: overlapping windows overwrite each other; add them "
        "(x[...] += ...), so col2im stays the adjoint of im2col",
        lambda p: close(p["p"]["ones"], (p["p"]["ones_ref"] > 0) * 1.0),
    ),
    Diagnosis(
        "misplaced",
        "each pixel receives the right number of entries but not the right ones: read cols in the order "
        "im2col writes them, rows (c, i, j) and columns (r, q, n)",
        lambda p: close(p["p"]["ones"], p["p"]["ones_ref"]) and not close(p["p"]["y"], p["p"]["y_ref"]),
    ),
    Diagnosis(
        "axes_chwn",
        "the result is shaped (C, H, W, N), as the columns are ordered: transpose it to (N, C, H, W)",
        lambda p: close(p["p"]["y"], p["p"]["y_ref"].transpose(1, 2, 3, 0)),
    ),
)


# ------------------------------------------------------------------------------------------- conv2d


def check_conv2d(mod: Any, out: Outcome) -> None:
    rng = np.random.default_rng(5)
    layer, ref = twin(mod.Conv2d, Conv2d, 2, 2, 3, stride=1, padding=1)
    x = rng.standard_normal((3, 2, 5, 5))
    p = out.probe["p"] = backward_probe(layer, ref, x, rng.standard_normal((3, 2, 5, 5)))
    w = p["params"]["weight"]
    p["dx_unflipped"] = conv_transpose_stride1(p["dy"], w[:, :, ::-1, ::-1], (1, 1))
    p["dw_one"] = [one_image_dw(w, x[i : i + 1], p["dy"][i : i + 1]) for i in range(3)]
    p["x_pad_shape"] = (3, 2, 7, 7)
    measure_probe(out, p, "2 -> 2, 3x3, stride 1, padding 1")
    strided, _ = twin(mod.Conv2d, Conv2d, 2, 3, (3, 2), stride=2, padding=1)
    gradcheck_layer(out, strided, rng.standard_normal((2, 2, 5, 4)), "3x2 kernel, stride 2")
    worst = Worst(out)

    def run(case: dict[str, int]) -> None:
        r = rng_for(case)
        k = (case["kh"], case["kw"])
        mine, ref = twin(
            mod.Conv2d, Conv2d, case["C"], case["O"], k, stride=case["s"], padding=case["p"], seed=case["N"]
        )
        x = r.standard_normal((case["N"], case["C"], case["H"], case["W"]))
        q = backward_probe(mine, ref, x, r.standard_normal(ref.forward(x).shape))
        for key in ("weight", "bias"):
            worst.add(f"d{key} vs minivae, random shapes", q["grads"][key], q["grads_ref"][key], case)
        worst.add("dx vs minivae, random shapes", q["dx"], q["dx_ref"], case)

    def draw(i: Any) -> dict[str, int]:
        kh, kw, pad = i(1, 3), i(1, 3), i(0, 2)
        case = {"N": i(1, 3), "C": i(1, 3), "O": i(1, 3), "kh": kh, "kw": kw, "s": i(1, 3), "p": pad}
        return case | {"H": i(max(1, kh - 2 * pad), 6), "W": i(max(1, kw - 2 * pad), 6)}

    worst.n = for_cases(draw, run)
    worst.record()


def one_image_dw(weight: np.ndarray, x: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """minivae's dW from one image alone (the signature of a dW not summed over the batch)."""
    o, c, kh, kw = weight.shape
    ref = Conv2d(c, o, (kh, kw), padding=1, dtype="float64")
    ref.forward(x)
    ref.backward(dy)
    return ref.grads["weight"].copy()


CONV2D_DIAGNOSES = (
    Diagnosis(
        "weight_one_image",
        "dW equals one image's contribution: sum dy_mat @ cols.T over the whole batch (all Ho*Wo*N columns)",
        lambda p: any(close(p["p"]["grads"]["weight"], dw) for dw in p["p"]["dw_one"]),
    ),
    Diagnosis(
        "weight_averaged",
        "dW is exactly 1/N of minivae's: the weight gradient is summed over the batch, not averaged",
        lambda p: is_ratio(p["p"]["grads"]["weight"], p["p"]["grads_ref"]["weight"], 1 / p["p"]["N"]),
    ),
    Diagnosis(
        "bias_averaged",
        "db is exactly 1/N of minivae's: sum dy over the batch and both spatial axes, dy.sum(axis=(0, 2, 3))",
        lambda p: is_ratio(p["p"]["grads"]["bias"], p["p"]["grads_ref"]["bias"], 1 / p["p"]["N"]),
    ),
    Diagnosis(
        "unflipped_kernel",
        "dx is dy convolved with the kernel unflipped: the input gradient of a cross-correlation is a "
        "convolution with the kernel flipped in both axes (W[:, :, ::-1, ::-1]), channels swapped",
        lambda p: close(p["p"]["dx"], p["p"]["dx_unflipped"]),
    ),
    Diagnosis(
        "padding_kept",
        "dx is shaped like the padded input: crop the padding's gradient (p rows and columns on each side)",
        lambda p: np.shape(p["p"]["dx"]) == p["p"]["x_pad_shape"],
    ),
)
