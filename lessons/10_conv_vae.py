# %% [markdown]
# # Lesson 10: the seed study's convolutional VAE, layer by layer with shapes, and a short training run.
#
# ## The idea
#
# `minivae.models.conv_vae` rebuilds the Keras model of the study this project started from, layer for
# layer, including Keras's "same" padding (lessons 4 and 5 explain the sizes). This lesson prints it with
# every shape, parameter count and multiply-add count, trains it briefly with the study's own settings,
# and looks inside: dying bottleneck units, and the checkerboard that lesson 5 predicts for a kernel-3,
# stride-2 transposed convolution.
#
# ## What to look at
#
# - the shape table: each layer's output shape, parameters and multiply-adds per image;
# - the loss per epoch (in the seed's units) and the live bottleneck units per epoch: with the seed's
#   ReLU about a third survive; `--bottleneck leaky_relu` keeps every unit trainable;
# - the test -ELBO, about twice lesson 9's, and the three reasons for it (below);
# - `10_feature_maps.png`: one digit through the trained network, a few channels of each stage; its last
#   row, the decoder's first transposed convolution averaged over channels and images, is a checkerboard;
# - `10_reconstructions.png`, and per-digit PSNR against the seed study's published numbers (its full run
#   trained 15 epochs on 48,000 images, so expect ours to be lower in the default mode).
#
# ## The architecture
#
#     encoder  (1,28,28) -> Conv 1->32 3x3 pad 1 -> ReLU                          (32,28,28)
#              -> ZeroPad2d (0,1,0,1) -> Conv 32->64 3x3 stride 2 -> ReLU         (64,14,14)
#              -> Conv 64->64 3x3 pad 1 -> ReLU -> Conv 64->64 3x3 pad 1 -> ReLU  (64,14,14)
#              -> Flatten (12,544) -> Linear 12,544->32 -> ReLU                   (32,)   the bottleneck
#     heads    fc_mu, fc_logvar: Linear 32->latent
#     decoder  z -> Linear latent->12,544 -> ReLU -> Reshape                      (64,14,14)
#              -> ConvTranspose 64->32 3x3 stride 2 (29x29) -> keep [0,28) -> ReLU (32,28,28)
#              -> ConvTranspose 32->1 3x3 pad 1                                   (1,28,28) logits
#
# 714,559 parameters at latent 15, almost all of them in the two 12,544-wide Linear layers; but almost
# all of the arithmetic is in the convolutions on 14x14 and 28x28 maps: 35 times the MLP's multiply-adds
# per image, which is why it trains some 30-40 times slower per image on a CPU (and gains far more from a
# GPU, lesson 14).

# %%
import dataclasses
import re

import _common
import matplotlib.pyplot as plt
import numpy as np
from _common import expect, section

from minivae.analysis.evaluate import evaluate, seed_reference
from minivae.analysis.figures import image_rows, loss_curves
from minivae.backend import to_numpy
from minivae.models import build_model
from minivae.nn import Conv2d, ConvTranspose2d, Linear, sigmoid
from minivae.training.config import PRESETS, TrainConfig
from minivae.training.loop import train


def add_args(p) -> None:
    p.add_argument(
        "--bottleneck", default="relu", choices=("relu", "leaky_relu"),
        help="activation of the 32-unit bottleneck: relu (the seed's) or leaky_relu (cannot die)",
    )  # fmt: skip


lesson = _common.setup("10_conv_vae", add_args=add_args)
xp = lesson.xp
bottleneck = lesson.args.bottleneck

# %% [markdown]
# ## The shape table
#
# A Linear layer does in x out multiply-adds per image. A convolution does C_in kH kW of them for every
# output pixel of every output channel; a transposed convolution scatters C_out kH kW products from every
# input pixel (lesson 5), the same count read the other way.

# %%


def mult_adds(layer, x_in, y_out) -> int:
    """Multiply-adds per image of a layer's forward (0 for layers without weights)."""
    if isinstance(layer, Linear):
        return layer.in_features * layer.out_features
    if isinstance(layer, Conv2d):  # every output pixel: C_in * kH * kW per output channel
        return int(np.prod(y_out.shape[1:])) * int(np.prod(layer.params["weight"].shape[1:]))
    if isinstance(layer, ConvTranspose2d):  # every input pixel scatters C_out * kH * kW products
        return int(np.prod(x_in.shape[1:])) * int(np.prod(layer.params["weight"].shape[1:]))
    return 0


