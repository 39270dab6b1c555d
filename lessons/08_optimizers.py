# %% [markdown]
# # Lesson 8: optimisers. Gradient descent, momentum, Adam and its bias correction, Keras's epsilon
#
# ## The idea
# Backpropagation gives the gradient g = dL/dtheta; the optimiser turns it into a step. Every lesson from 3 on
# trains with Adam. This one builds Adam up from plain gradient descent: first on a two-parameter valley where
# every rate can be worked out by hand, then on a small network. minivae.nn.optim has two optimisers, each
# owning its state and updating the parameters in place:
#
#     SGD(params, lr, momentum=0)       torch.optim.SGD: buf = momentum buf + g;  theta -= lr buf
#     Adam(params, lr, betas, eps)      torch.optim.Adam; keras_epsilon=True gives Keras's form
#
# `minivae train --optimizer` picks `adam` (PyTorch's, the default), `adam-keras` (Keras's form with
# eps = 1e-7, what the seed study used) or `sgd` (SGD with momentum 0.9).
#
# ## What to look at
# - gradient descent on a valley with curvatures 1 and 50: the distance to the minimum shrinks by
#   (kappa - 1) / (kappa + 1) = 0.961 a step (expect 0.960 .. 0.962);
# - momentum tuned to the valley: a rate of (sqrt(kappa) - 1) / (sqrt(kappa) + 1) = 0.752 (the iteration
#   matrix's spectral radius; measured over 100 steps, 0.74 .. 0.80);
# - Adam: the same path when the loss is multiplied by 1000 (it ignores the gradient's scale), and a much
#   worse result when the same valley is turned by 45 degrees (its step size is per coordinate);
# - the bias correction: with it the first step is exactly lr for any gradient size; without correcting m it
#   is 0.1 lr; without correcting either it is 3.16 lr, growing to 6.57 lr at step 12;
# - Keras's epsilon is PyTorch's with eps_t = eps / sqrt(1 - beta2^t): the two agree for ordinary gradients
#   and part ways for gradients near 1e-6 (at |g| = 1e-6 the first step is 0.99 lr against 0.24 lr);
# - a small MLP autoencoder on 512 digits: each optimiser at its best of three learning rates;
# - 08_valley.png: the paths and loss curves on the valley, and Adam on the turned valley;
#   08_adam.png: the first steps with and without bias correction, the first step against |g| for the two
#   epsilons, and the network's loss curves.

# %%
from __future__ import annotations

import math

import _common
import matplotlib.pyplot as plt
import numpy as np
from _common import expect, section

from minivae.backend import to_numpy
from minivae.nn import Flatten, Linear, ReLU, Reshape, Sequential
from minivae.nn.gradcheck import rel_error
from minivae.nn.losses import bce_with_logits
from minivae.nn.optim import SGD, Adam

lesson = _common.setup("08_optimizers")
xp = lesson.xp

# %% [markdown]
# ## Gradient descent on a narrow valley
# The loss f(theta) = 0.5 (lambda_1 theta_1^2 + lambda_2 theta_2^2) with curvatures lambda = (1, 50) is a
# valley 50 times steeper across than along: condition number kappa = lambda_max / lambda_min = 50. Its
# gradient is (lambda_1 theta_1, lambda_2 theta_2), so gradient descent theta -= lr g acts on each coordinate
# alone:
#
#     theta_i  <-  (1 - lr lambda_i) theta_i
#
# It converges only if |1 - lr lambda_i| < 1 for both, that is lr < 2 / lambda_max = 0.04: the steep
# direction caps the step, and the shallow one then crawls. The best single lr, 2 / (lambda_min +
# lambda_max), makes both factors equal in size: (kappa - 1) / (kappa + 1) = 0.961 a step, about 58 steps
# for each factor of 10 in distance. That is the problem every optimiser below attacks.
#
# The optimisers are minivae's own, given a two-element parameter and its gradient array: the loop fills
# the gradient, then calls step(), exactly as a training loop does after backward().

# %%
LAMBDA = np.array([1.0, 50.0])  # the curvatures
KAPPA = LAMBDA.max() / LAMBDA.min()
H = np.diag(LAMBDA)  # the Hessian: f = 0.5 theta^T H theta
THETA0 = np.array([-4.0, 0.8])
STEPS = 100


