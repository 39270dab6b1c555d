# %% [markdown]
# # Lesson 5: transposed convolution. Upsampling, why it is the convolution's backward, and its output size
#
# ## The idea
# A decoder has to go from a small map back up to 28 x 28. A transposed convolution does it by scattering:
# each input pixel x[n, c, h, w] adds the stamp x[n, c, h, w] * W[c] (a kH x kW patch per output channel)
# onto the output at (s h - p, s w - p). With stride 2 the stamps land two pixels apart, so the output is
# about twice as large:
#
#     H_out = (H - 1) s - 2p + kH + output_padding          weight: (C_in, C_out, kH, kW)
#
# padding p trims p rows from each side of the full (H - 1) s + kH result; output_padding (< s) adds rows at
# the end, to pick between the several input sizes a stride-s convolution maps to the same output size.
#
# ## What to look at
# - the one-pixel stamp and the size table (formula against the layer);
# - the dot-product test and ConvTranspose2d.forward == Conv2d.backward, at stride 2 and at stride 1
#   (expect ~1e-16);
# - at stride 1, the transposed convolution equals a convolution with the flipped kernel (expect ~1e-16);
# - the overlap counts: kernel 3 / stride 2 alternates 2, 1, 2, 1 (a checkerboard); kernel 4 / stride 2 gives
#   2 everywhere except the first and last row, which get 1;
# - 05_transposed.png: the stamp, the checkerboard of kernel 3 / stride 2, kernel 4's even interior and its
#   thin border, and a digit downsampled to 14 x 14 and brought back to 28 x 28 by a bilinear transposed
#   convolution.

# %%
from __future__ import annotations

import _common
import matplotlib.pyplot as plt
import numpy as np
from _common import expect, section

from minivae.backend import to_numpy
from minivae.nn import Conv2d, ConvTranspose2d, ZeroPad2d
from minivae.nn.conv import conv_transpose_output_size, conv_transpose_stride1
from minivae.nn.gradcheck import check_layer, rel_error
from minivae.nn.reference import conv_transpose2d_loop

lesson = _common.setup("05_transposed_convolution")
xp = lesson.xp
rng = np.random.default_rng(lesson.seed)

# %% [markdown]
# ## One pixel in, one stamp out
# A 3 x 3 input with a single 1 in the middle, through a kernel holding 1..9 at stride 2: the output is the
# kernel itself, placed at (2 * 1, 2 * 1) of a 7 x 7 output ((3 - 1) 2 + 3 = 7).

# %%
section("one pixel in, one stamp out (kernel 3, stride 2)")
up = ConvTranspose2d(1, 1, 3, stride=2, bias=False).to(xp)
up.params["weight"][...] = xp.arange(1, 10, dtype=xp.float32).reshape(1, 1, 3, 3)
x = xp.zeros((1, 1, 3, 3), dtype=xp.float32)
x[0, 0, 1, 1] = 1.0
stamp = to_numpy(up.forward(x))[0, 0]
print(f"   input 3x3 with a single 1 in the middle -> output {stamp.shape}: the kernel, placed at (2*1, 2*1)")
print("\n".join("      " + " ".join(f"{v:2.0f}" for v in row) for row in stamp))

# %% [markdown]
# ## Output sizes
# The formula against what the layer produces, for the settings a decoder uses. output_padding must stay
# below the stride (it only chooses among sizes the stride makes ambiguous), and the layer refuses more.

# %%
section("output size: (H - 1) s - 2p + k + output_padding")
for h, k, s, p, op in [
    (14, 3, 2, 0, 0),
    (14, 3, 2, 1, 0),
    (14, 3, 2, 1, 1),
    (14, 4, 2, 1, 0),
    (28, 3, 1, 1, 0),
]:
    layer = ConvTranspose2d(1, 1, k, stride=s, padding=p, output_padding=op).to(xp)
    got = layer.forward(xp.zeros((1, 1, h, h), dtype=xp.float32)).shape[2]
    formula = conv_transpose_output_size(h, k, s, p, op)
    print(f"   H={h} k={k} s={s} p={p} output_padding={op}:  formula {formula}, layer {got}")
try:
    ConvTranspose2d(1, 1, 3, stride=2, output_padding=2)
