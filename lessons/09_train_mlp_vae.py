# %% [markdown]
# # Lesson 9: train a VAE on MNIST on the CPU in under a minute. Loss curves, reconstructions, samples.
#
# ## The idea
#
# Everything a VAE needs is built: layers and their backward (lessons 2-5), the reparameterization
# (lesson 6), the loss (lesson 7), the optimiser (lesson 8). This lesson puts them in a loop, writes the
# loop by hand, and trains PyTorch's example VAE on MNIST.
#
# ## What to look at
#
# - the steps' losses: about 784 ln 2 = 543 nats at the start, below 200 within a hundred steps;
# - the epoch lines: in epoch 1 the training loss sits far above the test loss (see "Why the training
#   loss starts above the test loss" below), and the mean over the epoch's last tenth of steps does not;
# - `09_loss_curves.png`: training and test negative ELBO per epoch;
# - `09_reconstructions.png`: binarised test digits, and the decoder's pixel probabilities from a sampled
#   z and from z = mu (sharper: no noise);
# - `09_prior_samples.png`: decoding z ~ N(0, I). This is what makes it a generative model: unlike lesson
#   3's autoencoder, the KL term has pulled the codes towards the prior, so random codes decode to
#   digit-like shapes. Blurry ones are normal for this small model (the figure shows the decoder's
#   probabilities, not binary draws from them).
#
# Then write it yourself: `python lessons/exercises/check.py train_step` grades your training step
# (its loss, `bce`, was lesson 3's exercise).
#
# ## The model
#
# PyTorch's example VAE (`minivae.models.mlp_vae`, `build_model("mlp", 20)`):
#
#     x (N,1,28,28) -> Flatten -> Linear 784->400 -> ReLU -> h (N,400)
#     h -> fc_mu: Linear 400->20 -> mu (N,20);    h -> fc_logvar: Linear 400->20 -> logvar (N,20)
#     z = mu + exp(0.5 logvar) * eps,  eps ~ N(0, I)                               (lesson 6)
#     z -> Linear 20->400 -> ReLU -> Linear 400->784 -> Reshape -> logits (N,1,28,28)

# %%
import _common
import matplotlib.pyplot as plt
import numpy as np
from _common import expect, section

from minivae.analysis.evaluate import evaluate
from minivae.analysis.figures import image_grid, image_rows
from minivae.backend import default_rng, to_numpy
from minivae.models import build_model
from minivae.nn import sigmoid
from minivae.nn.optim import Adam
from minivae.training import streams
from minivae.training.loop import binarize, epoch_order, step_noise, train_step

lesson = _common.setup("09_train_mlp_vae")
xp = lesson.xp
n_train = lesson.pick(smoke=64, default=60_000, full=60_000)
n_test = lesson.pick(smoke=32, default=1000, full=10_000)
epochs = lesson.pick(smoke=1, default=3, full=10)
latent, batch, beta = 20, 128, 1.0

model = build_model("mlp", latent, seed=lesson.seed).to(xp)
opt = Adam(model.named_parameters(), lr=1e-3)
section("the model")
print(f"   {model.num_parameters():,} parameters (expect 652,824)")
for name, p, _ in model.named_parameters():
    print(f"      {name:22s} {tuple(p.shape)}")

# %% [markdown]
# ## Binary images, so that the loss is a likelihood
#
# The decoder says, for every pixel, the probability that it is on: p(x|z) = prod_i p_i^x_i (1-p_i)^(1-x_i)
# with p = sigmoid(logits). That is a distribution over *binary* images, and for a binary x the BCE is
# exactly -log p(x|z), so the negative ELBO, BCE + KL, is an upper bound on -log p(x) (lesson 7).
#
# MNIST's pixels are grey levels in [0, 1]. BCE against a grey level q is still a fine training loss, but
# not the log-probability of anything, and it cannot reach 0: its minimum over p is the pixel's own
# entropy H(q) = -q ln q - (1-q) ln(1-q), reached at p = q. Summed over the pixels and averaged over the
# test set that floor is 45.5 nats per image (MNIST's 10,000 test images), so a perfect reconstruction
# of grey-level digits still scores 45.5, and the -ELBO on grey levels bounds nothing.
#
# So this lesson, like lesson 12, trains on binarised MNIST (Burda et al. 2015): every time a training
# image is used, each pixel is drawn afresh as 1 with probability its grey level ("dynamic" binarisation;
# `minivae train --binarize dynamic` does the same), and the test images are binarised once, with a fixed
# stream, so every run and every lesson sees the same binary test set. The numbers below are then nats of
# a real likelihood bound on binary images. (Lessons 10 and 11 compare reconstructions with the seed study's
# published PSNR, which was measured on grey levels, so they train on grey levels and say so.)

