"""Lesson 5: transposed convolution. Upsampling, why it is the convolution's backward, and its output size.

The idea
--------
A decoder has to go from a small map back up to 28 x 28. A transposed convolution does it by scattering:
each input pixel x[n, c, h, w] adds the stamp x[n, c, h, w] * W[c] (a kH x kW patch per output channel)
onto the output at (s h - p, s w - p). With stride 2 the stamps land two pixels apart, so the output is
about twice as large:

    H_out = (H - 1) s - 2p + kH + output_padding          weight: (C_in, C_out, kH, kW)

padding p trims p rows from each side of the full (H - 1) s + kH result; output_padding (< s) adds rows at
the end, to pick between the several input sizes a stride-s convolution maps to the same output size.

Why "transposed"
----------------
A convolution is linear in x: y = A x for some big sparse matrix A. Its backward computes dx = A^T dy. A
transposed convolution with the same weight computes exactly A^T: the scatter above is the convolution's
backward run forwards. So, for any x and y of matching shapes,

    <Conv2d(x), y> = <x, ConvTranspose2d(y)>         (the "dot-product test" for an adjoint)

and ConvTranspose2d.forward(y) equals Conv2d.backward(y). In minivae both are col2im(W_mat^T @ ...), and
ConvTranspose2d's backward is a plain convolution, im2col and a matrix product.

At stride 1 the scatter is itself a convolution. Output pixel (h, w) collects x[h + p - i, w + p - j] W[i, j]
over the kernel offsets (i, j); renaming i' = k - 1 - i turns that into a cross-correlation of x, padded
by k - 1 - p, with the kernel flipped in both axes and its two channel axes swapped:

    ConvTranspose2d(x; W) = Conv2d(pad(x, k - 1 - p); flip(W).swap_channels)          (stride 1)

So a convolution's input gradient *is* a convolution, with the flipped kernel.
minivae.nn.conv.conv_transpose_stride1 writes it out, and Conv2d.backward takes it at stride 1 (one
im2col and one product instead of a product and kH kW strided adds); this lesson checks it against the
transposed convolution's col2im.

Keras versus PyTorch
--------------------
The seed study's decoder upsamples 14 -> 28 with Keras' Conv2DTranspose(3, strides=2, padding="same").
Keras computes the full 29-wide result and keeps rows [0, 28). PyTorch's closest setting,
ConvTranspose2d(3, stride=2, padding=1, output_padding=1), keeps rows [1, 29): the same numbers shifted by one
pixel. minivae reproduces Keras with padding 0 and a crop, ZeroPad2d((0, -1, 0, -1)).

Checkerboards
-------------
With kernel 3 and stride 2, neighbouring stamps overlap on every other row and column, so a constant input
gives a non-constant output: the checkerboard artifacts of GAN and VAE decoders. A kernel divisible by the
stride (4 with stride 2) overlaps evenly.

What to look at
---------------
- the one-pixel stamp and the size table (formula against the layer);
- the dot-product test and ConvTranspose2d.forward == Conv2d.backward (expect ~1e-16);
- at stride 1, the transposed convolution equals a convolution with the flipped kernel (expect ~1e-16);
- 05_transposed.png: the stamp, the checkerboard of kernel 3 / stride 2, the even overlap of kernel 4,
  and a digit downsampled to 14 x 14 and brought back to 28 x 28 by a bilinear transposed convolution.
"""

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


def bilinear_kernel(k: int) -> np.ndarray:
    """The k x k kernel of bilinear upsampling by k // 2 (the classic FCN initialisation)."""
    f = (k + 1) // 2
    center = f - 1 if k % 2 == 1 else f - 0.5
    t = 1 - np.abs(np.arange(k) - center) / f
    return np.outer(t, t)