except ValueError as e:
    print(f"   output_padding=2 with stride 2 -> ValueError: {e}")

# %% [markdown]
# ## Why "transposed"
# A convolution is linear in x: y = A x for some big sparse matrix A. Its backward computes dx = A^T dy. A
# transposed convolution with the same weight computes exactly A^T: the scatter above is the convolution's
# backward run forwards. So, for any x and y of matching shapes,
#
#     <Conv2d(x), y> = <x, ConvTranspose2d(y)>         (the "dot-product test" for an adjoint)
#
# and ConvTranspose2d.forward(y) equals Conv2d.backward(y). In minivae, ConvTranspose2d.forward is always
# col2im(W_mat^T @ x_mat), at every stride. Conv2d.backward computes the same col2im when its stride is
# larger than 1; at stride 1 (both axes) it takes another route to the same numbers, the flipped-kernel
# convolution of the next section. So the check below runs at stride 2, where both sides are col2im, and at
# stride 1, where one side is col2im and the other the flipped-kernel convolution.
# ConvTranspose2d's own backward is a plain convolution, im2col and a matrix product.

# %%
section("the transposed convolution is the convolution's adjoint (float64, no bias)")
for stride, size_in, size_out in ((2, 9, 5), (1, 9, 9)):
    conv = Conv2d(2, 3, 3, stride=stride, padding=1, bias=False, rng=rng, dtype="float64").to(xp)
    convt = ConvTranspose2d(3, 2, 3, stride=stride, padding=1, bias=False, dtype="float64").to(xp)
    # both weights (3, 2, 3, 3): (C_out of the conv, C_in of the conv, k, k)
    convt.params["weight"][...] = conv.params["weight"]
    x = xp.asarray(rng.standard_normal((2, 2, size_in, size_in)))
    y = xp.asarray(rng.standard_normal((2, 3, size_out, size_out)))
    lhs = float((conv.forward(x) * y).sum())
    rhs = float((x * convt.forward(y)).sum())
    print(f"   stride {stride}: x {tuple(x.shape)}, y {tuple(y.shape)}")
    expect(
        "   dot-product test |<conv(x), y> - <x, convT(y)>| / |<.>|",
        abs(lhs - rhs) / abs(lhs),
        hi=1e-12,
        fmt=".1e",
    )
    expect(
        "   ConvTranspose2d.forward(y) vs Conv2d.backward(y)",
        rel_error(convt.forward(y), conv.backward(y)),
        hi=1e-12,
        fmt=".1e",
    )

# %% [markdown]
# ## At stride 1: a convolution with the flipped kernel
# At stride 1 the scatter is itself a convolution. Output pixel (h, w) collects x[h + p - i, w + p - j] W[i, j]
# over the kernel offsets (i, j); renaming i' = k - 1 - i turns that into a cross-correlation of x, padded
# by k - 1 - p, with the kernel flipped in both axes and its two channel axes swapped:
#
#     ConvTranspose2d(x; W) = Conv2d(pad(x, k - 1 - p); flip(W).swap_channels)          (stride 1)
#
# So a convolution's input gradient *is* a convolution, with the flipped kernel.
# minivae.nn.conv.conv_transpose_stride1 writes it out. Conv2d.backward calls it when the stride is 1 in
# both axes (one im2col and one product instead of a product and kH kW strided adds); at any larger stride
# the stamps land s pixels apart and the identity needs the input spread out with zeros first, so
# Conv2d.backward uses col2im there. ConvTranspose2d.forward never calls it. Here it is checked against the
# transposed convolution's col2im.

# %%
section("at stride 1: a convolution with the flipped kernel (float64, no bias)")
convt1 = ConvTranspose2d(3, 2, 3, padding=1, bias=False, rng=rng, dtype="float64").to(xp)
y1 = xp.asarray(rng.standard_normal((2, 3, 9, 9)))
flipped = conv_transpose_stride1(y1, convt1.params["weight"], (1, 1))  # im2col and one product
expect(
    "ConvTranspose2d.forward(y) (col2im) vs the flipped-kernel convolution",
    rel_error(convt1.forward(y1), flipped),
    hi=1e-12,
    fmt=".1e",
)