def short(layer) -> str:
    """The layer's repr with PyTorch's keyword names shortened: Conv2d(1, 32, k=(3, 3), s=(1, 1), p=(1, 1))."""
    names = {"kernel_size": "k", "stride": "s", "padding": "p", "output_padding": "op"}
    text = re.sub(r"(in|out)_features=", "", repr(layer))
    return re.sub(r"(\w+)=", lambda m: names.get(m.group(1), m.group(1)) + "=", text)


def shape_table(model, x) -> int:
    """Print each layer with its output shape, parameters and multiply-adds; return total multiply-adds."""
    rows, total = [("input", "", str(tuple(x.shape[1:])), "", "")], 0

    def row(name, layer, h_in):
        nonlocal total
        h_out = layer.forward(h_in)
        ops = mult_adds(layer, h_in, h_out)
        total += ops
        params = layer.num_parameters()
        rows.append((name, short(layer), str(tuple(h_out.shape[1:])), f"{params or ''}", f"{ops or ''}"))
        return h_out

    h = x
    for i, layer in enumerate(model.encoder.layers):
        h = row(f"encoder.{i}", layer, h)
    mu = row("fc_mu", model.fc_mu, h)
    row("fc_logvar", model.fc_logvar, h)
    h = mu
    for i, layer in enumerate(model.decoder.layers):
        h = row(f"decoder.{i}", layer, h)
    w = max(len(r[1]) for r in rows)
    print(f"   {'name':11s} {'layer':{w}s} {'output shape':>14s} {'params':>8s} {'mult-adds':>10s}")
    for name, desc, shape, params, ops in rows:
        print(f"   {name:11s} {desc:{w}s} {shape:>14s} {params:>8s} {ops:>10s}")
    return total


section("the seed study's convolutional VAE, latent 15")
model = build_model("conv", 15, bottleneck=bottleneck, seed=lesson.seed).to(xp)
x, _ = _common.mnist("test", 2, xp)
total = shape_table(model, x)
print(f"   parameters: {model.num_parameters():,}   (expect exactly 714,559)")
print(f"   multiply-adds per image, forward: {total / 1e6:.1f} million (the MLP of lesson 9: 0.65 million)")

# %% [markdown]
# ## Two things to notice before training
#
# - The encoder squeezes everything through 32 ReLU units before mu and logvar. A ReLU unit whose input
#   is negative for every image outputs 0 and passes no gradient, so nothing in the loss moves its own
#   weights and bias (Adam's momentum carries them on for a few dozen steps, then stops). It is not
#   dead for good: the convolutions below it keep learning through the other units, and if their
#   change lifts its input above 0 for some image, it gets gradient again. That is rare, so the count of
#   live units mostly falls; with few left the code has fewer than 32 numbers to work with, whatever
#   the latent size. minivae counts the units positive for some image in each epoch ("alive_units") and
#   offers a LeakyReLU bottleneck (preset seed-leaky), whose units always pass 1% of the gradient.
# - The seed's loss form (lesson 7): pixel-mean BCE plus beta_seed = 0.0005 times the mean KL term, which
#   is a beta-VAE with effective beta 2 * 784 * 0.0005 / 15 = 0.052 in standard units: information is
#   almost free, so this model buys a large KL for a small gain in reconstruction.
#
# ## The run
#
# The default trains for three epochs on 2,400 images with `minivae.training.loop.train` (the loop of
# lesson 9 plus a validation split carved from the training set, checkpoints and early stopping) and the
# seed study's settings (batch 32, Keras-style Adam, grey-level pixels as the BCE targets, as the study
# had them, so that its PSNR can be compared). That is about 225 steps, against lesson 9's 1,400 steps of
# four times the batch: the convolutions make each image cost 35 times as much. `--full` runs the seed
# protocol itself: 48,000 / 12,000 images, 15 epochs with early stopping, about an hour and a half on a
# 2-core CPU, a few minutes on a GPU (`--backend cupy`).

# %%
section("a short run with the seed study's settings (minivae.training.loop.train)")
overrides = lesson.pick(
    smoke=dict(train_limit=64, epochs=1, test_limit=32),
    default=dict(train_limit=2400, epochs=3, test_limit=500),
    full=dict(),
)
preset = PRESETS["seed"] | {"bottleneck": bottleneck}
cfg = TrainConfig(**preset, seed=lesson.seed, backend=lesson.backend, tsne_points=0)
cfg = dataclasses.replace(cfg, **overrides)
if lesson.mode != "full":
    cfg.patience = 0  # too few epochs for early stopping to mean anything
