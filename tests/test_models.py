"""The VAE models: the seed architecture's shapes and parameter count, and end-to-end gradient checks."""

from __future__ import annotations

import numpy as np
import pytest

from minivae.errors import UserError
from minivae.models import VAE, build_model
from minivae.nn import (
    Conv2d,
    ConvTranspose2d,
    Flatten,
    Linear,
    ReLU,
    Reshape,
    Sequential,
    Tanh,
    ZeroPad2d,
)
from minivae.nn.gradcheck import check_vae


def small_conv_vae(rng, latent=2):
    """The seed model's pattern (asymmetric same padding, crop after the transposed conv) at 6 x 6."""
    kw = {"rng": rng, "dtype": "float64"}
    enc = Sequential(
        Conv2d(1, 2, 3, padding=1, **kw),
        ReLU(),
        ZeroPad2d((0, 1, 0, 1)),
        Conv2d(2, 3, 3, stride=2, **kw),
        Tanh(),
        Flatten(),
        Linear(27, 4, **kw),
        ReLU(),
    )
    dec = Sequential(
        Linear(latent, 27, **kw),
        ReLU(),
        Reshape(3, 3, 3),
        ConvTranspose2d(3, 2, 3, stride=2, **kw),
        ZeroPad2d((0, -1, 0, -1)),
        Tanh(),
        ConvTranspose2d(2, 1, 3, padding=1, **kw),
    )
    return VAE(enc, Linear(4, latent, **kw), Linear(4, latent, **kw), dec, input_shape=(1, 6, 6))


@pytest.mark.parametrize("form", ["elbo", "seed"])
def test_small_conv_vae_end_to_end(form, xp, rng):
    model = small_conv_vae(rng).to(xp)
    x = xp.asarray(0.05 + 0.9 * rng.random((3, 1, 6, 6)))  # inside [0, 1] even when nudged by h
    eps = xp.asarray(rng.standard_normal((3, 2)))
    errors = check_vae(model, x, eps, beta=0.7, form=form)
    assert len(errors) == 1 + len(list(model.named_parameters()))
    assert max(errors.values()) <= 1e-6, errors


def smooth(model: VAE) -> VAE:
    """Swap every ReLU for Tanh. A full-size model has thousands of ReLUs, and a finite difference of
    a bias moves all the units it feeds: one of them crossing 0 (a kink) spoils the estimate. Tanh
    keeps every layer and shape and has no kink, so what is checked is the wiring and the layers."""
    for _, child in model.children():
        if isinstance(child, Sequential):
            child.layers = [Tanh() if isinstance(layer, ReLU) else layer for layer in child.layers]
    return model


def test_mlp_vae_end_to_end(rng):
    model = smooth(build_model("mlp", latent=3, hidden=6, seed=1, dtype="float64"))
    x = 0.05 + 0.9 * rng.random((2, 1, 28, 28))
    errors = check_vae(model, x, rng.standard_normal((2, 3)), per_param=40)
    assert max(errors.values()) <= 1e-6, errors


def test_seed_conv_vae_end_to_end_sampled(rng):
    """The real seed architecture, float64, on random entries of every parameter."""
    model = smooth(build_model("conv", latent=4, seed=2, dtype="float64"))
    x = 0.05 + 0.9 * rng.random((2, 1, 28, 28))
    errors = check_vae(model, x, rng.standard_normal((2, 4)), form="seed", per_param=4)
    assert max(errors.values()) <= 1e-6, errors


