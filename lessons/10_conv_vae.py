"""Lesson 10: the seed study's convolutional VAE, layer by layer with shapes, and a short training run.

The architecture
----------------
minivae.models.conv_vae rebuilds the Keras model of the study this project started from, layer for layer,
including Keras' "same" padding (lessons 4 and 5 explain the sizes):

    encoder  (1,28,28) -> Conv 1->32 3x3 pad 1 -> ReLU                          (32,28,28)
             -> ZeroPad2d (0,1,0,1) -> Conv 32->64 3x3 stride 2 -> ReLU         (64,14,14)
             -> Conv 64->64 3x3 pad 1 -> ReLU -> Conv 64->64 3x3 pad 1 -> ReLU  (64,14,14)
             -> Flatten (12,544) -> Linear 12,544->32 -> ReLU                   (32,)   the bottleneck
    heads    fc_mu, fc_logvar: Linear 32->latent
    decoder  z -> Linear latent->12,544 -> ReLU -> Reshape                      (64,14,14)
             -> ConvTranspose 64->32 3x3 stride 2 (29x29) -> keep [0,28) -> ReLU (32,28,28)
             -> ConvTranspose 32->1 3x3 pad 1                                   (1,28,28) logits

714,559 parameters at latent 15, almost all of them in the two 12,544-wide Linear layers; but almost all of
the arithmetic is in the convolutions on 14x14 and 28x28 maps: 35 times the MLP's multiply-adds per image,
which is why it trains some 30-40 times slower per image on a CPU (and gains far more from a GPU, lesson 12).

Two things to notice:
- the encoder squeezes everything through 32 ReLU units before mu and logvar. A ReLU unit that is
  negative for every image passes no gradient and never recovers; if many die, the code has fewer
  than 32 numbers to work with, whatever the latent size. minivae counts live units ("alive_units")
  and offers a LeakyReLU bottleneck (preset seed-leaky) that cannot die;
- the seed's loss form (lesson 7): pixel-mean BCE plus beta_seed = 0.0005 times the mean KL term, which
  is a beta-VAE with effective beta 2 * 784 * 0.0005 / 15 = 0.052 in standard units.

The run
-------
The default trains for a couple of epochs on a few thousand images with minivae.training.loop.train (the loop
of lesson 8 plus validation, checkpoints and early stopping) and the seed study's settings (batch 32,
Keras-style Adam). --full runs the seed protocol itself: 48,000 / 12,000 images, 15 epochs with
early stopping, about an hour and a half on a 2-core CPU, a few minutes on a GPU (--backend cupy).

What to look at
---------------
- the shape table: each layer's output shape, parameters and multiply-adds per image;
- the loss per epoch (in the seed's units) and the live bottleneck units: with the seed's ReLU about a
  third survive the first epochs; --bottleneck leaky_relu keeps every unit trainable and ends lower;
- 10_feature_maps.png: one digit through the trained network, a few channels of each stage;
- 10_reconstructions.png, and per-digit PSNR against the seed study's published numbers (its full run
  trained far longer, so expect ours to be lower in the default mode).
"""

from __future__ import annotations

import dataclasses

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


def mult_adds(layer, x_in, y_out) -> int:
    """Multiply-adds per image of a layer's forward (0 for layers without weights)."""
    if isinstance(layer, Linear):
        return layer.in_features * layer.out_features
    if isinstance(layer, Conv2d):  # every output pixel: C_in * kH * kW per output channel
        return int(np.prod(y_out.shape[1:])) * int(np.prod(layer.params["weight"].shape[1:]))
    if isinstance(layer, ConvTranspose2d):  # every input pixel scatters C_out * kH * kW products
        return int(np.prod(x_in.shape[1:])) * int(np.prod(layer.params["weight"].shape[1:]))
    return 0


def shape_table(model, x) -> int:
    """Print each layer with its output shape, parameters and multiply-adds; return total multiply-adds."""
    total = 0
    print(f"   {'layer':60s} {'output shape':>14s} {'params':>9s} {'mult-adds':>11s}")
    print(f"   {'input':60s} {str(tuple(x.shape[1:])):>14s}")

    def row(name, layer, h_in):
        nonlocal total
        h_out = layer.forward(h_in)
        ops = mult_adds(layer, h_in, h_out)
        total += ops
        params = layer.num_parameters()
        shape = str(tuple(h_out.shape[1:]))
        print(f"   {name + ' ' + repr(layer):60.60s} {shape:>14s} {params or '':>9} {ops or '':>11}")
        return h_out

    h = x
    for i, layer in enumerate(model.encoder.layers):
        h = row(f"encoder.{i}", layer, h)
    mu = row("fc_mu", model.fc_mu, h)
    row("fc_logvar", model.fc_logvar, h)
    h = mu
    for i, layer in enumerate(model.decoder.layers):
        h = row(f"decoder.{i}", layer, h)
    return total