def descend(make_opt, hessian: np.ndarray, theta0: np.ndarray, steps: int = STEPS):
    """Run an optimiser on f = 0.5 theta^T H theta: (path (steps + 1, 2), loss (steps + 1,))."""
    theta, grad = theta0.astype(np.float64).copy(), np.zeros(2)
    opt = make_opt([("theta", theta, grad)])  # minivae's (name, param, grad) list
    path = [theta.copy()]
    for _ in range(steps):
        grad[...] = hessian @ theta  # the gradient, written in place as backward() does
        opt.step()  # updates theta in place
        path.append(theta.copy())
    path = np.array(path)
    return path, 0.5 * np.einsum("ti,ij,tj->t", path, hessian, path)


def rate(path: np.ndarray) -> float:
    """The average factor by which the distance to the minimum shrinks per step."""
    d = np.linalg.norm(path, axis=1)
    return float((d[-1] / d[0]) ** (1 / (len(d) - 1)))


section("gradient descent, lr = 2 / (lambda_min + lambda_max)")
lr_gd = 2 / (LAMBDA.min() + LAMBDA.max())
runs = {"gradient descent": descend(lambda p: SGD(p, lr=lr_gd), H, THETA0)}
print(f"   lr = {lr_gd:.4f}; the per-coordinate factors 1 - lr lambda = {np.round(1 - lr_gd * LAMBDA, 4)}")
expect("distance shrinks per step by", rate(runs["gradient descent"][0]), 0.960, 0.962, ".4f")
print(f"   theory (kappa - 1) / (kappa + 1) = {(KAPPA - 1) / (KAPPA + 1):.4f}")
with np.errstate(over="ignore", invalid="ignore"):
    _, loss_big = descend(lambda p: SGD(p, lr=2.05 / LAMBDA.max()), H, THETA0)
print(
    f"   lr = 2.05 / lambda_max instead: loss {loss_big[0]:.1f} -> {loss_big[-1]:.3g} after {STEPS} steps (diverges)"
)

# %% [markdown]
# ## Momentum
# Momentum keeps a running sum of past gradients and steps along it. minivae's SGD(momentum=beta) follows
# torch.optim.SGD:
#
#     buf  <-  beta buf + g            theta  <-  theta - lr buf
#
# which is Polyak's heavy ball, theta_{t+1} = theta_t - lr g_t + beta (theta_t - theta_{t-1}). Along the
# shallow direction the gradients agree from step to step and the sum grows to g / (1 - beta): an effective
# step 1 / (1 - beta) times larger. Across the valley they alternate in sign and cancel. Per coordinate the
# update is a two-term linear recurrence; with
#
#     lr = 4 / (sqrt(lambda_max) + sqrt(lambda_min))^2      beta = ((sqrt(kappa) - 1) / (sqrt(kappa) + 1))^2
#
# every coordinate's recurrence has complex roots of modulus
#
#     sqrt(beta) = (sqrt(kappa) - 1) / (sqrt(kappa) + 1):
#
# sqrt(kappa) in place of kappa, 0.752 a step here, about 8 steps per factor of 10. At the two extreme
# curvatures the root is a double one, so the distance there falls as t 0.752^t and the rate measured over 100
# steps is a little above 0.752. The tuned path first overshoots across the valley, and the loss rises for a
# few steps before it falls fastest of all. Everyday training does not know the curvatures and uses beta = 0.9
# with a smaller lr (minivae's `--optimizer sgd` is SGD with momentum 0.9): the path spirals in.

# %%
section("momentum, tuned to the valley, and the everyday beta = 0.9")
lr_hb = 4 / (math.sqrt(LAMBDA.max()) + math.sqrt(LAMBDA.min())) ** 2
beta_hb = ((math.sqrt(KAPPA) - 1) / (math.sqrt(KAPPA) + 1)) ** 2
runs["momentum (tuned)"] = descend(lambda p: SGD(p, lr=lr_hb, momentum=beta_hb), H, THETA0)
runs["momentum 0.9"] = descend(lambda p: SGD(p, lr=lr_gd / 10, momentum=0.9), H, THETA0)
# the iteration (theta_{t+1}, theta_t) <- M (theta_t, theta_{t-1}) for one coordinate of curvature lambda
radius = max(
    float(np.abs(np.linalg.eigvals([[1 + beta_hb - lr_hb * lam, -beta_hb], [1, 0]])).max()) for lam in LAMBDA
)
print(f"   tuned: lr = {lr_hb:.4f}, beta = {beta_hb:.4f}")
expect("spectral radius of the momentum iteration (sqrt(beta))", radius, 0.751, 0.753, ".4f")
expect("measured: distance shrinks per step by", rate(runs["momentum (tuned)"][0]), 0.74, 0.80, ".4f")
expect("beta = 0.9, lr = lr_gd / 10: per step", rate(runs["momentum 0.9"][0]), 0.93, 0.97, ".4f")
for name, (_, loss) in runs.items():
    print(f"   {name:18s}: loss after {STEPS} steps {loss[-1]:.2e}")

