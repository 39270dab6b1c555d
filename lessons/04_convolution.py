# %% [markdown]
# # Lesson 4: convolution as one matrix product (im2col), checked against plain loops, and its backward.
#
# ## The idea
#
# A 2-D convolution slides a small kernel over the image. With input x (N, C_in, H, W), weight
# W (C_out, C_in, kH, kW), stride s and zero padding p:
#
#     y[n, o, h, w] = b[o] + sum_{c, i, j} W[o, c, i, j] * x_pad[n, c, s h + i, s w + j]
#     H_out = floor((H + 2p - kH) / s) + 1                                (the same for the width)
#
# (Deep-learning "convolution" is a cross-correlation: the kernel is not flipped.) The formula has seven
# indices, n, o, h, w and c, i, j. The reference `minivae.nn.reference.conv2d_loop` writes the first
# four as nested Python loops (image, output channel, output row, output column) and does the sum over
# c, i, j of each window as one NumPy `sum`; even so it runs one Python iteration per output number,
# which is hopelessly slow.
#
# ## What to look at
#
# - the 4x4 example's im2col matrix, one window per column;
# - fast against loops (expect ~1e-15 in float64) at strides 1 and 2, the gradient check, the adjoint
#   test;
# - the speed-up of im2col over the loops: about a thousand at the default size (840-1,920 measured,
#   see the speed step; the check asks > 50);
# - `04_im2col.png`: an image and its im2col matrix; `04_edge_filters.png`: a digit through hand-set
#   kernels (vertical and horizontal edges, a blur), i.e. what a first conv layer can compute.
#
# Then write them yourself: `python lessons/exercises/check.py im2col col2im conv2d` grades your
# im2col, your col2im (it must be im2col's adjoint) and your Conv2d backward.

# %%
import statistics
import time

import _common
import matplotlib.pyplot as plt
import numpy as np
from _common import expect, section

from minivae import threads
from minivae.backend import synchronize, to_numpy
from minivae.nn import Conv2d, col2im, im2col
from minivae.nn.conv import conv_output_size
from minivae.nn.gradcheck import check_layer, rel_error
from minivae.nn.reference import conv2d_loop, conv2d_loop_backward

lesson = _common.setup("04_convolution")
xp = lesson.xp
rng = np.random.default_rng(lesson.seed)

# %% [markdown]
# ## im2col
#
# Copy every kH x kW window of the input into one column of a matrix:
#
#     cols = im2col(x_pad):  (C_in kH kW, H_out W_out N)     one column per output pixel
#     y    = W_mat @ cols:   (C_out, C_in kH kW) @ (C_in kH kW, H_out W_out N)
#
# and the convolution is a single matrix product, which BLAS (or cuBLAS) runs near the machine's peak.
# Entry (c, i, j | h, w, n) of cols is x_pad[n, c, s h + i, s w + j]: a fixed number of bytes away from
# the first pixel for every index, so minivae builds cols as a strided "window view" of x_pad (no copy)
# and copies it once (`minivae.nn.conv.im2col`; `im2col_loop` writes the same as one strided slice copy
# per kernel offset, 9 for 3x3). The price is memory: each input pixel is copied up to kH kW times.
# The columns run over (h, w, n), the image fastest, because minivae keeps the convolutions' activations
# in memory as (C, H, W, N) (`minivae.nn.conv.batch_last`; the arrays keep PyTorch's (N, C, H, W) shape):
# then each slice the copy reads is a run of W N neighbouring numbers, not of W, which NumPy copies faster.

# %%
section("im2col on a 4x4 image, 3x3 kernel, stride 1: four windows, four columns")
x = xp.arange(16, dtype=xp.float64).reshape(1, 1, 4, 4)
print("   x =\n" + "\n".join("      " + " ".join(f"{v:3.0f}" for v in row) for row in to_numpy(x)[0, 0]))
cols = to_numpy(im2col(x, 3, 3, 1, 1))  # (1*3*3, 1*2*2)
print(f"   im2col(x) {cols.shape}: column k is window k, read row by row")
print("\n".join("      " + " ".join(f"{v:3.0f}" for v in row) for row in cols))

