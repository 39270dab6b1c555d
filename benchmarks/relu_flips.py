"""Which ReLU units float32 puts on the other side of zero than float64, in the benchmark's first step.

    python benchmarks/relu_flips.py                       # conv model, batch 128, NumPy
    python benchmarks/relu_flips.py --arch mlp --batch 256

The benchmark checks each backend's gradients against a float64 run of the same float32 weights, images
and noise, beside NumPy's own float32 error. A pre-activation within rounding of zero can come out
positive in one precision and negative in the other; that unit's whole gradient is then in one result
and not the other, an error of order one part in the batch for the weights behind it, with no bug
anywhere. This lists such units, layer by layer, so a large float32 error can be traced to one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from minivae.backend import get_backend, to_numpy
from minivae.nn import ReLU

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train_step import setup  # noqa: E402  (the benchmark's own model, batch and noise)


def relu_masks(arch: str, batch: int, xp, dtype: str) -> dict[str, np.ndarray]:
    """Each ReLU layer's mask after the benchmark's forward pass, by layer name."""
    model, _, x, eps = setup(arch, batch, xp, dtype)
    model.forward(x, eps=eps)
    return {
        f"{part}.{i}": to_numpy(layer.mask)
        for part in ("encoder", "decoder")
        for i, layer in enumerate(getattr(model, part).layers)
        if isinstance(layer, ReLU)
    }


def flips(arch: str, batch: int, backend: str = "numpy") -> dict[str, list[list[int]]]:
    """{layer: [[image, unit index...], ...]} where the backend's float32 mask differs from NumPy float64's."""
    exact, ours = (
        relu_masks(arch, batch, np, "float64"),
        relu_masks(arch, batch, get_backend(backend), "float32"),
    )
    return {k: np.argwhere(ours[k] != exact[k]).tolist() for k in exact}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="conv", choices=["mlp", "conv"])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    args = p.parse_args()
    for layer, where in flips(args.arch, args.batch, args.backend).items():
        shown = f": {where[:5]}" if where else ""
        print(f"{layer}: {len(where)} unit(s) on the other side of zero in float32{shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