# %% [markdown]
# ## Adam: a step size for each coordinate
# Adam (Kingma & Ba 2015) keeps two running averages per parameter, of the gradient and of its square,
# and divides one by the square root of the other:
#
#     m  <-  beta1 m + (1 - beta1) g                 m_hat = m / (1 - beta1^t)
#     v  <-  beta2 v + (1 - beta2) g^2               v_hat = v / (1 - beta2^t)
#     theta  <-  theta - lr m_hat / (sqrt(v_hat) + eps)          (defaults beta1 = 0.9, beta2 = 0.999)
#
# m_hat / sqrt(v_hat) is about +-1 when the gradient keeps its sign and smaller when it flips about, so each
# coordinate moves about lr per step, whatever its curvature: the steep direction is no longer what caps
# the step. Two consequences show on the valley:
# - multiply the loss by 1000 and every gradient, m and sqrt(v) grow 1000-fold: the path does not change
#   (up to eps). Gradient descent's lr would have to be divided by 1000;
# - the rescaling is per coordinate, so it helps when the valley lies along the axes. Turn the same valley
#   by 45 degrees and both coordinates see both curvatures: Adam loses its advantage, while gradient descent
#   and momentum, which do not care about the axes, follow exactly the turned copy of their path.
#
# With a constant lr, Adam does not settle into the minimum: near it m_hat / sqrt(v_hat) still makes steps of
# order lr, and the loss stops falling at a level set by lr. (Training schedules lower lr for that.)

# %%
section("Adam (lr = 0.1): scale-free, and per coordinate")
lr_adam = 0.1
runs["Adam"] = descend(lambda p: Adam(p, lr=lr_adam), H, THETA0)
path_scaled, _ = descend(lambda p: Adam(p, lr=lr_adam), 1000 * H, THETA0)
expect(
    "max |path difference| with the loss multiplied by 1000",
    float(np.abs(path_scaled - runs["Adam"][0]).max()),
    hi=1e-4,
    fmt=".1e",
)
turn = np.array([[1, -1], [1, 1]]) / math.sqrt(2)  # a rotation by 45 degrees
H_turned = turn @ H @ turn.T
turned = {
    "gradient descent": descend(lambda p: SGD(p, lr=lr_gd), H_turned, turn @ THETA0),
    "Adam": descend(lambda p: Adam(p, lr=lr_adam), H_turned, turn @ THETA0),
}
gd_same = float(np.abs(turned["gradient descent"][0] - runs["gradient descent"][0] @ turn.T).max())
expect("gradient descent on the turned valley: max |path - turned path|", gd_same, hi=1e-12, fmt=".1e")
adam_axis, adam_turned = runs["Adam"][1][-1], turned["Adam"][1][-1]
expect(f"Adam's loss after {STEPS} steps, valley along the axes", adam_axis, hi=1e-2, fmt=".2e")
expect(f"Adam's loss after {STEPS} steps, valley turned by 45 degrees", adam_turned, lo=0.1, fmt=".2e")

fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
for ax, hess, paths, title, (x_lim, y_lim) in (
    (axes[0], H, runs, "f = 0.5 (theta_1^2 + 50 theta_2^2)", ((-4.5, 1.5), (-2.3, 2.3))),
    (axes[2], H_turned, turned, "the same valley turned by 45 degrees", ((-4, 1.5), (-3.6, 1.5))),
):
    g1, g2 = np.meshgrid(np.linspace(*x_lim, 200), np.linspace(*y_lim, 200))
    pts = np.stack([g1, g2], -1)  # (200, 200, 2): a grid of thetas
    z = 0.5 * np.einsum("...i,ij,...j->...", pts, hess, pts)
    ax.contour(g1, g2, z, levels=np.geomspace(0.01, 60, 12), colors="0.75", linewidths=0.7)
    for name, (path, _) in paths.items():
        ax.plot(path[:, 0], path[:, 1], ".-", ms=2.5, lw=0.8, label=name)
    ax.plot(0, 0, "k*", ms=9)
    ax.set_title(title + f", {STEPS} steps", fontsize=9)
    ax.set_xlabel("theta_1")
    ax.set_ylabel("theta_2")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(fontsize=7)