def add_args(p) -> None:
    p.add_argument(
        "--bottleneck", default="relu", choices=("relu", "leaky_relu"),
        help="activation of the 32-unit bottleneck: relu (the seed's) or leaky_relu (cannot die)",
    )  # fmt: skip


def run() -> None:
    lesson = _common.setup(__file__, __doc__, add_args)
    xp = lesson.xp
    bottleneck = lesson.args.bottleneck

    section("the seed study's convolutional VAE, latent 15")
    model = build_model("conv", 15, bottleneck=bottleneck, seed=lesson.seed).to(xp)
    x, _ = _common.mnist("test", 2, xp)
    total = shape_table(model, x)
    print(f"   parameters: {model.num_parameters():,}   (expect exactly 714,559)")
    print(
        f"   multiply-adds per image, forward: {total / 1e6:.1f} million (the MLP of lesson 8: 0.65 million)"
    )

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
    print(
        f"   config: {', '.join(f'{k}={v}' for k, v in cfg.to_dict().items() if k in preset or k in overrides)}"
    )
    model, data, history = train(cfg, lesson.run_dir("seed_conv"), progress=False)
    last = history[-1]
    print(f"   trained on {len(data.x_train)} images, validated on {len(data.x_val)}")
    expect("validation loss, seed units (the seed's own run ended near 0.093)", float(last["val_loss"]),
           *lesson.pick((0.1, 0.75), (0.1, 0.25), (0.085, 0.11)), ".4f")  # fmt: skip
    alive = last["alive_units"]
    print(f"   live bottleneck units in the last epoch: {alive} of 32")
    if bottleneck == "relu":
        print(
            "   (expect many dead already: ReLU units that the early, large updates pushed below 0 for every"
        )
        print("    image get no gradient again. Try --bottleneck leaky_relu, and compare the -ELBO below.)")
    else:
        print(
            "   (a LeakyReLU unit below 0 for every image still passes 1% of the gradient, so it can come back;"
        )
        print("    the count is of units positive for some image, not of units that can learn)")
    path = loss_curves(
        {"conv VAE": history}, lesson.figure("loss_curves"), "(seed form: pixel-mean BCE + 0.0005 KL)"
    )
    _common.saved(path, "train and validation loss per epoch, seed units")

    section("on test images, in standard units")
    ev = evaluate(model, data.x_test, data.y_test, seed=lesson.seed)
    m = ev.metrics
    expect(
        "-ELBO at beta = 1 (nats per image)",
        m["neg_elbo"],
        *lesson.pick((150, 600), (120, 240), (95, 140)),
        ".1f",
    )
    expect("KL (nats per image)", m["kl_nats"], *lesson.pick((0, 100), (10, 80), (30, 70)), ".1f")
    ref = seed_reference(15)
    ours = {r["digit"]: r["psnr_sampled"] for r in ev.per_digit}
    print("   per-digit PSNR (dB, sampled z):  digit  ours   seed study (full run)")
    for d in range(10):
        print(f"                                     {d}   {ours.get(d, float('nan')):5.1f}   {ref[d]:5.1f}")
    expect(
        "mean PSNR over digits (seed study: 20.1)",
        m["psnr_sampled_digit_mean"],
        *lesson.pick((5, 25), (12, 20), (18, 22)),
        ".1f",
    )

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
    mu, _ = model.encode(digit)
    h = mu
    for i, layer in enumerate(model.decoder.layers):
        h = layer.forward(h)
        if i == 5:
            stages[f"decoder.{i} {tuple(h.shape[1:])}"] = to_numpy(h)[0]
    stages["output sigmoid(logits)"] = to_numpy(sigmoid(h))[0]
    n_ch = lesson.pick(smoke=3, default=6, full=6)
    fig, axes = plt.subplots(len(stages) + 1, n_ch, figsize=(n_ch * 1.3, (len(stages) + 1) * 1.45))
    for ax in axes.ravel():
        ax.axis("off")
    axes[0, 0].imshow(to_numpy(digit)[0, 0], cmap="gray")
    axes[0, 0].set_title("input", fontsize=7, loc="left")
    for r, (name, maps) in enumerate(stages.items(), start=1):
        for c in range(min(n_ch, len(maps))):
            axes[r, c].imshow(maps[c], cmap="gray" if len(maps) == 1 else "viridis")
        axes[r, 0].set_title(name, fontsize=7, loc="left")
    lesson.savefig(
        fig, "feature_maps", "a digit through the trained encoder and decoder, 6 channels per stage"
    )


if __name__ == "__main__":
    _common.main(run)