section("output sizes: floor((H + 2p - k) / s) + 1")
for h, k, s, p in [(28, 3, 1, 1), (29, 3, 2, 0), (28, 3, 2, 1), (5, 3, 2, 0)]:
    layer = Conv2d(1, 1, k, stride=s, padding=p, rng=rng).to(xp)
    got = layer.forward(xp.zeros((1, 1, h, h), dtype=xp.float32)).shape[2]
    print(f"   H={h:2d} k={k} s={s} p={p}:  formula {conv_output_size(h, k, s, p):2d}, layer {got:2d}")
print("   (28, s=1, p=1) keeps the size: 'same' padding;  the seed's encoder pads 28 -> 29, then s=2 -> 14")

# %% [markdown]
# ## Backward
#
# y = W_mat @ cols is a Linear layer in disguise, so (lesson 2):
#
#     dW_mat = dy_mat @ cols^T          dcols = W_mat^T @ dy_mat          db = sum of dy over n, h, w
#
# and dx = col2im(dcols): each column entry is added back onto the pixel it was copied from. col2im is
# the adjoint (transpose) of im2col: <im2col(x), c> = <x, col2im(c)> for any x and c. Overlapping
# windows make a pixel receive gradient from every window that read it.
#
# At stride 1 the same dx is itself a convolution: of dy padded by k - 1 - p, with the kernel flipped in
# both axes and its channels swapped (lesson 5 derives it). `Conv2d.backward` takes that route,
# `minivae.nn.conv.conv_transpose_stride1`, whenever the stride is 1 in both axes, at any padding; at
# any other stride it uses col2im. Both give the same dx. Below, strides 1 and 2 are each checked
# against the loops, so both routes are tested.

# %%
section("fast (im2col) against the loops, float64")
for s, p in [(1, 0), (1, 1), (2, 0), (2, 1)]:
    conv = Conv2d(3, 4, 3, stride=s, padding=p, rng=rng, dtype="float64").to(xp)
    x = xp.asarray(rng.standard_normal((2, 3, 7, 7)))
    y = conv.forward(x)
    w, b = to_numpy(conv.params["weight"]), to_numpy(conv.params["bias"])
    y_loop = conv2d_loop(to_numpy(x), w, b, s, p)
    dy = rng.standard_normal(y.shape)
    dx = conv.backward(xp.asarray(dy))
    dx_loop, dw_loop, _ = conv2d_loop_backward(to_numpy(x), w, s, p, dy)
    errs = (rel_error(to_numpy(y), y_loop), rel_error(to_numpy(dx), dx_loop))
    errs += (rel_error(to_numpy(conv.grads["weight"]), dw_loop),)
    route = "flipped-kernel conv" if s == 1 else "col2im"
    expect(
        f"stride {s} padding {p} (dx by {route}): worst of y, dx, dW vs loops", max(errs), hi=1e-12, fmt=".1e"
    )

section("the backward, by finite differences (check_layer)")
conv = Conv2d(2, 3, 3, stride=2, padding=1, rng=rng, dtype="float64").to(xp)
for name, err in check_layer(conv, xp.asarray(rng.standard_normal((2, 2, 5, 5)))).items():
    expect(f"relative error, d/d{name}", err, hi=1e-8, fmt=".1e")
c = xp.asarray(rng.standard_normal((2 * 9, 2 * 3 * 3)))
xa = xp.asarray(rng.standard_normal((2, 2, 5, 5)))
lhs = float((im2col(xa, 3, 3, 1, 1) * c).sum())
rhs = float((xa * col2im(c, xa.shape, 3, 3, 1, 1)).sum())
expect(
    "col2im is im2col's adjoint: |<im2col(x), c> - <x, col2im(c)>| / |.|",
    abs(lhs - rhs) / abs(lhs),
    hi=1e-12,
    fmt=".1e",
)

# %% [markdown]
# ## Speed: loops against one matrix product
#
# The loops run one Python iteration per output number; im2col runs one copy and one BLAS product. Two
# things keep the comparison fair on a shared machine. `minivae.threads.apply()` sets the BLAS thread
# count to the cores no other program is using (one, beside a busy process), because a BLAS thread
# waiting on a core that another program holds makes every product wait. And each time is the median of
# several repeats, so one slow moment does not decide the result.
#
# On the 2-core development CPU with other programs keeping both cores busy (load average 4-7), one
# BLAS thread, at the default size below (`python lessons/04_convolution.py`): the loops took 5.0-12.9 s
# and im2col 3.8-10.9 ms, so im2col was 840-1,920 times faster over six runs. The check asks only for
# more than 50.