for name, (_, loss) in runs.items():
    axes[1].semilogy(loss, label=name)
axes[1].semilogy(turned["Adam"][1], "--", label="Adam, turned valley")
axes[1].set_xlabel("step")
axes[1].set_ylabel("loss")
axes[1].set_ylim(1e-8, 1e3)  # tuned momentum goes on down to 1e-19
axes[1].set_title("loss per step (log scale)", fontsize=9)
axes[1].legend(fontsize=7)
axes[1].grid(alpha=0.3)
lesson.savefig(fig, "valley", "paths and loss curves on the valley; Adam on the turned valley")

# %% [markdown]
# ## Why Adam corrects its bias
# m and v start at 0, so early on they are too small: with a constant gradient g,
# m_t = (1 - beta1^t) g and v_t = (1 - beta2^t) g^2. Dividing by (1 - beta^t) undoes exactly that, so
# m_hat = g and v_hat = g^2 from the first step, and the first step is lr g / (|g| + eps), lr for any
# gradient that is not tiny. Leave a correction out and the early steps are wrong by the missing factors:
# - without correcting m, the step is (1 - beta1^t) lr: 0.1 lr at t = 1, 0.65 lr at t = 10: tiny first steps;
# - without correcting either, it is (1 - beta1^t) / sqrt(1 - beta2^t) lr: 3.16 lr at t = 1, up to 6.57 lr at
#   t = 12, and still 1.26 lr at t = 1000. beta2 = 0.999 makes v the slower average, so v is the more
#   underestimated and the steps come out *too large*: the reason Kingma & Ba give for the correction.
#
# Both variants are right in the limit (beta^t -> 0) and wrong at the start, the shape the adam exercise's
# checker looks for. Below, minivae's Adam takes its first step on gradients from 1e-3 to 1e3, and the
# three variants are written out for a constant gradient.

# %%
section("the bias correction: the first step, and the steps of a constant gradient")
b1, b2 = 0.9, 0.999
theta = np.zeros(7)
grad = np.array([1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3])
Adam([("theta", theta, grad)], lr=1e-3).step()
step1 = -theta / 1e-3  # each first step in units of lr
worst = float(np.abs(step1 - 1).max())
expect(
    "minivae's first step / lr, for |g| from 1e-3 to 1e3 (worst distance from 1)", worst, hi=1e-4, fmt=".1e"
)
t = np.arange(1, 10_001)
steps_in_lr = {
    "bias-corrected (Adam)": np.ones_like(t, dtype=float),
    "m not corrected": 1 - b1**t,
    "neither corrected": (1 - b1**t) / np.sqrt(1 - b2**t),
}
print("   t       " + "".join(f"{name:>24s}" for name in steps_in_lr))
for k in (1, 2, 5, 10, 12, 100, 1000, 10_000):
    print(f"   {k:6d}  " + "".join(f"{v[k - 1]:24.3f}" for v in steps_in_lr.values()))
peak = steps_in_lr["neither corrected"]
expect("neither corrected: step 1 / lr", float(peak[0]), 3.16, 3.17, ".3f")
expect(
    f"neither corrected: the largest step / lr (at t = {t[peak.argmax()]})",
    float(peak.max()),
    6.5,
    6.6,
    ".3f",
)
expect("m not corrected: step 1 / lr", float(steps_in_lr["m not corrected"][0]), 0.099, 0.101, ".3f")

