"""Plain-loop convolutions: slow, obvious, and the yardstick the fast layers are tested against.

Each function loops over output pixels (and the batch) exactly as the formula reads. Use small
shapes: these are for tests and lessons, not for training.
"""

from __future__ import annotations

import numpy as np


def conv2d_loop(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: int, padding: int):
    """y[n,o,h,w] = b[o] + sum_{c,i,j} W[o,c,i,j] x_pad[n,c,s h+i,s w+j].  x: (N,C,H,W), W: (O,C,kH,kW)."""
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    xp_ = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    ho, wo = (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1
    y = np.zeros((n, o, ho, wo), dtype=x.dtype)
    for b in range(n):
        for oc in range(o):
            for i in range(ho):
                for j in range(wo):
                    patch = xp_[b, :, i * stride : i * stride + kh, j * stride : j * stride + kw]
                    y[b, oc, i, j] = np.sum(patch * weight[oc]) + (bias[oc] if bias is not None else 0.0)
    return y


def conv2d_loop_backward(x, weight, stride: int, padding: int, dy):
    """(dx, dW, db) of conv2d_loop, accumulated window by window: each output pixel sends
    dy * W back to the window it read, and dy * window to the weight."""
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    xp_ = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    dxp = np.zeros_like(xp_)
    dw = np.zeros_like(weight)
    for b in range(n):
        for oc in range(o):
            for i in range(dy.shape[2]):
                for j in range(dy.shape[3]):
                    sl = (
                        b,
                        slice(None),
                        slice(i * stride, i * stride + kh),
                        slice(j * stride, j * stride + kw),
                    )
                    dxp[sl] += dy[b, oc, i, j] * weight[oc]
                    dw[oc] += dy[b, oc, i, j] * xp_[sl]
    dx = dxp[:, :, padding : padding + h, padding : padding + w]
    return dx, dw, dy.sum(axis=(0, 2, 3))


def conv_transpose2d_loop(x, weight, bias, stride: int, padding: int, output_padding: int):
    """Each input pixel x[n,c,h,w] adds x * W[c] onto the output patch at (s h - p, s w - p).

    x: (N, C_in, H, W), W: (C_in, C_out, kH, kW) -> (N, C_out, (H-1)s - 2p + kH + op, ...).
    """
    n, c, h, w = x.shape
    _, o, kh, kw = weight.shape
    ho = (h - 1) * stride - 2 * padding + kh + output_padding
    wo = (w - 1) * stride - 2 * padding + kw + output_padding
    full = np.zeros((n, o, (h - 1) * stride + kh + output_padding, (w - 1) * stride + kw + output_padding))
    for b in range(n):
        for ic in range(c):
            for i in range(h):
                for j in range(w):
                    full[b, :, i * stride : i * stride + kh, j * stride : j * stride + kw] += (
                        x[b, ic, i, j] * weight[ic]
                    )
    y = full[:, :, padding : padding + ho, padding : padding + wo].astype(x.dtype)
    if bias is not None:
        y = y + bias.reshape(1, -1, 1, 1)
    return y


def conv_transpose2d_loop_backward(x, weight, stride: int, padding: int, output_padding: int, dy):
    """(dx, dW, db) of conv_transpose2d_loop: each input pixel reads back the patch it wrote."""
    n, c, h, w = x.shape
    _, o, kh, kw = weight.shape
    full_h = (h - 1) * stride + kh + output_padding
    full_w = (w - 1) * stride + kw + output_padding
    dfull = np.zeros((n, o, full_h, full_w))
    dfull[:, :, padding : padding + dy.shape[2], padding : padding + dy.shape[3]] = dy
    dx = np.zeros_like(x)
    dw = np.zeros_like(weight)
    for b in range(n):
        for ic in range(c):
            for i in range(h):
                for j in range(w):
                    patch = dfull[b, :, i * stride : i * stride + kh, j * stride : j * stride + kw]
                    dx[b, ic, i, j] = np.sum(patch * weight[ic])
                    dw[ic] += x[b, ic, i, j] * patch
    return dx, dw, dy.sum(axis=(0, 2, 3))
