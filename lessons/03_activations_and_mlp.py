"""Lesson 3: activations, stacking layers, and a small MLP autoencoder trained on MNIST.

The idea
--------
Linear layers stacked are still one linear map (W2 (W1 x) = (W2 W1) x). A nonlinearity between them is what
lets a network bend. Each activation is elementwise, so its backward is the upstream gradient times the
local derivative, and it caches the one array that derivative needs:

    ReLU       y = max(x, 0)                 dy/dx = 1 if x > 0 else 0          caches the mask x > 0
    LeakyReLU  y = x if x > 0 else 0.01 x    dy/dx = 1 or 0.01                  caches the mask
    Sigmoid    y = 1 / (1 + exp(-x))         dy/dx = y (1 - y)                  caches y
    Tanh       y = tanh(x)                   dy/dx = 1 - y^2                    caches y

A ReLU whose input is negative for every image passes no gradient at all: the unit is "dead" and stays dead.
A sigmoid far from 0 has a derivative near 0 (4.5e-5 at x = 10): gradients vanish through saturated units.

A Sequential runs its layers forward in order and backward in reverse: backprop is just the chain rule
applied layer by layer, each layer turning dL/d(its output) into dL/d(its input).

The autoencoder
---------------
    x (N,1,28,28) -> Flatten -> Linear 784->256 -> ReLU -> Linear 256->16      the code, 16 numbers
                  -> Linear 16->256 -> ReLU -> Linear 256->784 -> Reshape     logits (N,1,28,28)

It is trained to reproduce its input. Each pixel is treated as a Bernoulli probability p = sigmoid(logit),
and the loss is the binary cross-entropy summed over the 784 pixels, averaged over the batch (nats per image):

    BCE = sum_pixels  -[x log p + (1 - x) log(1 - p)],     dBCE/dlogit = p - x

minivae.nn.losses.bce_with_logits computes it from the logits directly, exact for any logit. At the start the
logits are near 0, p = 0.5 everywhere, and BCE = 784 ln 2 = 543 nats; a trained autoencoder gets to about
60-100. This is not yet a VAE: its codes are wherever the encoder puts them, so decoding a random code gives
garbage. Lessons 6-8 fix that.

What to look at
---------------
- 03_activations.png: each activation and its derivative (the derivative computed by the layer's backward);
- the gradient checks (expect < 1e-7), including the whole network's input gradient;
- the loss falling from about 543 nats, and 03_autoencoder.png: test digits and their reconstructions.
"""

from __future__ import annotations

import _common
import matplotlib.pyplot as plt
import numpy as np
from _common import expect, section

from minivae.analysis.figures import image_rows, loss_curves
from minivae.backend import to_numpy
from minivae.nn import Flatten, LeakyReLU, Linear, ReLU, Reshape, Sequential, Sigmoid, Tanh, sigmoid
from minivae.nn.gradcheck import check_layer
from minivae.nn.losses import bce_with_logits
from minivae.nn.optim import Adam


def autoencoder(hidden: int, code: int, rng: np.random.Generator, dtype: str = "float32") -> Sequential:
    kw = {"rng": rng, "dtype": dtype}
    return Sequential(
        Flatten(), Linear(784, hidden, **kw), ReLU(), Linear(hidden, code, **kw),  # encoder
        Linear(code, hidden, **kw), ReLU(), Linear(hidden, 784, **kw), Reshape(1, 28, 28),  # decoder
    )  # fmt: skip


def mean_bce(net: Sequential, x, batch: int = 500) -> float:
    """Average BCE (nats per image) of the network's reconstructions of x."""
    total = 0.0
    for s in range(0, len(x), batch):
        loss, _ = bce_with_logits(net.forward(x[s : s + batch]), x[s : s + batch], "sum")
        total += float(loss)
    return total / len(x)