# %% [markdown]
# ## Keras's epsilon against PyTorch's
# Kingma & Ba's paper notes that the last three lines of Adam can be reordered to save work: fold both
# corrections into the learning rate, and add an epsilon, which they call eps_hat, to the *uncorrected*
# sqrt(v). Keras does that:
#
#     Keras:     theta -= lr sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps_hat)     eps_hat = 1e-7
#     PyTorch:   theta -= lr m_hat / (sqrt(v_hat) + eps)                                    eps = 1e-8
#
# Divide the Keras fraction's top and bottom by sqrt(1 - beta2^t); sqrt(v) / sqrt(1 - beta2^t) = sqrt(v_hat):
#
#     Keras  =  lr m_hat / (sqrt(v_hat) + eps_hat / sqrt(1 - beta2^t))
#
# PyTorch's update with a step-dependent epsilon eps_t = eps_hat / sqrt(1 - beta2^t): 3.2e-6 at t = 1,
# 1.0e-6 at t = 10, 1.3e-7 at t = 1000, and 1e-7, ten times PyTorch's, for good. The two differ only where
# sqrt(v_hat) is not much larger than eps_t, that is for gradients of about 1e-6 and below: parameters that
# barely move the loss. There Keras's steps are smaller. minivae's Adam(keras_epsilon=True) computes it as
# PyTorch's update with eps_t; the seed study's preset (`--preset seed`) uses it with eps_hat = 1e-7, the
# rest of minivae PyTorch's form.
#
# Below: Adam written out in both forms, against minivae's, over 50 steps of random gradients; then one
# first step on gradients from 1e-10 to 1e-2 in each form.


# %%
def adam_by_hand(grads: np.ndarray, lr: float, keras: bool) -> np.ndarray:
    """Adam's formula written out, on one parameter vector: grads (T, n) -> theta after each step (T, n)."""
    m, v, theta, out = np.zeros(grads.shape[1]), np.zeros(grads.shape[1]), np.zeros(grads.shape[1]), []
    for step, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        if keras:  # both corrections folded into lr, eps_hat = 1e-7 on the raw sqrt(v)
            theta = theta - lr * math.sqrt(1 - b2**step) / (1 - b1**step) * m / (np.sqrt(v) + 1e-7)
        else:  # PyTorch: correct m and v, then eps = 1e-8
            theta = theta - lr * (m / (1 - b1**step)) / (np.sqrt(v / (1 - b2**step)) + 1e-8)
        out.append(theta)
    return np.array(out)


def adam_minivae(grads: np.ndarray, lr: float, keras: bool) -> np.ndarray:
    """The same steps through minivae.nn.optim.Adam."""
    theta, g = xp.zeros(grads.shape[1]), xp.zeros(grads.shape[1])
    opt = Adam([("theta", theta, g)], lr=lr, eps=1e-7 if keras else 1e-8, keras_epsilon=keras)
    out = []
    for row in grads:
        g[...] = xp.asarray(row)
        opt.step()
        out.append(to_numpy(theta).copy())
    return np.array(out)


section("Keras's and PyTorch's Adam, by hand against minivae (float64, 50 steps)")
scales = np.geomspace(1e-9, 1e-1, 9)  # one parameter per gradient scale
grads = np.random.default_rng(lesson.seed).standard_normal((50, len(scales))) * scales + 0.5 * scales
for keras in (False, True):
    form = "Keras  " if keras else "PyTorch"
    err = rel_error(adam_minivae(grads, 1e-3, keras), adam_by_hand(grads, 1e-3, keras))
    expect(f"{form}: minivae's Adam vs the formula written out", err, hi=1e-12, fmt=".1e")

section("the first step / lr against |g|: PyTorch's eps = 1e-8, Keras's eps_hat = 1e-7")
g_grid = np.geomspace(1e-10, 1e-2, 81)
first = {}
for keras in (False, True):
    theta, g = xp.zeros(len(g_grid)), xp.asarray(g_grid)
    Adam([("theta", theta, g)], lr=1e-3, eps=1e-7 if keras else 1e-8, keras_epsilon=keras).step()
    first[keras] = -to_numpy(theta) / 1e-3
print("   |g|         PyTorch   Keras")
for gv in (1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-2):
    i = int(np.argmin(np.abs(np.log(g_grid / gv))))
    print(f"   {gv:7.0e}  {first[False][i]:8.3f}  {first[True][i]:6.3f}")