def test_seed_architecture_shapes_and_count():
    model = build_model("conv", latent=15)
    assert model.num_parameters() == 714_559
    sizes = {k: p.size for k, p, _ in model.named_parameters()}
    conv = [sizes[f"encoder.{i}.weight"] + sizes[f"encoder.{i}.bias"] for i in (0, 3, 5, 7)]
    assert conv == [320, 18_496, 36_928, 36_928]
    assert sizes["encoder.10.weight"] + sizes["encoder.10.bias"] == 401_440
    assert sizes["fc_mu.weight"] + sizes["fc_mu.bias"] == 495
    assert sizes["decoder.0.weight"] + sizes["decoder.0.bias"] == 200_704
    assert sizes["decoder.3.weight"] + sizes["decoder.3.bias"] == 18_464
    assert sizes["decoder.6.weight"] + sizes["decoder.6.bias"] == 289
    x = np.zeros((2, 1, 28, 28), np.float32)
    logits, mu, logvar = model.forward(x, eps=np.zeros((2, 15), np.float32))
    assert logits.shape == (2, 1, 28, 28) and mu.shape == logvar.shape == (2, 15)


def test_same_seed_same_weights():
    a, b = build_model("mlp", 5, seed=3).state_dict(), build_model("mlp", 5, seed=3).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    c = build_model("mlp", 5, seed=4).state_dict()
    assert not np.array_equal(a["fc_mu.weight"], c["fc_mu.weight"])


def test_wrong_input_is_a_clear_error():
    model = build_model("mlp", 5)
    with pytest.raises(UserError, match=r"shape \(N, 1, 28, 28\).*as_nchw"):
        model.forward(np.zeros((2, 784), np.float32), rng=np.random.default_rng())
    with pytest.raises(UserError, match="float64 images"):
        model.forward(np.zeros((2, 1, 28, 28)), rng=np.random.default_rng())
    x = np.zeros((2, 1, 28, 28), np.float32)
    x[1, 0, 3, 3] = np.nan
    with pytest.raises(UserError, match="got NaN values.*drop or fix"):
        model.forward(x, rng=np.random.default_rng())
    with pytest.raises(UserError, match=r"in \[0, 1\].*got values in \[255, 255\].*to_float"):
        model.forward(np.full((2, 1, 28, 28), 255, np.float32), rng=np.random.default_rng())


def test_unknown_arch():
    with pytest.raises(ValueError, match="unknown arch"):
        build_model("resnet", 5)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_input_gradient_only_when_asked(arch, xp):
    """By default (as in PyTorch, images need no gradient) the first layer skips dL/dx and backward
    returns None; every parameter gradient is the same as when dL/dx is computed."""
    from minivae.backend import to_numpy
    from minivae.nn.losses import vae_loss

    rng = np.random.default_rng(0)
    x = xp.asarray(rng.random((4, 1, 28, 28)))
    eps = xp.asarray(rng.standard_normal((4, 5)))
    model = build_model(arch, 5, seed=0, dtype="float64").to(xp)
    grads = []
    for flag in (False, True):
        model.input_grad = flag
        logits, mu, logvar = model.forward(x, eps=eps)
        out = vae_loss(logits, x, mu, logvar)
        dx = model.backward(out.dlogits, out.dmu, out.dlogvar)
        assert (dx is None) == (not flag)
        grads.append({k: to_numpy(g).copy() for k, _, g in model.named_parameters()})
    assert dx.shape == x.shape
    for k in grads[0]:
        np.testing.assert_array_equal(grads[0][k], grads[1][k], err_msg=k)
    assert build_model(arch, 5).input_grad is False


def test_forward_without_noise_says_how_to_call_it():
    model = build_model("mlp", 5)
    x = np.zeros((2, 1, 28, 28), np.float32)
    with pytest.raises(TypeError, match=r"rng=minivae\.backend\.default_rng\(seed, model\.xp\).*\(N, 5\)"):
        model.forward(x)
    with pytest.raises(TypeError, match="needs the noise"):
        model.reconstruct(x, sample=True)
    logits, mu, _ = model.forward(x, eps=0)  # z = mu
    np.testing.assert_array_equal(logits, model.decode(mu))