def run() -> None:
    lesson = _common.setup(__file__, __doc__)
    xp = lesson.xp
    rng = np.random.default_rng(lesson.seed)

    section("activations: forward, and the derivative their backward returns")
    acts = {"ReLU": ReLU(), "LeakyReLU": LeakyReLU(), "Sigmoid": Sigmoid(), "Tanh": Tanh()}
    grid = xp.linspace(-4, 4, 401)
    fig, axes = plt.subplots(1, 4, figsize=(11, 2.8))
    for ax, (name, act) in zip(axes, acts.items()):
        y = act.forward(grid)
        dydx = act.backward(xp.ones_like(grid))  # upstream gradient 1: backward returns dy/dx itself
        ax.plot(to_numpy(grid), to_numpy(y), label="y")
        ax.plot(to_numpy(grid), to_numpy(dydx), "--", label="dy/dx")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        errs = check_layer(act, xp.asarray(rng.standard_normal((4, 5))))
        expect(f"{name} gradient check", errs["input"], hi=1e-7, fmt=".1e")
    lesson.savefig(fig, "activations", "each activation and its derivative, from backward")
    s = Sigmoid()
    s.forward(xp.asarray([0.0, 10.0]))
    d = to_numpy(s.backward(xp.ones(2)))
    print(
        f"   sigmoid'(0) = {d[0]:.3f} (expect 0.25),  sigmoid'(10) = {d[1]:.1e} (expect 4.5e-05: saturated)"
    )
    print(f"   sigmoid(+-1000) = {to_numpy(sigmoid(xp.asarray([-1000.0, 1000.0])))}  (no overflow warning)")

    section("stacking: the whole network's input gradient, float64")
    r = np.random.default_rng(lesson.seed)
    net64 = autoencoder(lesson.pick(smoke=8, default=32, full=64), 4, r, "float64").to(xp)
    x64 = xp.asarray(r.random((lesson.pick(smoke=1, default=2, full=4), 1, 28, 28)))
    expect("relative error of dL/dx through 8 layers", check_layer(net64, x64)["input"], hi=1e-7, fmt=".1e")

    section("training the autoencoder on MNIST")
    n_train = lesson.pick(smoke=64, default=20_000, full=60_000)
    n_test = lesson.pick(smoke=32, default=1000, full=10_000)
    epochs = lesson.pick(smoke=1, default=5, full=10)
    hidden = lesson.pick(smoke=32, default=256, full=256)
    batch = 64
    x_train, _ = _common.mnist("train", n_train, xp)
    x_test, _ = _common.mnist("test", n_test, xp)
    net = autoencoder(hidden, 16, np.random.default_rng(lesson.seed)).to(xp)
    opt = Adam(net.named_parameters(), lr=1e-3)
    print(
        f"   {n_train} training images, {epochs} epoch(s), batch {batch}, {net.num_parameters():,} parameters"
    )
    start = mean_bce(net, x_test)
    expect("test BCE before training (784 ln 2 = 543.4)", start, 520, 570, ".1f")
    history = []
    for epoch in range(epochs):
        order = np.random.default_rng([lesson.seed, epoch]).permutation(n_train)
        total = 0.0
        for b in range(0, n_train, batch):
            xb = x_train[xp.asarray(order[b : b + batch])]
            loss, dlogits = bce_with_logits(net.forward(xb), xb)  # nats per image, and dL/dlogits
            net.backward(dlogits)  # fills every layer's grads
            opt.step()  # Adam, in place
            total += float(loss) * len(xb)
        history.append({"epoch": epoch + 1, "train_loss": total / n_train, "val_loss": mean_bce(net, x_test)})
        print(
            f"   epoch {epoch + 1}: train {history[-1]['train_loss']:.1f}, "
            f"test {history[-1]['val_loss']:.1f} nats"
        )
    expect(
        "test BCE after training (nats per image)",
        history[-1]["val_loss"],
        *lesson.pick(smoke=(150, 545), default=(60, 110), full=(55, 90)),
        fmt=".1f",
    )
    _common.saved(
        loss_curves({"autoencoder": history}, lesson.figure("loss"), "(BCE, nats per image)"), "BCE per epoch"
    )
    k = lesson.pick(smoke=4, default=10, full=10)  # images per row
    recon = to_numpy(sigmoid(net.forward(x_test[:k])))[:, 0]
    path = image_rows(
        {"test digits": to_numpy(x_test[:k])[:, 0], "reconstructions": recon},
        lesson.figure("autoencoder"),
        title="a 16-number code per digit, decoded back",
    )
    _common.saved(path, "test digits and the autoencoder's reconstructions")


if __name__ == "__main__":
    _common.main(run)