shown = ", ".join(f"{k}={v}" for k, v in cfg.to_dict().items() if k in preset or k in overrides)
print(f"   config: {shown}")
model, data, history = train(cfg, lesson.run_dir("seed_conv"), progress=False)
last = history[-1]
print(f"   trained on {len(data.x_train)} images, validated on {len(data.x_val)} held out from them")
expect("validation loss, seed units (the seed's own run ended near 0.093)", float(last["val_loss"]),
       *lesson.pick((0.1, 0.75), (0.18, 0.24), (0.085, 0.11)), ".4f")  # fmt: skip
alive = [int(r["alive_units"]) for r in history]
print(f"   live bottleneck units per epoch: {alive} of 32")
if bottleneck == "relu":
    print("   (units below 0 for every image get no gradient of their own; try --bottleneck leaky_relu)")
else:
    print(
        "   (a LeakyReLU unit below 0 for every image still passes 1% of the gradient, so it can come back;"
    )
    print("    the count is of units positive for some image, not of units that can learn)")
path = loss_curves(
    {"conv VAE": history}, lesson.figure("loss_curves"), "(seed form: pixel-mean BCE + 0.0005 KL)"
)
_common.saved(path, "train and validation loss per epoch, seed units")

# %% [markdown]
# ## The same model in lesson 9's units
#
# On the test images, the negative ELBO at beta = 1 in nats per image. Lesson 9's MLP ends near 110 on
# binarised digits; this model scores about twice that, for three reasons, each printed below:
#
# 1. it has trained far less: about 7,000 images seen against lesson 9's 180,000;
# 2. it was trained at effective beta 0.052, so it pays little for KL and spends 50-70 nats of it, which
#    the beta = 1 ELBO charges in full (lesson 9's KL is about 25);
# 3. its targets are grey levels. BCE against a grey level q cannot go below the pixel's own entropy
#    H(q) = -q ln q - (1-q) ln(1-q), 45.5 nats per image summed over MNIST's test set, so here the
#    -ELBO is a loss with that floor, not a bound on a likelihood (lesson 9 trains on binary images for
#    that reason), and its BCE part is best read as its excess over the floor.

# %%
section("on test images, in standard units")
ev = evaluate(model, data.x_test, data.y_test, seed=lesson.seed)
m = ev.metrics
q = np.clip(to_numpy(data.x_test).astype(np.float64), 1e-12, 1 - 1e-12)
floor = float((-(q * np.log(q) + (1 - q) * np.log(1 - q))).sum(axis=(1, 2, 3)).mean())
expect(
    "-ELBO at beta = 1 (nats per image)",
    m["neg_elbo"],
    *lesson.pick((150, 600), (190, 230), (95, 140)),
    ".1f",
)
print(f"   = BCE {m['recon_nats']:.1f} + KL {m['kl_nats']:.1f}")
expect(
    "KL (nats per image; lesson 9's is about 25)",
    m["kl_nats"],
    *lesson.pick((0, 100), (50, 70), (30, 70)),
    ".1f",
)
print(f"   the BCE floor of these {len(q)} grey-level test images: {floor:.1f} nats per image")
print(f"   BCE above its floor: {m['recon_nats'] - floor:.1f} nats per image")
ref = seed_reference(15)
ours = {r["digit"]: r["psnr_sampled"] for r in ev.per_digit}
print("   per-digit PSNR (dB, sampled z):  digit  ours   seed study (full run)")
for d in range(10):
    print(f"                                     {d}   {ours.get(d, float('nan')):5.1f}   {ref[d]:5.1f}")
expect(
    "mean PSNR over digits (seed study: 20.1)",
    m["psnr_sampled_digit_mean"],
    *lesson.pick((5, 25), (12, 15), (18, 22)),
    ".1f",
)