# %%
section("speed: loops against one matrix product")
n_threads = threads.apply()
print(f"   BLAS threads: {n_threads} (OPENBLAS_NUM_THREADS if set, else the cores no other program is using)")
n, cin, cout, hw = lesson.pick(smoke=(1, 2, 4, 8), default=(8, 16, 32, 28), full=(32, 64, 64, 14))
conv = Conv2d(cin, cout, 3, padding=1, rng=rng).to(xp)
x = xp.asarray(rng.random((n, cin, hw, hw), dtype=np.float32))
w, b = to_numpy(conv.params["weight"]), to_numpy(conv.params["bias"])
x_host = to_numpy(x)


def median_seconds(f, repeats: int, inner: int = 1):
    """(median over `repeats` of the mean time of `inner` calls of f, GPU work included; f's last result)."""
    times = []
    for _ in range(repeats):
        synchronize(xp)
        t0 = time.perf_counter()
        for _ in range(inner):
            result = f()
        synchronize(xp)
        times.append((time.perf_counter() - t0) / inner)
    return statistics.median(times), result


t_loop, y_loop = median_seconds(lambda: conv2d_loop(x_host, w, b, 1, 1), repeats=3)
conv.forward(x)  # warm-up: the first call allocates
t_fast, y = median_seconds(lambda: conv.forward(x), repeats=7, inner=5)
print(
    f"   x {tuple(x.shape)} -> y {tuple(y.shape)}: loops {t_loop * 1e3:.0f} ms, "
    f"im2col {t_fast * 1e3:.2f} ms (medians of 3 and 7 repeats)"
)
expect(
    "speed-up of im2col over the loops",
    t_loop / t_fast,
    lo=lesson.pick(smoke=5, default=50, full=50),
    fmt=".0f",
)
expect("float32 agreement", rel_error(to_numpy(y), y_loop), hi=1e-5, fmt=".1e")

# %% [markdown]
# ## Figures
#
# A 5x5 image of pixel numbers and its im2col matrix, and a test digit through three hand-set kernels.

# %%
section("figures")
img = np.arange(25, dtype=np.float64).reshape(5, 5)
cols = to_numpy(im2col(xp.asarray(img).reshape(1, 1, 5, 5), 3, 3, 1, 1))  # (9, 9)
fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.8), gridspec_kw={"width_ratios": [1, 1.3]})
axes[0].imshow(img, cmap="viridis")
for (i, j), v in np.ndenumerate(img):
    axes[0].text(j, i, f"{v:.0f}", ha="center", va="center", color="w", fontsize=8)
axes[0].set_title("a 5x5 image (pixel numbers)", fontsize=9)
axes[1].imshow(cols, cmap="viridis")
for (i, j), v in np.ndenumerate(cols):
    axes[1].text(j, i, f"{v:.0f}", ha="center", va="center", color="w", fontsize=7)
axes[1].set_title("im2col, 3x3 kernel: one column per output pixel (9 x 9)", fontsize=9)
axes[1].set_xlabel("output pixel")
axes[1].set_ylabel("kernel offset (i, j)")
for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
lesson.savefig(fig, "im2col", "a small image and its im2col matrix")

digit, _ = _common.mnist("test", 1, xp)
kernels = {
    "vertical edges": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
    "horizontal edges": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
    "blur": [[1 / 9] * 3] * 3,
}
conv = Conv2d(1, 3, 3, padding=1, bias=False).to(xp)
conv.params["weight"][...] = xp.asarray(np.array(list(kernels.values()), dtype=np.float32)[:, None])
maps = to_numpy(conv.forward(digit))[0]  # (3, 28, 28)
fig, axes = plt.subplots(1, 4, figsize=(10, 2.8))
axes[0].imshow(to_numpy(digit)[0, 0], cmap="gray")
axes[0].set_title("input", fontsize=9)
for ax, (name, m) in zip(axes[1:], zip(kernels, maps)):
    lim = float(np.abs(m).max())
    ax.imshow(m, cmap="gray" if name == "blur" else "RdBu_r", vmin=0 if name == "blur" else -lim, vmax=lim)
    ax.set_title(name, fontsize=9)
for ax in axes:
    ax.axis("off")
lesson.savefig(fig, "edge_filters", "a digit through three hand-set 3x3 kernels")

# %%
lesson.done()