i6 = int(np.argmin(np.abs(np.log(g_grid / 1e-6))))
expect(
    "PyTorch, |g| = 1e-6: first step / lr = 1e-6 / (1e-6 + 1e-8)",
    float(first[False][i6]),
    0.989,
    0.991,
    ".3f",
)
expect(
    "Keras,   |g| = 1e-6: first step / lr = 1e-6 / (1e-6 + 3.16e-6)",
    float(first[True][i6]),
    0.23,
    0.25,
    ".3f",
)
apart = np.abs(first[False] - first[True])
expect("largest difference for |g| >= 1e-3", float(apart[g_grid >= 1e-3].max()), hi=1e-2, fmt=".1e")

# %% [markdown]
# ## A small network
# On a valley every number has a formula; a network's loss has none, so the comparison is made the way it
# is in practice: each optimiser with its best of three learning rates, a factor of about 3 apart. The
# network is lesson 3's MLP autoencoder made small (784 -> 64 -> 8 -> 64 -> 784) and trained with the BCE on
# 512 training digits, batch 64, the same initial weights and batch order for every run. SGD's largest lr
# diverges (its steep directions cap its step, as on the valley). Momentum 0.9 does better than SGD at a
# smaller lr: along a steady gradient its step is lr / (1 - 0.9) = 10 lr, so the lr that suits SGD is already
# too large for it. Adam goes furthest.
#
# Adam in Keras's form, at Adam's best lr, lands close to PyTorch's. The two epsilons only matter for
# gradients below about 1e-5 (1e-4 in the very first steps, where eps_t is largest), and few of the network's
# parameters have such gradients: the weights from pixels that are black in every image of a batch (MNIST's
# border) have gradient exactly 0 (no step in either form), and of the rest only a small share fall that low.
# Training at a large lr also amplifies any small change, whatever its cause, so a control run changes
# PyTorch's eps by 1 % to show the size of that drift. In default mode (`python lessons/08_optimizers.py`,
# NumPy on a 2-core CPU) Keras's form ends about 2 % higher and the control 0.2 %: the epsilon itself makes
# most of the difference, through the parameters whose gradients are small, which take smaller steps in
# Keras's form.

# %%
n_img = lesson.pick(smoke=64, default=512, full=2048)
epochs = lesson.pick(smoke=2, default=20, full=40)
batch = 64
x_train, _ = _common.mnist("train", n_img, xp)


def small_autoencoder(seed: int) -> Sequential:
    r = np.random.default_rng(seed)
    return Sequential(
        Flatten(), Linear(784, 64, rng=r), ReLU(), Linear(64, 8, rng=r),  # encoder
        Linear(8, 64, rng=r), ReLU(), Linear(64, 784, rng=r), Reshape(1, 28, 28),  # decoder
    )  # fmt: skip


def train(make_opt) -> list[float]:
    """Train a fresh copy (same weights, same batches) and return the mean training BCE of each epoch."""
    net = small_autoencoder(lesson.seed).to(xp)
    opt = make_opt(net.named_parameters())
    history = []
    for epoch in range(epochs):
        order = np.random.default_rng([lesson.seed, epoch]).permutation(n_img)
        total = 0.0
        for b in range(0, n_img, batch):
            xb = x_train[xp.asarray(order[b : b + batch])]
            with np.errstate(over="ignore", invalid="ignore"):  # a diverging lr overflows; we report it
                loss, dlogits = bce_with_logits(net.forward(xb), xb)
                net.backward(dlogits)
                opt.step()
            total += float(loss) * len(xb)
        history.append(total / n_img)
    return history


section(f"a small MLP autoencoder, {n_img} digits, {epochs} epochs, batch {batch}")
grid = {
    "SGD": ((1e-2, 3e-2, 1e-1), lambda p, lr: SGD(p, lr=lr)),
    "SGD, momentum 0.9": ((3e-3, 1e-2, 3e-2), lambda p, lr: SGD(p, lr=lr, momentum=0.9)),
    "Adam": ((3e-3, 1e-2, 3e-2), lambda p, lr: Adam(p, lr=lr)),
}
best = {}
for name, (lrs, make) in grid.items():
    results = {lr: train(lambda p, lr=lr, make=make: make(p, lr)) for lr in lrs}
    finals = {lr: h[-1] if math.isfinite(h[-1]) else math.inf for lr, h in results.items()}
    lr_best = min(finals, key=finals.get)
    best[name] = (lr_best, results[lr_best])
    shown = ", ".join(
        f"lr {lr:g}: {f:.1f}" if math.isfinite(f) else f"lr {lr:g}: diverged" for lr, f in finals.items()
    )
    print(f"   {name:18s} last-epoch BCE  {shown}")
