# %% [markdown]
# # Lesson 1: arrays and backends. NumPy on the CPU, CuPy on the GPU, one code path for both.
#
# ## The idea
#
# Everything in minivae is arithmetic on n-dimensional arrays. NumPy holds them in host memory and runs
# on the CPU; CuPy copies NumPy's interface but holds them in GPU memory and runs each operation as a
# CUDA kernel. Because the two look alike, minivae writes every layer once and asks the *array* which
# module it belongs to:
#
#     xp = get_array_module(x)      # numpy or cupy, whichever owns x
#     y = xp.maximum(x, 0)          # the same line runs on either
#
# The backend is picked once, at the edge (`--backend cupy`, or `TrainConfig.backend`), with
# `minivae.backend.get_backend(name)`. CuPy is imported lazily, so without a GPU everything still runs on
# NumPy, and asking for CuPy where it cannot run is a clear error (a `BackendError`), not a crash deep
# inside.
#
# ## What to look at
#
# - the printed epsilons, and float32 losing 1e-8;
# - the image grid (`01_digits.png`) and the pixel histogram (`01_pixel_histogram.png`): two spikes, at 0
#   and near 1;
# - with `--backend cupy` (or `MINIVAE_BACKEND=cupy` for the notebook): the host->device copy time, and
#   the TypeError when NumPy and CuPy arrays mix.

# %%
import time

import _common
import matplotlib.pyplot as plt
import numpy as np
from _common import expect, section

from minivae.analysis.figures import image_grid
from minivae.backend import cupy_available, get_array_module, resolve_dtype, synchronize, to_device, to_numpy
from minivae.data import as_nchw, load_mnist, to_float
from minivae.nn import sigmoid

lesson = _common.setup("01_arrays_and_backends")
xp = lesson.xp

# %%
section("one code path, two array modules")
ok, why = cupy_available()
print(f"   CuPy usable here: {ok}" + ("" if ok else f"  ({why.split('. ')[0]})"))
x = xp.linspace(-3, 3, 7, dtype=xp.float32)
print(f"   x = {to_numpy(x)}  lives in {type(x).__module__.split('.')[0]}")
print(f"   get_array_module(x) is {get_array_module(x).__name__}: layers take xp from their inputs")
print(f"   sigmoid(x) = {np.round(to_numpy(sigmoid(x)), 4)}  (minivae.nn.sigmoid, any backend)")

# %% [markdown]
# ## Dtypes
#
# float32 has a 24-bit mantissa: machine epsilon 2^-23 ~ 1.2e-7, so 1 + 1e-8 == 1 in float32. That is
# plenty for training (gradients are noisy anyway) and halves memory and bandwidth. float64 (epsilon
# 2^-52 ~ 2.2e-16) is for checking gradients by finite differences (lesson 2), where we subtract two
# nearly equal numbers. minivae treats the dtype as a setting (`TrainConfig.dtype`), never a literal
# scattered through the code.

# %%
section("dtypes: float32 for training, float64 for gradient checks")
eps32, eps64 = float(np.finfo(np.float32).eps), float(np.finfo(np.float64).eps)
expect("float32 machine epsilon", eps32, 1.1e-7, 1.3e-7)
expect("float64 machine epsilon", eps64, 2.1e-16, 2.3e-16)
one32 = xp.float32(1) + xp.float32(1e-8)
one64 = xp.float64(1) + xp.float64(1e-8)
print(f"   float32: 1 + 1e-8 - 1 = {float(one32 - 1):.3g}   (expect 0: the 1e-8 is lost)")
print(f"   float64: 1 + 1e-8 - 1 = {float(one64 - 1):.3g}   (expect about 1e-8)")
try:
    resolve_dtype("float16")
except ValueError as e:
    print(f"   resolve_dtype('float16') -> ValueError: {e}")
n_all = 60_000 * 784
print(
    f"   all 60,000 training images: uint8 {n_all / 1e6:.0f} MB, float32 {4 * n_all / 1e6:.0f} MB, "
    f"float64 {8 * n_all / 1e6:.0f} MB"
)