# %%
x_train, _ = _common.mnist("train", n_train, xp)  # grey levels in [0, 1]
x_grey, y_test = _common.mnist("test", n_test, xp)  # test images: never trained on
x_test = binarize(x_grey, streams.FIXED_BINARIZE["test"])  # one fixed binary draw, as minivae's runs use
print(f"   test pixels that are exactly 0 or 1: grey {float(((x_grey == 0) | (x_grey == 1)).mean()):.2f}, "
      f"binarised {float(((x_test == 0) | (x_test == 1)).mean()):.2f}")  # fmt: skip

# %% [markdown]
# ## The training step
#
# `minivae.training.loop.train_step` is the whole of it; every line is one of the previous lessons:
#
#     logits, mu, logvar = model.forward(x, eps=eps)        # encoder, reparameterization, decoder
#     loss = vae_loss(logits, x, mu, logvar, beta, "elbo")  # BCE_sum + beta KL per image, and the gradients
#     model.backward(loss.dlogits, loss.dmu, loss.dlogvar)  # chain rule, layer by layer, back to the input
#     optimizer.step()                                      # Adam updates every parameter in place
#
# mu and logvar receive gradient from two places: the KL term directly (loss.dmu, loss.dlogvar) and the
# reconstruction term through z (Reparameterize.backward). VAE.backward adds the two.
#
# The loop around it, written out below: shuffle, cut into batches, binarise each batch, draw eps, step;
# after each epoch, the -ELBO on the test images. Every random draw comes from its own counter-based
# stream (the epoch for the shuffle, the step for eps and for the binary pixels), so a run is
# reproducible. `minivae.training.loop.train` is this same loop, with the same streams, plus a validation
# split carved from the training set, checkpoints, resuming and early stopping; the next lessons use it.
# Nothing here is chosen by looking at the test images (no early stopping, no tuning), so they stay a
# test set.
#
# At the start the logits are near 0, every pixel's probability is 1/2, and the loss is 784 ln 2 = 543
# nats. It falls fast.

