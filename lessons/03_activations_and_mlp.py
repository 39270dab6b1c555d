# %% [markdown]
# # Lesson 3: activations, stacking layers, BCE on logits, and a small MLP autoencoder trained on MNIST.
#
# ## The idea
#
# Linear layers stacked are still one linear map (W2 (W1 x) = (W2 W1) x). A nonlinearity between them is
# what lets a network bend. Each activation is elementwise, so its backward is the upstream gradient
# times the local derivative, and it caches the one array that derivative needs:
#
#     ReLU       y = max(x, 0)                 dy/dx = 1 if x > 0 else 0          caches the mask x > 0
#     LeakyReLU  y = x if x > 0 else 0.01 x    dy/dx = 1 or 0.01                  caches the mask
#     Sigmoid    y = 1 / (1 + exp(-x))         dy/dx = y (1 - y)                  caches y
#     Tanh       y = tanh(x)                   dy/dx = 1 - y^2                    caches y
#
# A ReLU whose input is negative for every image passes no gradient at all: the unit is "dead", and its
# own weights and bias get a zero gradient, so nothing in its own update pulls it back. It comes back
# only if its inputs change: the layers below it keep training on the gradients of the other units, and
# that can move some images to the positive side again. A unit fed directly by the pixels has no such
# help. LeakyReLU's slope of 0.01 for x < 0 keeps a small gradient flowing, so a unit cannot die that
# way. A sigmoid far from 0 has a derivative near 0 (4.5e-5 at x = 10): gradients vanish through
# saturated units.
#
# A `Sequential` runs its layers forward in order and backward in reverse: backprop is just the chain
# rule applied layer by layer, each layer turning dL/d(its output) into dL/d(its input).
#
# ## What to look at
#
# - `03_activations.png`: each activation and its derivative (the derivative computed by the layer's
#   backward);
# - the gradient checks (expect < 1e-7), including the whole network's input gradient;
# - BCE at logits ±100: the naive formula gives inf, `bce_with_logits` the exact value;
# - the loss falling from about 543 nats towards the pixels' own entropy (about 45 nats), and
#   `03_autoencoder.png`: test digits and their reconstructions.
#
# Then write them yourself: `python lessons/exercises/check.py relu sigmoid bce` grades your ReLU and
# Sigmoid backward and your BCE on logits.

# %%
import _common
import matplotlib.pyplot as plt
import numpy as np
from _common import expect, section

from minivae import threads
from minivae.analysis.figures import image_rows, loss_curves
from minivae.backend import to_numpy
from minivae.nn import Flatten, LeakyReLU, Linear, ReLU, Reshape, Sequential, Sigmoid, Tanh, sigmoid
from minivae.nn.gradcheck import check_function, check_layer
from minivae.nn.losses import bce_with_logits
from minivae.nn.optim import Adam

lesson = _common.setup("03_activations_and_mlp")
xp = lesson.xp
rng = np.random.default_rng(lesson.seed)

# %% [markdown]
# ## Activations and their derivatives
#
# Each layer's backward, given an upstream gradient of ones, returns the local derivative itself; the
# plot draws both, and a float64 finite-difference check confirms each backward.

# %%
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
print(f"   sigmoid'(0) = {d[0]:.3f} (expect 0.25),  sigmoid'(10) = {d[1]:.1e} (expect 4.5e-05: saturated)")
print(f"   sigmoid(+-1000) = {to_numpy(sigmoid(xp.asarray([-1000.0, 1000.0])))}  (no overflow warning)")

# %% [markdown]
# ## Stacking
#
# The autoencoder below is eight layers in a `Sequential`. Its backward is each layer's backward in
# reverse order, and the check runs through all of them at once.

# %%
section("stacking: the whole network's input gradient, float64")


def autoencoder(hidden: int, code: int, rng: np.random.Generator, dtype: str = "float32") -> Sequential:
    kw = {"rng": rng, "dtype": dtype}
    return Sequential(
        Flatten(), Linear(784, hidden, **kw), ReLU(), Linear(hidden, code, **kw),  # encoder
        Linear(code, hidden, **kw), ReLU(), Linear(hidden, 784, **kw), Reshape(1, 28, 28),  # decoder
    )  # fmt: skip


r = np.random.default_rng(lesson.seed)
net64 = autoencoder(lesson.pick(smoke=8, default=32, full=64), 4, r, "float64").to(xp)
x64 = xp.asarray(r.random((lesson.pick(smoke=1, default=2, full=4), 1, 28, 28)))
expect("relative error of dL/dx through 8 layers", check_layer(net64, x64)["input"], hi=1e-7, fmt=".1e")

