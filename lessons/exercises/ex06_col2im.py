"""Exercise 6 (lesson 4): col2im, the adjoint of im2col.

    cols: (C*kh*kw, Ho*Wo*N), laid out as im2col lays it out (rows (c, i, j), columns (r, q, n))
    -> x: x_shape = (N, C, H, W), with every entry of cols added onto the pixel it came from:
        x[n, c, sh*r + i, sw*q + j] += cols[(c, i, j), (r, q, n)]

Windows overlap when the stride is smaller than the kernel, so a pixel can receive several entries.
Being the adjoint means <im2col(x), c> = <x, col2im(c)> for every x and c: that is exactly what makes
col2im the backward of im2col (and the forward of a transposed convolution).

Check: python lessons/exercises/check.py col2im
"""

from __future__ import annotations

from typing import Any


def col2im(cols: Any, x_shape: tuple[int, int, int, int], kh: int, kw: int, sh: int, sw: int) -> Any:
    """cols (C*kh*kw, Ho*Wo*N) -> x (N, C, H, W), overlapping entries summed."""
    raise NotImplementedError("exercise: write col2im")