def run() -> None:
    lesson = _common.setup(__file__, __doc__)
    xp = lesson.xp
    rng = np.random.default_rng(lesson.seed)

    section("one pixel in, one stamp out (kernel 3, stride 2)")
    up = ConvTranspose2d(1, 1, 3, stride=2, bias=False).to(xp)
    up.params["weight"][...] = xp.arange(1, 10, dtype=xp.float32).reshape(1, 1, 3, 3)
    x = xp.zeros((1, 1, 3, 3), dtype=xp.float32)
    x[0, 0, 1, 1] = 1.0
    stamp = to_numpy(up.forward(x))[0, 0]
    print(
        f"   input 3x3 with a single 1 in the middle -> output {stamp.shape}: the kernel, placed at (2*1, 2*1)"
    )
    print("\n".join("      " + " ".join(f"{v:2.0f}" for v in row) for row in stamp))

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

    section("the transposed convolution is the convolution's adjoint (float64, no bias)")
    conv = Conv2d(2, 3, 3, stride=2, padding=1, bias=False, rng=rng, dtype="float64").to(xp)
    convt = ConvTranspose2d(3, 2, 3, stride=2, padding=1, bias=False, dtype="float64").to(xp)
    convt.params["weight"][...] = conv.params[
        "weight"
    ]  # both (3, 2, 3, 3): (C_out of conv, C_in of conv, k, k)
    x = xp.asarray(rng.standard_normal((2, 2, 9, 9)))
    y = xp.asarray(rng.standard_normal((2, 3, 5, 5)))
    lhs = float((conv.forward(x) * y).sum())
    rhs = float((x * convt.forward(y)).sum())
    expect(
        "dot-product test |<conv(x), y> - <x, convT(y)>| / |<.>|",
        abs(lhs - rhs) / abs(lhs),
        hi=1e-12,
        fmt=".1e",
    )
    conv.forward(x)
    expect(
        "ConvTranspose2d.forward(y) vs Conv2d.backward(y)",
        rel_error(convt.forward(y), conv.backward(y)),
        hi=1e-12,
        fmt=".1e",
    )

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

    section("fast against the loop version, and the backward by finite differences")
    for s, p, op in [(1, 0, 0), (2, 0, 0), (2, 1, 1), (3, 1, 2)]:
        layer = ConvTranspose2d(3, 2, 3, stride=s, padding=p, output_padding=op, rng=rng, dtype="float64").to(
            xp
        )
        xin = xp.asarray(rng.standard_normal((2, 3, 4, 4)))
        w, b = to_numpy(layer.params["weight"]), to_numpy(layer.params["bias"])
        err = rel_error(to_numpy(layer.forward(xin)), conv_transpose2d_loop(to_numpy(xin), w, b, s, p, op))
        expect(f"stride {s} padding {p} output_padding {op}: forward vs loop", err, hi=1e-12, fmt=".1e")
    errs = check_layer(layer, xin)
    expect("gradient check (worst of input, weight, bias)", max(errs.values()), hi=1e-8, fmt=".1e")

    section("Keras' 'same' upsampling 14 -> 28 against PyTorch's padding=1, output_padding=1")
    w = rng.standard_normal((4, 1, 3, 3))
    keras = ConvTranspose2d(4, 1, 3, stride=2, bias=False, dtype="float64").to(xp)  # 14 -> 29, then crop
    torch_like = ConvTranspose2d(
        4, 1, 3, stride=2, padding=1, output_padding=1, bias=False, dtype="float64"
    ).to(xp)
    keras.params["weight"][...] = xp.asarray(w)
    torch_like.params["weight"][...] = xp.asarray(w)
    h = xp.asarray(rng.standard_normal((1, 4, 14, 14)))
    y_keras = ZeroPad2d((0, -1, 0, -1)).forward(keras.forward(h))  # keep rows/cols [0, 28)
    y_torch = torch_like.forward(h)  # rows/cols [1, 29) of the full result
    print(f"   shapes: Keras-style {tuple(y_keras.shape)}, PyTorch-style {tuple(y_torch.shape)}")
    expect("max |difference| as they stand", float(abs(y_keras - y_torch).max()), lo=0.1, fmt=".2f")
    shifted = float(abs(y_keras[..., 1:, 1:] - y_torch[..., :-1, :-1]).max())
    expect("max |difference| after shifting PyTorch's by one pixel", shifted, hi=1e-12, fmt=".1e")

    section("figures")
    panels = [("one pixel, kernel 1..9, stride 2", stamp, "magma")]
    for k, p in ((3, 0), (4, 1)):
        layer = ConvTranspose2d(1, 1, k, stride=2, padding=p, bias=False).to(xp)
        layer.params["weight"][...] = 1.0
        ones = xp.ones((1, 1, 6, 6), dtype=xp.float32)
        title = f"constant input, kernel {k} of ones, stride 2" + (", padding 1" if p else "")
        panels.append((title, to_numpy(layer.forward(ones))[0, 0], "magma"))
    digit, _ = _common.mnist("test", 1, xp)
    small = digit[:, :, ::2, ::2]  # (1, 1, 14, 14): every other pixel
    bil = ConvTranspose2d(1, 1, 4, stride=2, padding=1, bias=False).to(xp)  # 14 -> 28
    bil.params["weight"][...] = xp.asarray(bilinear_kernel(4).astype(np.float32))
    panels.append(("digit kept at 14x14", to_numpy(small)[0, 0], "gray"))
    panels.append(
        ("upsampled to 28x28 (bilinear kernel 4, stride 2)", to_numpy(bil.forward(small))[0, 0], "gray")
    )
    fig, axes = plt.subplots(1, 5, figsize=(15, 3.2))
    for ax, (title, img, cmap) in zip(axes, panels):
        im = ax.imshow(img, cmap=cmap)
        if cmap == "magma":
            fig.colorbar(im, ax=ax, fraction=0.046)
        ax.set_title(title, fontsize=7.5)
        ax.axis("off")
    lesson.savefig(fig, "transposed", "the stamp, checkerboard vs even overlap, a digit upsampled 14 -> 28")


if __name__ == "__main__":
    _common.main(run)