# %% [markdown]
# ## Checked against loops, and by finite differences
# minivae.nn.reference.conv_transpose2d_loop scatters one input pixel at a time, the definition written as
# loops. The fast layer must agree with it for every stride, padding and output_padding, and its backward
# must pass a float64 gradient check (input, weight and bias).

# %%
section("fast against the loop version, and the backward by finite differences")
for s, p, op in [(1, 0, 0), (2, 0, 0), (2, 1, 1), (3, 1, 2)]:
    layer = ConvTranspose2d(3, 2, 3, stride=s, padding=p, output_padding=op, rng=rng, dtype="float64").to(xp)
    xin = xp.asarray(rng.standard_normal((2, 3, 4, 4)))
    w, b = to_numpy(layer.params["weight"]), to_numpy(layer.params["bias"])
    err = rel_error(to_numpy(layer.forward(xin)), conv_transpose2d_loop(to_numpy(xin), w, b, s, p, op))
    expect(f"stride {s} padding {p} output_padding {op}: forward vs loop", err, hi=1e-12, fmt=".1e")
errs = check_layer(layer, xin)
expect("gradient check (worst of input, weight, bias)", max(errs.values()), hi=1e-8, fmt=".1e")

# %% [markdown]
# ## Keras versus PyTorch
# The seed study's decoder upsamples 14 -> 28 with Keras' Conv2DTranspose(3, strides=2, padding="same").
# Keras computes the full 29-wide result and keeps rows [0, 28). PyTorch's closest setting,
# ConvTranspose2d(3, stride=2, padding=1, output_padding=1), keeps rows [1, 29): the same numbers shifted by one
# pixel. minivae reproduces Keras with padding 0 and a crop, ZeroPad2d((0, -1, 0, -1)).

# %%
section("Keras' 'same' upsampling 14 -> 28 against PyTorch's padding=1, output_padding=1")
w = rng.standard_normal((4, 1, 3, 3))
keras = ConvTranspose2d(4, 1, 3, stride=2, bias=False, dtype="float64").to(xp)  # 14 -> 29, then crop
torch_like = ConvTranspose2d(4, 1, 3, stride=2, padding=1, output_padding=1, bias=False, dtype="float64").to(
    xp
)
keras.params["weight"][...] = xp.asarray(w)
torch_like.params["weight"][...] = xp.asarray(w)
h = xp.asarray(rng.standard_normal((1, 4, 14, 14)))
y_keras = ZeroPad2d((0, -1, 0, -1)).forward(keras.forward(h))  # keep rows/cols [0, 28)
y_torch = torch_like.forward(h)  # rows/cols [1, 29) of the full result
print(f"   shapes: Keras-style {tuple(y_keras.shape)}, PyTorch-style {tuple(y_torch.shape)}")
expect("max |difference| as they stand", float(abs(y_keras - y_torch).max()), lo=0.1, fmt=".2f")
shifted = float(abs(y_keras[..., 1:, 1:] - y_torch[..., :-1, :-1]).max())
expect("max |difference| after shifting PyTorch's by one pixel", shifted, hi=1e-12, fmt=".1e")

# %% [markdown]
# ## Checkerboards, and the border
# Count how many stamps land on each output pixel: feed a constant input of ones through a kernel of ones.
# Along one axis, output row o receives a stamp from every input row h with 0 <= o + p - s h <= k - 1.
#
# With kernel 3 and stride 2 that is 2 stamps on every other row and 1 on the rows between, so a constant
# input gives a non-constant output: the checkerboard artifacts of GAN and VAE decoders (in 2-D the counts
# multiply: 4, 2, 1).
#
# A kernel divisible by the stride (4 with stride 2) overlaps evenly in the interior: every row there gets
# k / s = 2 stamps. Not at the border. With padding 1 the first kept row (o = 0, full-result row 1) is
# reached only by input row 0, and the last only by the last input row, so the border rows get one stamp,
# half the interior, and the corners a quarter. A decoder built from such layers has a frame one pixel wide
# that its weights must learn to compensate (on MNIST it is black anyway, so it hardly matters there).

