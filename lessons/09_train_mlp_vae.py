"""Lesson 9: train a VAE on MNIST on the CPU in about a minute. Loss curves, reconstructions, samples.

The model
---------
PyTorch's example VAE (minivae.models.mlp_vae, build_model("mlp", 20)):

    x (N,1,28,28) -> Flatten -> Linear 784->400 -> ReLU -> h (N,400)
    h -> fc_mu: Linear 400->20 -> mu (N,20);    h -> fc_logvar: Linear 400->20 -> logvar (N,20)
    z = mu + exp(0.5 logvar) * eps,  eps ~ N(0, I)                               (lesson 6)
    z -> Linear 20->400 -> ReLU -> Linear 400->784 -> Reshape -> logits (N,1,28,28)

The training step
-----------------
minivae.training.loop.train_step is the whole of it; every line is one of the previous lessons:

    logits, mu, logvar = model.forward(x, eps=eps)        # encoder, reparameterization, decoder
    loss = vae_loss(logits, x, mu, logvar, beta, "elbo")  # BCE_sum + beta KL per image, and the gradients
    model.backward(loss.dlogits, loss.dmu, loss.dlogvar)  # chain rule, layer by layer, back to the input
    optimizer.step()                                      # Adam updates every parameter in place

mu and logvar receive gradient from two places: the KL term directly (loss.dmu, loss.dlogvar) and the
reconstruction term through z (Reparameterize.backward). VAE.backward adds the two.

This lesson writes the loop around that step by hand: shuffle, cut into batches, draw eps, step; evaluate
on held-out images after each epoch. minivae.training.loop.train is the same loop with validation splits,
checkpoints, resuming and early stopping, and the next lessons use it.

What to expect
--------------
At the start the logits are near 0 and the loss is about 784 ln 2 = 543 nats. It falls fast: below 200
within the first epoch, about 110-115 nats after three epochs over the 60,000 images (about a minute),
about 105 after the full 10 epochs
on 60,000 (--full; PyTorch's example reports the same). The KL settles at 20-30 nats: the code carries about
that much information about each digit.

What to look at
---------------
- 09_loss_curves.png: training and held-out negative ELBO per epoch;
- 09_reconstructions.png: test digits, decoded from a sampled z and from z = mu (sharper: no noise);
- 09_prior_samples.png: decoding z ~ N(0, I). This is what makes it a generative model: unlike lesson 3's
  autoencoder, the KL term has pulled the codes towards the prior, so random codes decode to digit-like
  shapes. Blurry ones are normal for this small model (the Bernoulli decoder shows its mean).
"""

from __future__ import annotations

import time

import _common
import numpy as np
from _common import expect, section

from minivae.analysis.evaluate import evaluate
from minivae.analysis.figures import image_grid, image_rows, loss_curves
from minivae.backend import default_rng, to_numpy
from minivae.models import build_model
from minivae.nn import sigmoid
from minivae.nn.optim import Adam
from minivae.training.loop import step_noise, train_step


