# %% [markdown]
# # Lesson 2: one Linear layer. Forward, backward, the chain rule, and a gradient check you can trust.
#
# ## The idea
#
# A Linear layer maps x (N, in) to y (N, out):
#
#     y = x W^T + b          W: (out, in),  b: (out,)     (PyTorch's names and shapes)
#
# Training needs dL/dW and dL/db for some scalar loss L further down the network. The layer does not
# know L; it only receives dy = dL/dy (N, out) from the layer above, and the chain rule does the rest:
#
#     dL/dW = dy^T x          (out, in)      each weight W[o, i] touched y[n, o] through x[n, i]
#     dL/db = sum_n dy[n]     (out,)         the bias touched every row once
#     dL/dx = dy W            (N, in)        handed down to the layer below
#
# That is `Linear.backward` in `minivae/nn/linear.py`, three lines next to its forward. `forward` caches
# x, the one thing backward needs.
#
# ## Checking a backward
#
# Pick a random dy and define L = sum(y * dy); then dL/dy is exactly dy and the claimed gradients can be
# compared with central differences, one element at a time:
#
#     dL/dx_k ~ (L(x + h e_k) - L(x - h e_k)) / (2 h)
#
# The error of this estimate has two parts: truncation, about h^2 |L'''| / 6, which shrinks with h, and
# rounding, about eps |L| / h (eps = machine epsilon), which grows as h shrinks. In float64 (eps 2.2e-16)
# with h = 1e-6 both are tiny and a correct backward agrees to a relative error near 1e-10; a wrong one
# is off by 0.1 or more. In float32 (eps 1.2e-7) the rounding term at h = 1e-6 is eps / h ~ 0.1 of |L|:
# the estimate keeps only about one correct digit, and even the best h (about eps^(1/3) ~ 5e-3) leaves
# an error near 1e-5, too coarse to tell a small bug from noise. Gradient checks run in float64.
# `minivae.nn.gradcheck.check_layer` does all of this.
#
# ## What to look at
#
# - the hand-computed entry of dL/dW next to the layer's;
# - the `check_layer` errors (expect < 1e-8) and the deliberately broken layer's bias error (1 - 1/N);
# - `02_step_size.png`: relative error against h, float64 and float32. The V shape is truncation (right
#   arm, slope 2) meeting rounding (left arm, slope -1); its bottom sits near h = eps^(1/3).
#
# Then write it yourself: `python lessons/exercises/check.py linear` grades your Linear backward.

# %%
import _common
import matplotlib.pyplot as plt
import numpy as np
from _common import expect, section

from minivae.nn import Linear, Sequential, Tanh
from minivae.nn.gradcheck import check_layer

lesson = _common.setup("02_linear_layer")
xp = lesson.xp
rng = np.random.default_rng(lesson.seed)

# %% [markdown]
# ## Forward and backward by hand
#
# One small layer, float64, a made-up upstream gradient dy. Then one weight nudged by ±h, to see the
# chain rule's answer for dL/dW[0, 1] agree with the change in L = sum(y * dy).

# %%
section("forward and backward by hand")
layer = Linear(3, 2, rng=rng, dtype="float64").to(xp)
x = xp.asarray(rng.standard_normal((4, 3)))  # (N=4, in=3)
y = layer.forward(x)  # (4, 2)
dy = xp.asarray(rng.standard_normal(y.shape))  # pretend this came from the layer above
dx = layer.backward(dy)
print(f"   x {tuple(x.shape)} -> y {tuple(y.shape)};  backward(dy {tuple(dy.shape)}) -> dx {tuple(dx.shape)}")
print(f"   grads: weight {tuple(layer.grads['weight'].shape)}, bias {tuple(layer.grads['bias'].shape)}")
# one entry by finite differences: nudge W[0, 1] and watch L = sum(y * dy) move
h, w = 1e-6, layer.params["weight"]
old = float(w[0, 1])
w[0, 1] = old + h
lp = float((layer.forward(x) * dy).sum())
w[0, 1] = old - h
lm = float((layer.forward(x) * dy).sum())
w[0, 1] = old
print(f"   dL/dW[0,1]: backward says {float(layer.grads['weight'][0, 1]):+.10f}")
print(f"               (L(W+h) - L(W-h)) / 2h = {(lp - lm) / (2 * h):+.10f}   (expect the same to ~1e-9)")

