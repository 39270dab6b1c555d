"""Finite-difference gradient checks, shared by the tests and the lessons.

A layer maps x to y; backward(dy) claims to return dL/dx for L = sum(y * dy). We pick a random
upstream gradient dy, so L is a scalar, and compare the claim with central differences

    dL/dx_k  ~  ( L(x + h e_k) - L(x - h e_k) ) / (2 h)

for every element k of the input and of every parameter. In float64 with h = 1e-6 the truncation
error is O(h^2) ~ 1e-12 and the rounding error ~ 1e-16 / h ~ 1e-10, so a correct backward agrees to
about 1e-8 relative, and a wrong one is usually off by 1e-1 or more.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from minivae.backend import get_array_module


def rel_error(analytic: Any, numeric: Any) -> float:
    """max |a - n| / max(max |a|, max |n|): the worst error relative to the gradient's scale."""
    xp = get_array_module(analytic, numeric)
    scale = max(float(xp.abs(analytic).max()), float(xp.abs(numeric).max()), 1e-300)
    return float(xp.abs(analytic - numeric).max()) / scale


def numerical_gradient(f: Callable[[], float], x: Any, h: float = 1e-6) -> Any:
    """Central-difference gradient of the scalar f() with respect to the array x, perturbed in place.

    Returned on x's backend, float64, shaped like x.
    """
    xp = get_array_module(x)
    return xp.asarray(numerical_gradient_at(f, x, range(x.size), h).reshape(x.shape))


def numerical_gradient_at(f: Callable[[], float], x: Any, indices: Any, h: float = 1e-6) -> np.ndarray:
    """Central differences of f() for the flat entries `indices` of x only (for big parameter arrays).

    Returns a NumPy float64 array with one entry per index.
    """
    if not x.flags.c_contiguous:
        raise ValueError("x must be C-contiguous so that it can be perturbed in place")
    flat = x.reshape(-1)  # a view of a contiguous array: writing flat[k] changes x
    out = []
    for k in indices:
        old = float(flat[k])
        flat[k] = old + h
        fp = float(f())
        flat[k] = old - h
        fm = float(f())
        flat[k] = old
        out.append((fp - fm) / (2 * h))
    return np.array(out, dtype=np.float64)


def check_vae(
    model: Any,
    x: Any,
    eps: Any,
    beta: float = 1.0,
    form: str = "elbo",
    per_param: int | None = None,
    seed: int = 0,
    h: float = 1e-5,
) -> dict[str, float]:
    """End-to-end check of a VAE: encoder -> reparameterize (fixed eps) -> decoder -> loss, then
    model.backward, against finite differences of the loss for every parameter (and the input).

    per_param: check only that many random entries of each parameter (None: all of them).
    h is larger than check_layer's: a whole-image loss is hundreds of nats, and the rounding error
    of L(x + h) - L(x - h) is about 1e-16 |L| / h. Two things make a correct model fail this check:
    that rounding when |L| is large and a gradient small, and ReLU kinks (a perturbation that moves
    some unit across 0), more likely the more units a parameter feeds. Use small models, the "seed"
    form's pixel-mean loss, or smooth activations (see tests/test_models.py) to keep both away.
    """
    from minivae.backend import to_numpy
    from minivae.nn.losses import vae_loss

    def loss() -> float:
        logits, mu, logvar = model.forward(x, eps=eps)
        return float(vae_loss(logits, x, mu, logvar, beta, form).total)

    logits, mu, logvar = model.forward(x, eps=eps)
    out = vae_loss(logits, x, mu, logvar, beta, form)
    wanted, model.input_grad = model.input_grad, True  # this check wants dL/dx too
    try:
        dx = model.backward(out.dlogits, out.dmu, out.dlogvar)
    finally:
        model.input_grad = wanted
    rng = np.random.default_rng(seed)
    # x appears twice (encoder input and BCE target); backward gives the encoder-input part only,
    # so the input check holds the target fixed.
    target = x.copy()
    errors = {}
    for name, p, g in [("input", x, dx), *model.named_parameters()]:
        g = to_numpy(g).reshape(-1).copy()
        idx = (
            np.arange(p.size)
            if per_param is None or per_param >= p.size
            else rng.choice(p.size, per_param, False)
        )
        if name == "input":

            def f() -> float:
                logits, mu, logvar = model.forward(x, eps=eps)
                return float(vae_loss(logits, target, mu, logvar, beta, form).total)
        else:
            f = loss
        errors[name] = rel_error(g[idx], numerical_gradient_at(f, p, idx, h))
    return errors


def check_iwae(
    model: Any, x: Any, eps: Any, per_param: int | None = None, seed: int = 0, h: float = 1e-5
) -> dict[str, float]:
    """check_vae for the IWAE loss (minivae.nn.iwae): eps (k, N, latent) fixed, every parameter's
    gradient from model.backward(dlogits, dmu, dlogvar, dz) against central differences of -L_k."""
    from minivae.backend import to_numpy
    from minivae.nn.iwae import iwae_loss

    def loss() -> float:
        logits, mu, logvar = model.forward(x, eps=eps)
        return float(iwae_loss(logits, x, mu, logvar, eps).total)

    logits, mu, logvar = model.forward(x, eps=eps)
    out = iwae_loss(logits, x, mu, logvar, eps)
    model.backward(out.dlogits, out.dmu, out.dlogvar, out.dz)
    rng = np.random.default_rng(seed)
    errors = {}
    for name, p, g in model.named_parameters():
        g = to_numpy(g).reshape(-1).copy()
        n = p.size
        idx = np.arange(n) if per_param is None or per_param >= n else rng.choice(n, per_param, False)
        errors[name] = rel_error(g[idx], numerical_gradient_at(loss, p, idx, h))
    return errors


def check_layer(layer: Any, x: Any, seed: int = 0, h: float = 1e-6) -> dict[str, float]:
    """Relative errors of a layer's backward against finite differences: {"input": e, "<param>": e, ...}
    for the input and every parameter (a Sequential's children's too, named "0.weight", ...).

    Use float64 arrays and parameters, and small shapes: it runs 2 forwards per element.
    """
    xp = get_array_module(x)
    x = xp.ascontiguousarray(x)
    y = layer.forward(x)
    rng = np.random.default_rng(seed)
    dy = xp.asarray(rng.standard_normal(y.shape))
    dx = layer.backward(dy)
    # every parameter, a Sequential's children's included ("0.weight", ...)
    named = [(k, p, g.copy()) for k, p, g in layer.named_parameters()]

    def loss() -> float:
        return float((layer.forward(x) * dy).sum())

    errors = {"input": rel_error(dx, numerical_gradient(loss, x, h))}
    for k, p, g in named:
        errors[k] = rel_error(g, numerical_gradient(loss, p, h))
    return errors


def check_function(
    f: Callable[..., tuple[Any, ...]], inputs: dict[str, Any], grads: dict[str, Any], h: float = 1e-6
) -> dict[str, float]:
    """Check analytic gradients of a scalar function f(**inputs) -> value (first element of a tuple).

    grads maps input names to the analytic gradients to check; inputs are perturbed in place.
    """

    def value() -> float:
        out = f(**inputs)
        return float(out[0] if isinstance(out, tuple) else out)

    return {k: rel_error(grads[k], numerical_gradient(value, inputs[k], h)) for k in grads}