# %% [markdown]
# ## MNIST
#
# `minivae.data.load_mnist` gives uint8 images (N, 28, 28) and labels (N,). `to_float` scales them to
# [0, 1] (after moving the compact uint8 array to the device) and `as_nchw` adds the channel axis:
# (N, 1, 28, 28), the NCHW layout PyTorch uses. Most pixels are exactly 0 (background) and many are
# close to 1 (ink), which is why the models treat each pixel as a Bernoulli probability and use binary
# cross-entropy on the logits (lesson 3).

# %%
section("MNIST: uint8 on disk, floats in [0, 1] on the device")
n = lesson.pick(smoke=64, default=10_000, full=60_000)
images, labels = load_mnist("train")  # (60000, 28, 28) uint8, (60000,) uint8
print(f"   load_mnist('train'): images {images.shape} {images.dtype}, labels {labels.shape} {labels.dtype}")
t0 = time.perf_counter()
x_float = to_float(images[:n], xp, "float32")  # uint8 crosses to the device, then / 255 there
synchronize(xp)  # CuPy returns before the GPU finishes: wait, or the timing lies
t_copy = time.perf_counter() - t0
x_nchw = as_nchw(x_float)  # (N, 1, 28, 28), a view: no copy
print(f"   to_float + as_nchw on {lesson.backend}: {x_nchw.shape} {x_nchw.dtype}, took {t_copy * 1e3:.2f} ms")
print(f"   to_device(images, numpy) is images: {to_device(images, np) is images}  (NumPy: nothing to move)")
pix = to_numpy(x_nchw).reshape(-1)
expect("mean pixel value (MNIST's well-known 0.1307)", float(pix.mean()), 0.11, 0.15, ".4f")
expect("fraction of pixels exactly 0", float((pix == 0).mean()), 0.75, 0.85, ".3f")
expect("fraction of pixels above 0.5", float((pix > 0.5).mean()), 0.09, 0.16, ".3f")
counts = np.bincount(labels[:n], minlength=10)
print(f"   images per digit 0-9: {counts.tolist()}  (roughly equal, about {n // 10} each)")

# %% [markdown]
# ## Devices
#
# Arrays cross between host and GPU only at the edges: loading data (`to_device` / `to_float`), logging a
# number (`float(loss)`), saving (`to_numpy`). Mixing a NumPy and a CuPy array in one operation is an
# error on purpose: an invisible copy in the middle of a training step would be slow. This cell shows it
# on the CuPy backend and says so on NumPy.

# %%
if xp is np:
    print("   (NumPy backend: nothing lives on a GPU, so there is nothing to mix; try --backend cupy)")
else:
    section("host and device do not mix")
    try:
        _ = x_nchw[:1] + pix[:784].reshape(1, 1, 28, 28)
    except TypeError as e:
        print(f"   cupy + numpy -> TypeError: {str(e)[:90]}...  (move one side explicitly)")
    back = to_numpy(x_nchw[:2])
    print(f"   to_numpy brings arrays home: {type(back).__module__} {back.shape}")

# %% [markdown]
# ## Figures
#
# The first digits, and a histogram of every pixel value: a spike at 0, a bump near 1, little between.

# %%
section("figures")
path = image_grid(
    to_numpy(x_nchw[:32, 0]), lesson.figure("digits"), ncols=8, title="the first 32 training digits"
)
_common.saved(path, "what the models will learn to draw")
fig, ax = plt.subplots(figsize=(6, 3.6))
ax.hist(pix, bins=51, color="C0")
ax.set_yscale("log")
ax.set_xlabel("pixel value (uint8 / 255)")
ax.set_ylabel("count (log scale)")
ax.set_title(f"pixel values of {n} MNIST images: a spike at 0, a bump near 1", fontsize=9)
lesson.savefig(fig, "pixel_histogram", "nearly binary pixels, the reason for a Bernoulli (BCE) decoder")

# %%
lesson.done()