lr_a = best["Adam"][0]
best["Adam, Keras's epsilon"] = (lr_a, train(lambda p: Adam(p, lr=lr_a, eps=1e-7, keras_epsilon=True)))
control = train(lambda p: Adam(p, lr=lr_a, eps=1.01e-8))  # PyTorch's form, eps 1 % larger
for name, (lr, h) in best.items():
    print(f"   best {name:22s}: lr {lr:g}, BCE {h[0]:.1f} after epoch 1, {h[-1]:.1f} after epoch {epochs}")
final = {name: h[-1] for name, (_, h) in best.items()}
expect(
    "SGD's best last-epoch BCE (nats per image)",
    final["SGD"],
    *lesson.pick((400, 545), (150, 180), (100, 130)),
)
expect("momentum 0.9's best", final["SGD, momentum 0.9"], *lesson.pick((400, 545), (125, 160), (90, 120)))
expect("Adam's best", final["Adam"], *lesson.pick((250, 545), (95, 125), (85, 115)))

net = small_autoencoder(lesson.seed).to(xp)  # the first step's gradients
_, dlogits = bce_with_logits(net.forward(x_train[:batch]), x_train[:batch])
net.backward(dlogits)
g_all = np.concatenate([to_numpy(g).ravel() for _, _, g in net.named_parameters()])
nonzero = g_all[g_all != 0]
print(f"   first-step gradients: {g_all.size:,} parameters, {np.mean(g_all == 0):.0%} exactly 0, "
      f"median |g| of the rest {np.median(np.abs(nonzero)):.1e}")  # fmt: skip
expect(
    "share of the nonzero gradients with |g| < 1e-5",
    float(np.mean(np.abs(nonzero) < 1e-5)),
    hi=0.01,
    fmt=".2%",
)
adam_last = final["Adam"]
keras_gap = abs(final["Adam, Keras's epsilon"] - adam_last) / adam_last
expect(
    "Keras's epsilon against PyTorch's: relative difference of the last BCE", keras_gap, hi=0.05, fmt=".1e"
)
print(
    f"   the control, PyTorch's eps 1 % larger: relative difference {abs(control[-1] - adam_last) / adam_last:.1e}"
)

fig, axes = plt.subplots(1, 3, figsize=(15, 4))
for name, v in steps_in_lr.items():
    axes[0].semilogx(t, v, label=name)
axes[0].set_xlabel("step t (constant gradient)")
axes[0].set_ylabel("step / lr")
axes[0].set_title("Adam's first steps, with and without the bias correction", fontsize=9)
axes[0].legend(fontsize=7)
axes[0].grid(alpha=0.3)
axes[1].semilogx(g_grid, first[False], label="PyTorch: eps = 1e-8 after the correction")
axes[1].semilogx(g_grid, first[True], label="Keras: eps_hat = 1e-7 on the raw sqrt(v) (t = 1)")
axes[1].semilogx(
    g_grid, g_grid / (g_grid + 1e-7 / math.sqrt(1 - b2**1000)), ":", label="Keras at t = 1000 (formula)"
)
axes[1].set_xlabel("|g|")
axes[1].set_ylabel("step / lr")
axes[1].set_title("one Adam step against the gradient's size", fontsize=9)
axes[1].legend(fontsize=7, loc="lower right")
axes[1].grid(alpha=0.3)
for name, (lr, h) in best.items():
    style = "--" if "Keras" in name else "-"
    axes[2].plot(range(1, epochs + 1), h, style, label=f"{name}, lr {lr:g}")
axes[2].set_xlabel("epoch")
axes[2].set_ylabel("training BCE (nats per image)")
axes[2].set_title(f"MLP autoencoder on {n_img} digits, each at its best lr", fontsize=9)
axes[2].legend(fontsize=7)
axes[2].grid(alpha=0.3)
lesson.savefig(fig, "adam", "bias correction, the two epsilons, the network's loss curves")

# %% [markdown]
# ## Now write it yourself
# `python lessons/exercises/check.py adam` grades your Adam step, bias correction included, against
# minivae's own, and names the likely bug when the error has a recognisable shape (a missing bias
# correction is wrong at step 1 and right in the limit).

# %%
lesson.done()