# %% [markdown]
# ## BCE on logits
#
# The autoencoder treats each pixel as a Bernoulli probability p = sigmoid(l) of the logit l its last
# layer outputs, and scores a target pixel x in [0, 1] by the binary cross-entropy
#
#     BCE(l, x) = -[x log p + (1 - x) log(1 - p)]
#
# Written that way it breaks: in float32 sigmoid(100) rounds to exactly 1, log(1 - p) = log 0 = -inf, and
# the loss is inf (or nan) for a confident wrong pixel. Using log p = -log(1 + exp(-l)) and
# log(1 - p) = -l + log p, the same value is
#
#     BCE(l, x) = max(l, 0) - l x + log(1 + exp(-|l|))
#
# where exp(-|l|) lies in (0, 1], so nothing overflows for any logit. Its gradient is the simplest in
# the library, because the sigmoid's derivative p (1 - p) cancels against the log's 1/p:
#
#     dBCE/dl = sigmoid(l) - x = p - x
#
# `minivae.nn.losses.bce_with_logits(logits, x)` returns both, summed over the pixels and averaged over
# the batch (nats per image). That is why the network ends at a Linear layer with no Sigmoid: the loss
# takes the logits, and sigmoid is applied only to look at the picture.

# %%
section("BCE on logits: stable at any logit, gradient p - x")
logits = xp.asarray([[-100.0, -3.0, 0.0, 3.0, 100.0]], dtype=xp.float32)
target = xp.asarray([[1.0, 1.0, 0.5, 0.0, 0.0]], dtype=xp.float32)  # the two ends confidently wrong
with np.errstate(divide="ignore", invalid="ignore"):
    p = sigmoid(logits)
    naive = -(target * xp.log(p) + (1 - target) * xp.log(1 - p))
stable, _ = bce_with_logits(logits, target, "none")
print(f"   logits          {to_numpy(logits)[0]}")
print(f"   naive formula   {to_numpy(naive)[0]}   (inf at +100: sigmoid rounded to 1)")
print("   (at -100 the naive value is already off: p = 3.7e-44 is a float32 subnormal, short of digits)")
print(f"   bce_with_logits {to_numpy(stable)[0]}   (expect 100 at both ends)")
expect("bce_with_logits at logit -100, target 1", float(stable[0, 0]), 99.99, 100.01, ".2f")
lg = xp.asarray(rng.standard_normal((3, 7)) * 4)  # float64 for the check
tg = xp.asarray(rng.random((3, 7)))
_, dlg = bce_with_logits(lg, tg)
err = check_function(lambda logits: bce_with_logits(logits, tg), {"logits": lg}, {"logits": dlg})
expect("dBCE/dlogits = (p - x) / N against finite differences", err["logits"], hi=1e-8, fmt=".1e")

# %% [markdown]
# ## The autoencoder
#
#     x (N,1,28,28) -> Flatten -> Linear 784->256 -> ReLU -> Linear 256->16      the code, 16 numbers
#                   -> Linear 16->256 -> ReLU -> Linear 256->784 -> Reshape     logits (N,1,28,28)
#
# It is trained to reproduce its input, with the BCE summed over the 784 pixels and averaged over the
# batch, by Adam (lesson 8 derives it; here it is just "the step"). At the start the logits are near 0,
# p = 0.5 everywhere, and BCE = 784 ln 2 = 543 nats. `minivae.threads.apply()` first sets the BLAS
# thread count to the cores no other program is using, so a busy machine slows the run down less.
#
# MNIST pixels are grey levels, not 0 or 1, so this BCE is not the log-likelihood of a Bernoulli model of
# the data: it has a floor. Even a perfect reconstruction, p = x, scores each pixel's own entropy
# -[x log x + (1 - x) log(1 - x)], about 45 nats per test image summed over the pixels (45.5 over all
# 10,000 test images). A trained autoencoder gets to about 60-100 nats, so only the part above the floor
# is reconstruction error. This is not yet a VAE: its codes are wherever the encoder puts them, so
# decoding a random code gives garbage. Lessons 6-9 fix that.

# %%
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


def mean_bce(net: Sequential, x, batch: int = 500) -> float:
    """Average BCE (nats per image) of the network's reconstructions of x."""
    total = 0.0
    for s in range(0, len(x), batch):
        loss, _ = bce_with_logits(net.forward(x[s : s + batch]), x[s : s + batch], "sum")
        total += float(loss)
    return total / len(x)


xt = to_numpy(x_test).reshape(n_test, -1).astype(np.float64)
with np.errstate(divide="ignore", invalid="ignore"):
    ent = -(np.where(xt > 0, xt * np.log(xt), 0) + np.where(xt < 1, (1 - xt) * np.log(1 - xt), 0))
floor = float(ent.sum(axis=1).mean())
expect("the floor: the test pixels' own entropy (nats per image)", floor, 40, 50, ".1f")
print(f"   {n_train} training images, {epochs} epoch(s), batch {batch}, {net.num_parameters():,} parameters")
n_threads = threads.apply()
print(f"   BLAS threads: {n_threads} (OPENBLAS_NUM_THREADS if set, else the cores no other program is using)")
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
        f"   epoch {epoch + 1}: train {history[-1]['train_loss']:.1f}, test {history[-1]['val_loss']:.1f} nats"
    )
expect(
    "test BCE after training (nats per image)",
    history[-1]["val_loss"],
    *lesson.pick(smoke=(150, 545), default=(60, 110), full=(55, 90)),
    fmt=".1f",
)
print(
    f"   of which the floor is {floor:.1f}: reconstruction error {history[-1]['val_loss'] - floor:.1f} nats"
)

# %% [markdown]
# ## Figures
#
# The BCE per epoch, and test digits above their reconstructions, sigmoid(logits).

# %%
section("figures")
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

# %%
lesson.done()