# %% [markdown]
# ## The checkerboard lesson 5 predicted
#
# decoder.3 is a 3x3 transposed convolution with stride 2: each input pixel stamps a 3x3 kernel, and the
# stamps of neighbours 2 apart overlap by one row. Away from the border, an output pixel at (even, even)
# receives 2 x 2 = 4 kernel taps, one at (even, odd) or (odd, even) receives 2, and one at (odd, odd)
# receives 1. So its output carries a period-2 pattern unless the weights learn to cancel it: below,
# the mean |output| over the interior, channels and test images, in each of the four parity classes
# (lesson 5's tap counts are 4 : 2 : 2 : 1; sums of 4 and of 1 terms of mixed sign give a ratio nearer
# sqrt(4) = 2 than 4 between the first and the last). The last layer, a
# stride-1 transposed convolution, mixes each pixel with its neighbours and smooths most of it away in
# the logits.

# %%
section("the checkerboard in the decoder")


def parity_means(h) -> dict[str, float]:
    """Mean |h| over images, channels and the interior rows/cols 1..26, by (row, col) parity."""
    a = np.abs(to_numpy(h)[:, :, 1:27, 1:27])  # index 0 of this crop is row/col 1 (odd)
    return {"even,even": a[:, :, 1::2, 1::2].mean(), "even,odd": a[:, :, 1::2, 0::2].mean(),
            "odd,even": a[:, :, 0::2, 1::2].mean(), "odd,odd": a[:, :, 0::2, 0::2].mean()}  # fmt: skip


x_cb = data.x_test[: lesson.pick(smoke=16, default=200, full=200)]
h = model.encode(x_cb)[0]
outs = {}
for i, layer in enumerate(model.decoder.layers):
    h = layer.forward(h)
    outs[i] = h
for i, what in ((3, "decoder.3 (ConvTranspose stride 2)"), (6, "decoder.6 (the logits)")):
    pm = parity_means(outs[i])
    print(f"   {what:36s} " + "  ".join(f"{k} {v:6.3f}" for k, v in pm.items()))
    if i == 3:
        ratio = pm["even,even"] / pm["odd,odd"]
        expect("decoder.3: |output| at (even, even) / at (odd, odd)", ratio,
               *lesson.pick((0.5, 5), (1.5, 3.5), (None, None)), ".2f")  # fmt: skip
checker = to_numpy(outs[3])[:, :, :28, :28].__abs__().mean(axis=(0, 1))  # (28, 28)

# %%
section("figures")
k = lesson.pick(smoke=4, default=10, full=10)  # images per row
rows = {
    "test digits": to_numpy(data.x_test[:k])[:, 0],
    "reconstructions (z = mu)": to_numpy(model.reconstruct(data.x_test[:k]))[:, 0],
}
_common.saved(image_rows(rows, lesson.figure("reconstructions")), "test digits and reconstructions")
digit = data.x_test[:1]
stages = {}
h = digit
for i, layer in enumerate(model.encoder.layers):
    h = layer.forward(h)
    if i in (1, 4, 8):
        stages[f"encoder.{i} {tuple(h.shape[1:])}"] = to_numpy(h)[0]
h = model.encode(digit)[0]
for i, layer in enumerate(model.decoder.layers):
    h = layer.forward(h)
    if i == 5:
        stages[f"decoder.{i} {tuple(h.shape[1:])}"] = to_numpy(h)[0]
stages["output sigmoid(logits)"] = to_numpy(sigmoid(h))[0]
n_ch = lesson.pick(smoke=3, default=6, full=6)
fig, axes = plt.subplots(len(stages) + 2, n_ch, figsize=(n_ch * 1.3, (len(stages) + 2) * 1.45))
for ax in axes.ravel():
    ax.axis("off")
axes[0, 0].imshow(to_numpy(digit)[0, 0], cmap="gray")
axes[0, 0].set_title("input", fontsize=7, loc="left")
for r, (name, maps) in enumerate(stages.items(), start=1):
    for c in range(min(n_ch, len(maps))):
        axes[r, c].imshow(maps[c], cmap="gray" if len(maps) == 1 else "viridis")
    axes[r, 0].set_title(name, fontsize=7, loc="left")
axes[-1, 0].imshow(checker, cmap="magma")
axes[-1, 1].imshow(checker[8:16, 8:16], cmap="magma", interpolation="nearest")
axes[-1, 0].set_title(
    "decoder.3 |h|, mean over channels and images; right: its centre 8x8", fontsize=7, loc="left"
)
lesson.savefig(
    fig, "feature_maps", "a digit through the trained encoder and decoder; the decoder's checkerboard"
)

# %%
lesson.done()
