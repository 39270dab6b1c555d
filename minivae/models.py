"""The VAE models: an encoder to (mu, logvar), the reparameterization, a decoder to pixel logits.

    x (N, 1, 28, 28) -> encoder -> h -> fc_mu, fc_logvar -> (mu, logvar)   (N, latent) each
    z = mu + exp(0.5 logvar) * eps
    z -> decoder -> logits (N, 1, 28, 28);   the reconstruction is sigmoid(logits)

With k samples per image (the IWAE objective, minivae.nn.iwae) eps is (k, N, latent): the encoder runs
once on the N images, z = mu + std * eps broadcasts to (k, N, latent), and the decoder runs on the k * N
rows in one batch, sample-major (row s * N + n is sample s of image n).

The decoder stops at logits: the loss takes BCE on logits (exact for any value), and the images are
sigmoid(logits), the seed study's sigmoid output layer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from minivae.backend import get_array_module, to_numpy
from minivae.errors import UserError
from minivae.nn import (
    Conv2d,
    ConvTranspose2d,
    Flatten,
    LeakyReLU,
    Linear,
    Module,
    ReLU,
    Reshape,
    Sequential,
    Tanh,
    ZeroPad2d,
    sigmoid,
)
from minivae.nn.reparam import Reparameterize

ARCHS = ("mlp", "conv")
BOTTLENECKS = ("relu", "leaky_relu")
ACTIVATIONS = {"relu": ReLU, "tanh": Tanh}  # the mlp model's hidden-layer activation
DEFAULT_INIT = {"mlp": "pytorch", "conv": "glorot"}  # each model's initialisation unless one is given
IMAGE_SHAPE = (1, 28, 28)


class VAE(Module):
    """encoder -> (fc_mu, fc_logvar) -> reparameterize -> decoder. Children named as in PyTorch."""

    def __init__(
        self, encoder: Module, fc_mu: Linear, fc_logvar: Linear, decoder: Module, input_shape=IMAGE_SHAPE
    ) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.encoder, self.fc_mu, self.fc_logvar, self.decoder = encoder, fc_mu, fc_logvar, decoder
        self.latent = fc_mu.out_features
        self.reparam = Reparameterize()
        self.input_grad = False

    @property
    def input_grad(self) -> bool:
        """Whether backward returns dL/dx. False by default, as in PyTorch, where the images do not
        require grad: the encoder's first layer then skips its input gradient (for the conv model a
        product and an im2col over the whole batch) and backward returns None."""
        return self._input_grad

    @input_grad.setter
    def input_grad(self, flag: bool) -> None:
        self._input_grad = bool(flag)
        first = self.encoder.first_trainable() if isinstance(self.encoder, Sequential) else self.encoder
        if first is not None:
            first.needs_input_grad = self._input_grad

    def children(self) -> Iterator[tuple[str, Module]]:
        yield from (("encoder", self.encoder), ("fc_mu", self.fc_mu), ("fc_logvar", self.fc_logvar))
        yield ("decoder", self.decoder)

    @property
    def xp(self) -> ModuleType:
        """numpy or cupy: where the weights live."""
        return get_array_module(self.fc_mu.params["weight"])

    def check_input(self, x: Any, values: bool = True) -> None:
        """A clear error for images the model cannot take: wrong shape or dtype, NaN, or outside [0, 1].

        The shape and dtype checks are free. The value check (values=True) costs two reductions (min and
        max; NaN makes both NaN) and, on a GPU, a wait for the device and a transfer to the host.
        """
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise UserError(
                f"the model expects images of shape (N, {', '.join(map(str, self.input_shape))}), "
                f"got {tuple(x.shape)}; "
                "use minivae.data.as_nchw(images) on (N, 28, 28) or (N, 784) arrays"
            )
        dtype = self.fc_mu.params["weight"].dtype
        if x.dtype != dtype:
            raise UserError(f"the model holds {dtype} weights but got {x.dtype} images; cast with .astype")
        if not values:
            return
        lo, hi = (float(v) for v in to_numpy(get_array_module(x).stack([x.min(), x.max()])))  # one transfer
        if not (lo >= 0.0 and hi <= 1.0):  # also False when either is NaN
            what = "NaN values" if lo != lo or hi != hi else f"values in [{lo:g}, {hi:g}]"
            raise UserError(
                f"the model expects pixel intensities in [0, 1] (the BCE targets), got {what}; "
                "scale uint8 images with minivae.data.to_float, and drop or fix images with NaN"
            )

    def encode(self, x: Any) -> tuple[Any, Any]:
        """x: (N, 1, 28, 28) -> mu, logvar: (N, latent)."""
        h = self.encoder.forward(x)
        self.encoder_output = h  # (N, hidden): kept to count live bottleneck units
        return self.fc_mu.forward(h), self.fc_logvar.forward(h)

    def decode(self, z: Any) -> Any:
        """z: (N, latent) -> logits (N, 1, 28, 28)."""
        return self.decoder.forward(z)

    def forward(  # type: ignore[override]
        self, x: Any, eps: Any = None, rng: Any = None, check_values: bool = True
    ) -> tuple[Any, Any, Any]:
        """x -> (logits, mu, logvar). Give eps (N, latent) to fix the noise, or rng to draw it.

        eps (k, N, latent) draws k samples of z per image: logits are then (k * N, 1, 28, 28), sample-major,
        and mu, logvar stay (N, latent).

        eps is cast to the model's dtype (float64 noise does not turn a float32 model's outputs float64).
        check_values=False skips check_input's value check (NaN, outside [0, 1]), which on a GPU waits
        for the device: the training loop checks each data set once instead of every batch.
        """
        if eps is None and rng is None:
            raise TypeError(
                "model.forward(x) needs the noise of z = mu + exp(logvar / 2) * eps: pass "
                "rng=minivae.backend.default_rng(seed, model.xp) to draw it, or eps, an array of shape "
                f"(N, {self.latent}), to fix it (eps=0 gives z = mu)"
            )
        self.check_input(x, values=check_values)
        mu, logvar = self.encode(x)
        z = self.reparam.forward(mu, logvar, eps, rng)  # (N, latent), or (k, N, latent)
        return self.decode(z.reshape(-1, self.latent)), mu, logvar

    def backward(  # type: ignore[override]
        self, dlogits: Any, dmu: Any, dlogvar: Any, dz: Any = None
    ) -> Any:
        """Back through decoder, reparameterization and both heads; returns dL/dx (None unless input_grad).

        mu and logvar get gradient from two places: the loss's KL term (dmu, dlogvar given here) and,
        through z, the reconstruction term. dz, shaped like z: a gradient the loss puts on z directly
        (the IWAE objective's log p(z) term), added to the decoder's. With k samples per image, z is
        (k, N, latent) and the reparameterization's gradients are summed over the k samples.
        """
        dz_dec = self.decoder.backward(dlogits)  # (rows, latent)
        z_shape = self.reparam.noise.shape  # (N, latent), or (k, N, latent)
        dz_all = dz_dec.reshape(z_shape) if dz is None else dz_dec.reshape(z_shape) + dz
        dmu_z, dlogvar_z = self.reparam.backward(dz_all)
        if dmu_z.ndim == 3:  # k samples: mu and logvar fed every one of them
            dmu_z, dlogvar_z = dmu_z.sum(axis=0), dlogvar_z.sum(axis=0)
        dh = self.fc_mu.backward(dmu + dmu_z) + self.fc_logvar.backward(dlogvar + dlogvar_z)
        return self.encoder.backward(dh)

    def reconstruct(self, x: Any, sample: bool = False, rng: Any = None) -> Any:
        """sigmoid(decode(z)) with z = mu (sample=False) or z ~ q(z|x) (sample=True): images in [0, 1]."""
        mu, logvar = self.encode(x)
        if sample:
            mu = self.reparam.forward(mu, logvar, rng=rng)
        return sigmoid(self.decode(mu))


def mlp_vae(
    latent: int = 20,
    hidden: int | Sequence[int] = 400,
    init: str = "pytorch",
    rng=None,
    dtype="float32",
    activation: str = "relu",
) -> VAE:
    """784 -> hidden[0] -> ... -> hidden[-1] -> (mu, logvar) -> hidden[-1] -> ... -> hidden[0] -> 784.

    hidden: one size (PyTorch's example VAE: 400, ReLU) or a list, the decoder mirroring the encoder
    (Burda et al. 2015: [200, 200], tanh). Parameter names: encoder.1, encoder.3, ... and decoder.0,
    decoder.2, ...: a one-layer model's are those of PyTorch's example whatever the activation.
    """
    sizes = [hidden] if isinstance(hidden, int) else [int(h) for h in hidden]
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}: choose one of {', '.join(ACTIVATIONS)}")
    act = ACTIVATIONS[activation]
    rng = rng if rng is not None else np.random.default_rng()
    kw = {"init": init, "rng": rng, "dtype": dtype}
    enc: list[Module] = [Flatten()]
    for n_in, n_out in zip([784, *sizes], sizes):
        enc += [Linear(n_in, n_out, **kw), act()]
    fc_mu, fc_logvar = Linear(sizes[-1], latent, **kw), Linear(sizes[-1], latent, **kw)
    up = [latent, *sizes[::-1]]
    dec: list[Module] = []
    for n_in, n_out in zip(up, up[1:]):
        dec += [Linear(n_in, n_out, **kw), act()]
    dec += [Linear(sizes[0], 784, **kw), Reshape(*IMAGE_SHAPE)]
    return VAE(Sequential(*enc), fc_mu, fc_logvar, Sequential(*dec))


def conv_vae(
    latent: int = 15, init: str = "glorot", bottleneck: str = "relu", rng=None, dtype="float32"
) -> VAE:
    """The seed study's Keras model, layer for layer, with Keras's 'same' padding reproduced exactly.

    encoder: (1,28,28) Conv 1->32 3x3 same -> (32,28,28) -> pad (0,1,0,1), Conv 32->64 3x3 stride 2
             -> (64,14,14) -> Conv 64->64 same -> Conv 64->64 same -> Flatten 12,544 -> Linear 32
             (all followed by ReLU; `bottleneck` picks the activation after the Linear 32)
    decoder: Linear latent -> 12,544, ReLU -> (64,14,14) -> ConvTranspose 64->32 3x3 stride 2 -> (32,29,29)
             -> keep [0, 28) as Keras does -> ReLU -> ConvTranspose 32->1 3x3 same -> logits (1,28,28)
    714,559 parameters at latent 15.
    """
    if bottleneck not in BOTTLENECKS:
        raise ValueError(f"unknown bottleneck {bottleneck!r}: choose one of {', '.join(BOTTLENECKS)}")
    rng = rng if rng is not None else np.random.default_rng()
    kw = {"init": init, "rng": rng, "dtype": dtype}
    encoder = Sequential(
        Conv2d(1, 32, 3, padding=1, **kw),
        ReLU(),  # (32, 28, 28)
        ZeroPad2d((0, 1, 0, 1)),
        Conv2d(32, 64, 3, stride=2, **kw),
        ReLU(),  # (64, 14, 14)
        Conv2d(64, 64, 3, padding=1, **kw),
        ReLU(),
        Conv2d(64, 64, 3, padding=1, **kw),
        ReLU(),
        Flatten(),
        Linear(64 * 14 * 14, 32, **kw),  # (12544,) -> (32,)
        ReLU() if bottleneck == "relu" else LeakyReLU(),
    )
    fc_mu, fc_logvar = Linear(32, latent, **kw), Linear(32, latent, **kw)
    decoder = Sequential(
        Linear(latent, 64 * 14 * 14, **kw),
        ReLU(),
        Reshape(64, 14, 14),
        ConvTranspose2d(64, 32, 3, stride=2, **kw),  # (32, 29, 29)
        ZeroPad2d((0, -1, 0, -1)),
        ReLU(),  # (32, 28, 28): Keras keeps rows/cols [0, 28)
        ConvTranspose2d(32, 1, 3, padding=1, **kw),  # (1, 28, 28) logits
    )
    return VAE(encoder, fc_mu, fc_logvar, decoder)


def build_model(
    arch: str,
    latent: int,
    *,
    hidden: int | Sequence[int] = 400,
    init: str | None = None,
    bottleneck: str = "relu",
    seed: int | None = 0,
    dtype: Any = "float32",
    activation: str = "relu",
) -> VAE:
    """A model by name, initialised from `seed` on the host (same weights on every backend).
    hidden and activation: the mlp model's hidden sizes and their activation (the conv model ignores both)."""
    rng = np.random.default_rng(seed)
    if arch == "mlp":
        return mlp_vae(latent, hidden, init or DEFAULT_INIT["mlp"], rng, dtype, activation)
    if arch == "conv":
        return conv_vae(latent, init or DEFAULT_INIT["conv"], bottleneck, rng, dtype)
    raise ValueError(f"unknown arch {arch!r}: choose one of {', '.join(ARCHS)}")