# %%
section("how many stamps land on each output pixel (constant input of ones, kernel of ones, stride 2)")
counts = {}
for k, p in ((3, 0), (4, 1)):
    layer = ConvTranspose2d(1, 1, k, stride=2, padding=p, bias=False).to(xp)
    layer.params["weight"][...] = 1.0
    counts[k] = to_numpy(layer.forward(xp.ones((1, 1, 6, 6), dtype=xp.float32)))[0, 0]
    along = " ".join(f"{v:.0f}" for v in counts[k][0])  # the first row: the other axis's count is 1 there
    print(f"   kernel {k}, padding {p}: output {counts[k].shape}; stamps along one axis: {along}")
c4 = counts[4]
spread = float(np.ptp(c4[1:-1, 1:-1]))
expect("kernel 4: max - min over the interior (even overlap)", spread, 0, 0, ".0f")
expect("kernel 4: edge pixel / interior pixel", float(c4[0, 3] / c4[3, 3]), 0.5, 0.5, ".2f")
expect("kernel 4: corner pixel / interior pixel", float(c4[0, 0] / c4[3, 3]), 0.25, 0.25, ".2f")
expect(
    "kernel 3: interior max / min (a checkerboard)",
    float(counts[3][1:-1, 1:-1].max() / counts[3][1:-1, 1:-1].min()),
    4,
    4,
    ".0f",
)

# %% [markdown]
# ## A digit brought back up
# Keep every other pixel of a digit (14 x 14) and upsample it with kernel 4, stride 2, padding 1 and the
# bilinear kernel (the classic FCN initialisation): a smooth 28 x 28 digit. Along one axis the kernel is
# t = (1/4, 3/4, 3/4, 1/4); an interior pixel gets two stamps, at offsets i and i + 2, whose weights sum to
# t_0 + t_2 = t_1 + t_3 = 1, so a constant image stays constant there. A border pixel gets only the stamp at
# offset 1 (or 2): weight 3/4 on an edge, (3/4)^2 = 9/16 at a corner. The border is dimmer by a quarter.


# %%
def bilinear_kernel(k: int) -> np.ndarray:
    """The k x k kernel of bilinear upsampling by k // 2 (the classic FCN initialisation)."""
    f = (k + 1) // 2
    center = f - 1 if k % 2 == 1 else f - 0.5
    t = 1 - np.abs(np.arange(k) - center) / f
    return np.outer(t, t)


digit, _ = _common.mnist("test", 1, xp)
small = digit[:, :, ::2, ::2]  # (1, 1, 14, 14): every other pixel
bil = ConvTranspose2d(1, 1, 4, stride=2, padding=1, bias=False).to(xp)  # 14 -> 28
bil.params["weight"][...] = xp.asarray(bilinear_kernel(4).astype(np.float32))
big = to_numpy(bil.forward(small))[0, 0]
flat = to_numpy(bil.forward(xp.ones((1, 1, 14, 14), dtype=xp.float32)))[0, 0]
print(
    f"   bilinear kernel 4: weights sum to {bilinear_kernel(4).sum():.0f}; a constant 1 upsamples to "
    f"{flat[5, 5]:.2f} inside, {flat[0, 5]:.2f} on an edge, {flat[0, 0]:.2f} at a corner"
)

panels = [
    ("one pixel, kernel 1..9, stride 2", stamp, "magma"),
    ("constant input, kernel 3 of ones, stride 2:\na checkerboard", counts[3], "magma"),
    (
        "constant input, kernel 4 of ones, stride 2, pad 1:\neven inside, half at the border",
        counts[4],
        "magma",
    ),
    ("digit kept at 14x14", to_numpy(small)[0, 0], "gray"),
    ("upsampled to 28x28\n(bilinear kernel 4, stride 2)", big, "gray"),
]
fig, axes = plt.subplots(1, 5, figsize=(15, 3.4))
for ax, (title, img, cmap) in zip(axes, panels):
    im = ax.imshow(img, cmap=cmap)
    if cmap == "magma":
        fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title, fontsize=7.5)
    ax.axis("off")
lesson.savefig(
    fig, "transposed", "the stamp, checkerboard vs even overlap and its border, a digit upsampled 14 -> 28"
)

# %%
lesson.done()