@pytest.mark.parametrize("model_dtype,eps_dtype", [("float32", np.float64), ("float64", np.float32)])
def test_eps_is_cast_to_the_model_dtype(model_dtype, eps_dtype):
    """float64 noise (numpy's default) keeps a float32 model in float32, with the same numbers as
    float32 noise; and float32 noise in a float64 model (a gradient check) keeps float64."""
    model = build_model("mlp", 5, dtype=model_dtype)
    rng = np.random.default_rng(0)
    x = rng.random((3, 1, 28, 28)).astype(model_dtype)
    eps = rng.standard_normal((3, 5)).astype(eps_dtype)
    outputs = model.forward(x, eps=eps)
    assert [o.dtype for o in outputs] == [np.dtype(model_dtype)] * 3
    same = model.forward(x, eps=eps.astype(model_dtype))
    for a, b in zip(outputs, same):
        np.testing.assert_array_equal(a, b)


def test_mlp_with_a_list_of_hidden_sizes():
    """--hidden 200 200 --activation tanh: two tanh layers each way, the decoder mirroring the encoder
    (Burda et al. 2015: 425,284 parameters at latent 50); one size keeps PyTorch's example's names."""
    from minivae.nn import Tanh

    model = build_model("mlp", 50, hidden=[200, 200], activation="tanh")
    shapes = {k: p.shape for k, p, _ in model.named_parameters()}
    assert shapes["encoder.1.weight"] == (200, 784) and shapes["encoder.3.weight"] == (200, 200)
    assert shapes["fc_mu.weight"] == (50, 200)
    assert shapes["decoder.0.weight"] == (200, 50) and shapes["decoder.2.weight"] == (200, 200)
    assert shapes["decoder.4.weight"] == (784, 200)
    assert model.num_parameters() == 425_284
    assert sum(isinstance(layer, Tanh) for layer in model.encoder.layers + model.decoder.layers) == 4
    assert sorted(build_model("mlp", 20, hidden=400).state_dict()) == sorted(
        build_model("mlp", 20, hidden=[400], activation="tanh").state_dict()
    )  # the names a one-layer checkpoint has, whatever the activation
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        build_model("mlp", 5, activation="gelu")


def test_two_layer_tanh_mlp_end_to_end(rng):
    """No kinks with tanh: every parameter's gradient through two layers each way, float64."""
    model = build_model("mlp", 3, hidden=[7, 5], activation="tanh", seed=2, dtype="float64")
    x = 0.05 + 0.9 * rng.random((2, 1, 28, 28))
    errors = check_vae(model, x, rng.standard_normal((2, 3)), per_param=40)
    assert max(errors.values()) <= 1e-6, errors


def test_k_samples_per_image_run_as_one_batch(rng):
    """eps (k, N, latent): one encoder pass, k N decoded rows sample-major, each row the one-sample
    forward of its image and noise; backward with the rows' dlogits sums over the samples."""
    model = build_model("mlp", 3, hidden=[8], activation="tanh", seed=0, dtype="float64")
    x, eps = rng.random((4, 1, 28, 28)), rng.standard_normal((5, 4, 3))
    logits, mu, logvar = model.forward(x, eps=eps)
    assert logits.shape == (20, 1, 28, 28) and mu.shape == logvar.shape == (4, 3)
    for s in range(5):
        np.testing.assert_allclose(logits[4 * s : 4 * s + 4], model.forward(x, eps=eps[s])[0], rtol=1e-13)
    dlogits = rng.standard_normal(logits.shape)
    model.forward(x, eps=eps)
    model.backward(dlogits, np.zeros_like(mu), np.zeros_like(mu))
    total = {k: g.copy() for k, _, g in model.named_parameters()}
    parts = {k: 0.0 for k in total}
    for s in range(5):
        model.forward(x, eps=eps[s])
        model.backward(dlogits[4 * s : 4 * s + 4], np.zeros_like(mu), np.zeros_like(mu))
        parts = {k: parts[k] + g for k, _, g in model.named_parameters()}
    for k in total:
        np.testing.assert_allclose(total[k], parts[k], rtol=1e-10, atol=1e-13, err_msg=k)