# %%
section(f"training: {n_train} images, {epochs} epoch(s), batch {batch}, beta {beta}, Adam lr 1e-3")
start = evaluate(model, x_test, y_test, seed=lesson.seed).metrics
expect("test -ELBO before training (about 784 ln 2 = 543)", start["neg_elbo"], 520, 600, ".1f")
history = []
step = 0
for epoch in range(epochs):
    order = epoch_order(lesson.seed, epoch, n_train)  # a new shuffle per epoch
    totals, sums = [], np.zeros(3)
    for b in range(0, n_train, batch):
        idx = order[b : b + batch]
        xb = x_train[xp.asarray(idx)] if xp is not np else x_train[idx]  # (B, 1, 28, 28) grey levels
        xb = binarize(xb, [lesson.seed, streams.STREAMS["binarize"], step])  # a fresh binary draw
        eps = step_noise(lesson.seed, step, (len(xb), latent), "float32", xp)  # eps ~ N(0, I), (B, latent)
        loss, _ = train_step(model, opt, xb, eps, beta, "elbo")  # forward, loss, backward, Adam
        totals.append(float(loss.total))
        sums += len(xb) * np.array([float(loss.total), float(loss.recon), float(loss.kl)])
        if step < 3 or (lesson.mode != "smoke" and step in (10, 50, 100)):
            print(f"   step {step:3d}: loss {float(loss.total):6.1f} = BCE {float(loss.recon):6.1f} "
                  f"+ KL {float(loss.kl):5.2f}")  # fmt: skip
        step += 1
    train_loss, train_recon, train_kl = sums / n_train
    tail = float(np.mean(totals[-max(1, len(totals) // 10) :]))  # the epoch's last tenth of steps
    m = evaluate(model, x_test, y_test, seed=lesson.seed).metrics
    history.append({"epoch": epoch + 1, "train": train_loss, "train_tail": tail, "test": m["neg_elbo"]})
    print(f"   epoch {epoch + 1}: train {train_loss:.1f} (BCE {train_recon:.1f} + KL {train_kl:.1f}; "
          f"last tenth of the epoch {tail:.1f}), test -ELBO {m['neg_elbo']:.1f} (KL {m['kl_nats']:.1f})")  # fmt: skip

# %% [markdown]
# ## Why the training loss starts above the test loss
#
# The training number of an epoch is the mean of its steps' losses, taken while the model learns; the test
# number is measured once, at the end of the epoch, with the final weights. In epoch 1 the loss falls
# from 543 to near its end value, so the epoch's mean sits far above where the model ends. The mean over
# the epoch's last tenth of steps, printed beside it, is close to the test number. There is no dropout
# or other training-only noise in this model, and both numbers use a sampled z and binary images drawn
# the same way, so the lag is nearly all of the gap. From epoch 2 on the model changes less within an
# epoch and the gap shrinks to a few nats (in `--full`'s tenth epoch, to under one). A training loss
# *below* the test loss would be the sign of overfitting, which 60,000 images and a few epochs do not
# reach.
#
# ## What the numbers mean
#
# The test -ELBO is an upper bound on -log p(x) of the binary test images, in nats per image; lesson 13
# measures how loose it is. Its KL part, averaged over the images, is often read as "the information the
# code carries". It is an upper bound on it: for x drawn from the data and z from q(z|x),
#
#     E_x KL(q(z|x) || p(z)) = I(x; z) + KL(q(z) || p(z)),    q(z) = E_x q(z|x) (the aggregate posterior)
#
# and the second term is >= 0 (Hoffman and Johnson 2016). For x uniform over N test images I(x; z) is
# at most ln N (ln 1000 = 6.9 nats), far below the KL printed here: most of the KL pays for the
# aggregate posterior not being N(0, I), not for information about the image.

# %%
section("results")
final = evaluate(model, x_test, y_test, seed=lesson.seed).metrics
expect(
    "test -ELBO (nats per image)", final["neg_elbo"], *lesson.pick((150, 560), (103, 115), (98, 107)), ".1f"
)
expect("test KL (nats per image)", final["kl_nats"], *lesson.pick((0, 30), (20, 30), (22, 31)), ".1f")
print(f"   information about which test image, at most ln {n_test} = {np.log(n_test):.1f} nats")
expect(
    "active latent units (variance of mu > 0.01)",
    final["active_units"],
    *lesson.pick((0, 20), (16, 20), (16, 20)),
    ".0f",
)
probs = sigmoid(model.decode(model.encode(x_test)[0]))  # (N, 1, 28, 28) pixel probabilities at z = mu
mse = float(((probs - x_grey) ** 2).mean())
print(
    f"   PSNR of the decoded probabilities (z = mu) against the grey-level digits: {10 * np.log10(1 / mse):.1f} dB"
)

fig, ax = plt.subplots(figsize=(6.4, 4.2))
ep = [h["epoch"] for h in history]
ax.plot(ep, [h["train"] for h in history], "-o", label="train (mean over the epoch)")
ax.plot(ep, [h["train_tail"] for h in history], ":^", label="train (the epoch's last tenth)")
ax.plot(ep, [h["test"] for h in history], "--s", label="test (end of the epoch)")
ax.set_xlabel("epoch")
ax.set_xticks(ep)
ax.set_ylabel("-ELBO (nats per binary image)")
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
lesson.savefig(fig, "loss_curves", "train and test -ELBO per epoch")

# %%
k = lesson.pick(smoke=4, default=10, full=10)  # images per row
grng = default_rng(lesson.seed, xp)
rows = {
    "binarised test digits": to_numpy(x_test[:k])[:, 0],
    "decoded from a sampled z": to_numpy(model.reconstruct(x_test[:k], sample=True, rng=grng))[:, 0],
    "decoded from z = mu": to_numpy(model.reconstruct(x_test[:k]))[:, 0],
}
_common.saved(image_rows(rows, lesson.figure("reconstructions")), "test digits and their reconstructions")
z = xp.asarray(np.random.default_rng(lesson.seed).standard_normal((64, latent), dtype=np.float32))
samples = to_numpy(sigmoid(model.decode(z)))[:, 0]  # (64, 28, 28) pixel probabilities
path = image_grid(samples, lesson.figure("prior_samples"), ncols=8, title="decoded z ~ N(0, I)")
_common.saved(path, "64 samples from the prior, decoded")

# %%
lesson.done()