def run() -> None:
    lesson = _common.setup(__file__, __doc__)
    xp = lesson.xp
    n_train = lesson.pick(smoke=64, default=60_000, full=60_000)
    n_val = lesson.pick(smoke=32, default=1000, full=10_000)
    epochs = lesson.pick(smoke=1, default=3, full=10)
    latent, batch, beta = 20, 128, 1.0

    x_train, _ = _common.mnist("train", n_train, xp)
    x_val, y_val = _common.mnist("test", n_val, xp)  # held-out digits (the test set)
    model = build_model("mlp", latent, seed=lesson.seed).to(xp)
    opt = Adam(model.named_parameters(), lr=1e-3)
    section("the model")
    print(f"   {model.num_parameters():,} parameters (expect 652,824)")
    for name, p, _ in model.named_parameters():
        print(f"      {name:22s} {tuple(p.shape)}")

    section(f"training: {n_train} images, {epochs} epoch(s), batch {batch}, beta {beta}, Adam lr 1e-3")
    start = evaluate(model, x_val, y_val, seed=lesson.seed).metrics
    expect("held-out -ELBO before training (about 784 ln 2 = 543)", start["neg_elbo"], 520, 600, ".1f")
    history = []
    step = 0
    for epoch in range(epochs):
        t0 = time.perf_counter()
        order = np.random.default_rng([lesson.seed, 0, epoch]).permutation(n_train)  # a new shuffle per epoch
        sums = np.zeros(3)
        for b in range(0, n_train, batch):
            xb = x_train[xp.asarray(order[b : b + batch])]  # (B, 1, 28, 28)
            # eps ~ N(0, I), (B, latent): drawn from its own stream per step, so a run is reproducible
            eps = step_noise(lesson.seed, step, (len(xb), latent), "float32", xp)
            loss, _ = train_step(model, opt, xb, eps, beta, "elbo")  # forward, loss, backward, Adam
            sums += len(xb) * np.array([float(loss.total), float(loss.recon), float(loss.kl)])
            if step < 3 or (lesson.mode != "smoke" and step in (10, 50)):
                total, recon, kl = float(loss.total), float(loss.recon), float(loss.kl)
                print(f"   step {step:3d}: loss {total:6.1f} = BCE {recon:6.1f} + KL {kl:5.2f}")
            step += 1
        train_loss, train_recon, train_kl = sums / n_train
        m = evaluate(model, x_val, y_val, seed=lesson.seed).metrics
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "val_loss": m["neg_elbo"]})
        print(
            f"   epoch {epoch + 1}: train {train_loss:.1f} (BCE {train_recon:.1f} + KL {train_kl:.1f}), "
            f"held-out -ELBO {m['neg_elbo']:.1f} (KL {m['kl_nats']:.1f}), {time.perf_counter() - t0:.1f} s"
        )

    section("results")
    final = evaluate(model, x_val, y_val, seed=lesson.seed).metrics
    expect(
        "held-out -ELBO (nats per image)",
        final["neg_elbo"],
        *lesson.pick((150, 560), (100, 125), (95, 110)),
        ".1f",
    )
    expect("held-out KL (nats per image)", final["kl_nats"], *lesson.pick((0, 30), (15, 35), (20, 35)), ".1f")
    expect(
        "active latent units (variance of mu > 0.01)",
        final["active_units"],
        *lesson.pick((0, 20), (8, 20), (10, 20)),
        ".0f",
    )
    psnr_mu, psnr_z = final["psnr_mean"], final["psnr_sampled"]
    print(f"   reconstruction PSNR: {psnr_mu:.1f} dB from z = mu, {psnr_z:.1f} dB from a sampled z")

    _common.saved(
        loss_curves({"MLP VAE": history}, lesson.figure("loss_curves"), "(-ELBO, nats per image)"),
        "train and held-out loss per epoch",
    )
    k = lesson.pick(smoke=4, default=10, full=10)  # images per row
    grng = default_rng(lesson.seed, xp)
    rows = {
        "test digits": to_numpy(x_val[:k])[:, 0],
        "decoded from a sampled z": to_numpy(model.reconstruct(x_val[:k], sample=True, rng=grng))[:, 0],
        "decoded from z = mu": to_numpy(model.reconstruct(x_val[:k]))[:, 0],
    }
    _common.saved(image_rows(rows, lesson.figure("reconstructions")), "test digits and their reconstructions")
    z = xp.asarray(np.random.default_rng(lesson.seed).standard_normal((64, latent), dtype=np.float32))
    samples = to_numpy(sigmoid(model.decode(z)))[:, 0]  # (64, 28, 28) pixel means
    path = image_grid(samples, lesson.figure("prior_samples"), ncols=8, title="decoded z ~ N(0, I)")
    _common.saved(path, "64 samples from the prior, decoded")


if __name__ == "__main__":
    _common.main(run)