# %% [markdown]
# ## check_layer: every element of x, W and b
#
# `check_layer` does that nudge for every entry of the input and of each parameter, against a random
# upstream gradient, and reports the relative error |a - b| / max(|a|, |b|) of each gradient.

# %%
section("check_layer: every element of x, W and b, in float64")
n, d_in, d_out = lesson.pick(smoke=(3, 5, 4), default=(8, 20, 10), full=(16, 64, 32))
layer = Linear(d_in, d_out, rng=rng, dtype="float64").to(xp)
x = xp.asarray(rng.standard_normal((n, d_in)))
for name, err in check_layer(layer, x).items():
    expect(f"relative error, d/d{name}", err, hi=1e-8, fmt=".2e")

# %% [markdown]
# ## A broken backward is obvious
#
# A classic bug: the bias gradient averaged over the batch instead of summed. The check finds it, and the
# size of the error names it: the claimed gradient is 1/N of the true one, a relative error of 1 - 1/N.


# %%
class MeanBiasLinear(Linear):
    """A Linear with a classic bug: the bias gradient averaged over the batch instead of summed."""

    def backward(self, dy):
        dx = super().backward(dy)
        self.grads["bias"][...] = dy.mean(axis=0)  # wrong: b touches every row, so its gradient is a sum
        return dx


section("a broken backward is obvious")
bad = MeanBiasLinear(d_in, d_out, rng=rng, dtype="float64").to(xp)
errs = check_layer(bad, x)
expect("d/dweight of the broken layer (still right)", errs["weight"], hi=1e-8, fmt=".2e")
expect(f"d/dbias of the broken layer (1 - 1/N = {1 - 1 / n:.2f})", errs["bias"], 0.5, 1.0, fmt=".2e")

# %% [markdown]
# ## How small should h be?
#
# A Linear layer alone is linear, so truncation error vanishes; a Tanh after it gives curvature to
# truncate. The same check at steps h from 1e-12 to 1e-1, in float64 and float32.

# %%
section("how small should h be? (Linear + Tanh, so there is curvature to truncate)")
hs = np.logspace(-12, -1, lesson.pick(smoke=12, default=23, full=45))  # includes h = 1e-6
curves = {}
for dtype in ("float64", "float32"):
    r = np.random.default_rng(lesson.seed)
    net = Sequential(Linear(6, 5, rng=r, dtype=dtype), Tanh()).to(xp)
    xin = xp.asarray(r.standard_normal((3, 6)).astype(dtype))
    curves[dtype] = [check_layer(net, xin, h=float(hh))["input"] for hh in hs]
    best = int(np.argmin(curves[dtype]))
    print(f"   {dtype}: smallest error {curves[dtype][best]:.1e} at h = {hs[best]:.0e}")
at_1e6 = {k: v[int(np.argmin(np.abs(np.log10(hs) + 6)))] for k, v in curves.items()}
expect("float64 error at h = 1e-6", at_1e6["float64"], hi=1e-8, fmt=".1e")
expect("float32 error at h = 1e-6 (rounding, eps/h ~ 0.1, dominates)", at_1e6["float32"], lo=1e-2, fmt=".1e")
expect("float32 error at its best h", min(curves["float32"]), 1e-7, 1e-3, fmt=".1e")

fig, ax = plt.subplots(figsize=(6.2, 4.2))
for dtype, c in (("float64", "C0"), ("float32", "C3")):
    ax.loglog(hs, curves[dtype], "-o", ms=3, color=c, label=dtype)
    eps = float(np.finfo(dtype).eps)
    ax.axvline(eps ** (1 / 3), color=c, ls=":", lw=1)
ax.set_xlabel("finite-difference step h")
ax.set_ylabel("relative error of dL/dx")
ax.set_title("gradient check error vs step: rounding (left) meets truncation (right)", fontsize=9)
ax.grid(alpha=0.3, which="both")
ax.legend(title="dotted: h = eps^(1/3)", fontsize=8, title_fontsize=8)
lesson.savefig(fig, "step_size", "why gradient checks use float64 and h around 1e-6")

# %%
lesson.done()
