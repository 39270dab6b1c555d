"""Exercise 7 (lesson 4): the Conv2d backward.

    x: (N, C_in, H, W);  W: (C_out, C_in, kh, kw);  b: (C_out,);  stride s, padding p
    forward (given below):  x_pad = x padded by p on each side,
        cols = im2col(x_pad)                          (C_in*kh*kw, Ho*Wo*N), cached as self.cols
        y = W.reshape(C_out, -1) @ cols + b           reshaped to (N, C_out, Ho, Wo)
    and self.x_pad_shape = x_pad.shape is cached too.

backward(dy), dy: (N, C_out, Ho, Wo), must write self.grads["weight"] (C_out, C_in, kh, kw) and
self.grads["bias"] (C_out,) in place, and return dx (N, C_in, H, W). Lay dy out like y's matrix
first, dy_mat: (C_out, Ho*Wo*N) (mind the axis order: columns are (r, q, n)). Then it is the Linear
backward again, with cols in the role of x; dcols goes back to pixels with col2im (minivae.nn.col2im,
or yours), and the padding's gradient is dropped.

Check: python lessons/exercises/check.py conv2d
"""

from __future__ import annotations

from typing import Any

import minivae.nn
from minivae.nn import col2im, im2col  # noqa: F401  (col2im: for your backward)
from minivae.nn.module import pad2d


class Conv2d(minivae.nn.Conv2d):
    """minivae's Conv2d with backward left to you. self.kernel_size, self.stride, self.padding are
    (h, w) pairs."""

    def forward(self, x: Any) -> Any:  # x: (N, C_in, H, W)
        """minivae's forward, after caching what your backward reads: self.cols and self.x_pad_shape."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        x_pad = pad2d(x, (pw, pw, ph, ph))  # (N, C_in, H + 2p, W + 2p)
        self.x_pad_shape = x_pad.shape
        self.cols = im2col(x_pad, kh, kw, sh, sw)  # (C_in*kh*kw, Ho*Wo*N)
        return super().forward(x)  # (N, C_out, Ho, Wo)

    def backward(self, dy: Any) -> Any:  # dy: (N, C_out, Ho, Wo)
        raise NotImplementedError("exercise: write Conv2d.backward (dW, db and dx)")
