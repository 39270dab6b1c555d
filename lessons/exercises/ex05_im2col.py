"""Exercise 5 (lesson 4): im2col, every window of the input as one column.

    x: (N, C, H, W), already padded;  a kh x kw window, strides (sh, sw)
    Ho = (H - kh) // sh + 1,  Wo = (W - kw) // sw + 1
    cols: (C*kh*kw, Ho*Wo*N) with
        cols[(c, i, j), (r, q, n)] = x[n, c, sh*r + i, sw*q + j]

Rows are ordered (c, i, j) (c slowest, j fastest) so that W.reshape(C_out, -1) @ cols is the
convolution; columns are ordered (r, q, n), the image fastest: minivae keeps the batch innermost in
memory, which makes these copies long runs (minivae/nn/conv.py says why). Loops over the kh*kw kernel offsets are fine (each copies
a strided slice); loops over pixels are slow but also correct.

Check: python lessons/exercises/check.py im2col
"""

from __future__ import annotations

from typing import Any


def im2col(x: Any, kh: int, kw: int, sh: int, sw: int) -> Any:
    """x (N, C, H, W) -> cols (C*kh*kw, Ho*Wo*N), rows (c, i, j), columns (r, q, n)."""
    raise NotImplementedError("exercise: write im2col")
