"""2-D convolution and transposed convolution as one matrix product each (im2col / col2im).

im2col turns every kH x kW window of the input into a column, so a convolution becomes

    y = W_mat @ cols        W_mat: (C_out, C_in*kH*kW),  cols: (C_in*kH*kW, H_out*W_out*N)

im2col reads every window at once through a strided view of x and copies it once; im2col_loop shows
the same as a loop over the kH*kW kernel offsets (9 for a 3x3 kernel), never over pixels or over the
batch: offset (i, j) reads the strided slice x[:, :, i : i + s*H_out : s, j : j + s*W_out : s].
col2im is its adjoint: it adds each column entry back onto the pixel it came from, which is exactly
the backward of im2col, and also the forward of a transposed convolution.

Memory layout. Every array here has PyTorch's shape (N, C, H, W), but the convolutions keep their
activations and gradients laid out in memory as (C, H, W, N), the batch innermost (batch_last), as
cuda-convnet did. The columns are ordered (r, q, n) to match: the product's output (C_out, H_out*W_out*N)
is then y's memory as it stands, and each of im2col's and col2im's slices is a run of W_out*N (stride
1) or N (stride 2) neighbouring floats instead of W_out. NumPy handles long runs far faster than many
runs of 14: on the 2-core AVX2 CPU, at batch 128, one 64-channel im2col copies in 4.5 ms instead of
8 to 9, a stride-2 col2im adds in 6.5 ms instead of 14, and the conv step takes 0.82 to 0.95 of its
time with the columns ordered (n, r, q) (interleaved runs of benchmarks/bench_train_step.py,
docs/performance.md). The layers accept any layout and call batch_last on what comes in, so an
(N, C, H, W)-contiguous image or a Linear layer's gradient is copied once, at the boundary; a Flatten
of a batch-last array is a view that a Linear reads as it is (BLAS takes either order).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minivae import kernels, threads
from minivae.backend import get_array_module, resolve_dtype
from minivae.nn.init import init_weight_bias
from minivae.nn.module import Module, pad2d


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """PyTorch's Conv2d size formula: floor((size + 2p - k) / s) + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def conv_transpose_output_size(size: int, kernel: int, stride: int, padding: int, output_padding: int) -> int:
    """PyTorch's ConvTranspose2d size formula: (size - 1) s - 2p + k + output_padding."""
    return (size - 1) * stride - 2 * padding + kernel + output_padding


def batch_last(x: Any) -> Any:
    """x (N, C, H, W), laid out in memory as (C, H, W, N): x itself when it already is, else one copy.

    The values and the shape are x's; only the order of the bytes changes (x.strides becomes
    (4, 4*H*W*N, 4*W*N, 4*N) for float32), so that n is the innermost axis in memory.
    """
    xp = get_array_module(x)
    return xp.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)


def im2col(x: Any, kh: int, kw: int, sh: int, sw: int) -> Any:
    """x: (N, C, H, W), already padded -> cols: (C*kh*kw, Ho*Wo*N), rows (c, i, j), columns (r, q, n).

    cols[c, i, j, r, q, n] = x[n, c, i + sh*r, j + sw*q]: every entry is a fixed number of bytes away
    from x's first one, so the 6-D "window view" below reads x in place with strides (no copy), and a
    single copy lays it out as the column matrix, its channels split over the BLAS threads' cores
    (threads.in_parts). (im2col_loop does the same with one slice per offset.)
    """
    xp = get_array_module(x)
    n, c, h, w = x.shape
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    s_n, s_c, s_h, s_w = x.strides  # bytes between neighbours along each axis of x
    windows = xp.lib.stride_tricks.as_strided(
        x, shape=(c, kh, kw, ho, wo, n), strides=(s_c, s_h, s_w, sh * s_h, sw * s_w, s_n)
    )
    cols = xp.empty(windows.shape, dtype=x.dtype)

    def copy(channels: slice) -> None:
        cols[channels] = windows[channels]

    threads.in_parts(copy, c, cols)
    return cols.reshape(c * kh * kw, ho * wo * n)


def im2col_loop(x: Any, kh: int, kw: int, sh: int, sw: int) -> Any:
    """im2col written as kh*kw slice copies: offset (i, j) copies x[:, :, i::sh, j::sw] (cropped),
    viewed as (C, Ho, Wo, N)."""
    xp = get_array_module(x)
    n, c, h, w = x.shape
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    cols = xp.empty((c, kh, kw, ho, wo, n), dtype=x.dtype)
    xt = x.transpose(1, 2, 3, 0)  # (C, H, W, N): a view, so each slice copies straight into place
    for i in range(kh):
        for j in range(kw):
            cols[:, i, j] = xt[:, i : i + sh * ho : sh, j : j + sw * wo : sw]
    return cols.reshape(c * kh * kw, ho * wo * n)


def col2im(cols: Any, x_shape: tuple[int, int, int, int], kh: int, kw: int, sh: int, sw: int) -> Any:
    """Adjoint of im2col: cols (C*kh*kw, Ho*Wo*N) -> x (N, C, H, W), batch-last in memory, overlapping
    entries summed; each channel's sums on its own, so the channels split over the BLAS threads' cores
    (threads.in_parts). On CuPy they run as one kernel (minivae.kernels.col2im) instead of kh*kw adds."""
    xp = get_array_module(cols)
    if kernels.use(xp):
        return kernels.col2im(cols, x_shape, kh, kw, sh, sw)
    n, c, h, w = x_shape
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    cols = cols.reshape(c, kh, kw, ho, wo, n)
    xt = xp.zeros((c, h, w, n), dtype=cols.dtype)

    def add(channels: slice) -> None:
        for i in range(kh):
            for j in range(kw):
                xt[channels, i : i + sh * ho : sh, j : j + sw * wo : sw] += cols[channels, i, j]

    threads.in_parts(add, c, cols)
    return xt.transpose(3, 0, 1, 2)  # (N, C, H, W)


def conv_transpose_stride1(x: Any, weight: Any, padding: tuple[int, int]) -> Any:
    """A stride-1 transposed convolution written as a plain convolution (no bias): the identity that
    a convolution's input gradient *is* a convolution, of dy with the flipped kernel.

    x: (N, C_in, H, W); weight: (C_in, C_out, kh, kw), ConvTranspose2d's layout; padding (p_h, p_w)
    -> y: (N, C_out, H + kh - 1 - 2 p_h, W + kw - 1 - 2 p_w), where
        y[n, o, h, w] = sum_{c,i,j} x[n, c, h + p - i, w + p - j] W[c, o, i, j].
    With i' = k - 1 - i that is a cross-correlation of x padded by k - 1 - p with the kernel flipped in
    both axes and its channels swapped. So at stride 1, ConvTranspose2d's forward and Conv2d's input
    gradient equal this (lesson 5 checks it). Conv2d.backward takes it at stride 1: one im2col and one
    product, where col2im is a product and kh*kw strided adds. For one 64-channel layer at batch 128
    on the 2-core AVX2 CPU that is 21 ms against 25 (medians of 15 calls each, three times over).
    """
    c_in, c_out, kh, kw = weight.shape
    ph, pw = padding
    w_flip = weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3).reshape(c_out, -1)  # (C_out, C_in*kh*kw)
    x_pad = pad2d(batch_last(x), (kw - 1 - pw, kw - 1 - pw, kh - 1 - ph, kh - 1 - ph))
    n, ho, wo = x.shape[0], x_pad.shape[2] - kh + 1, x_pad.shape[3] - kw + 1
    y = w_flip @ im2col(x_pad, kh, kw, 1, 1)  # (C_out, Ho*Wo*N)
    return y.reshape(c_out, ho, wo, n).transpose(3, 0, 1, 2)


class _ConvBase(Module):
    """Shared parameter set-up for Conv2d and ConvTranspose2d."""

    def __init__(self, weight_shape, n_bias, kernel_size, stride, padding, bias, init, rng, dtype) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = _pair(kernel_size), _pair(stride), _pair(padding)
        rng = rng if rng is not None else np.random.default_rng()
        w, b = init_weight_bias(weight_shape, n_bias, init, rng, resolve_dtype(dtype))
        self._set_param("weight", w)
        if bias:
            self._set_param("bias", b)

    def _add_bias(self, y: Any) -> Any:
        if "bias" in self.params:
            y += self.params["bias"].reshape(1, -1, 1, 1)
        return y

    def _bias_grad(self, dy: Any) -> None:
        if "bias" in self.params:
            self.grads["bias"][...] = dy.sum(axis=(0, 2, 3))  # (C_out,)


class Conv2d(_ConvBase):
    """torch.nn.Conv2d (dilation 1, groups 1).   x: (N, C_in, H, W) -> y: (N, C_out, H_out, W_out).

    weight: (C_out, C_in, kH, kW); bias: (C_out,); H_out = floor((H + 2p - kH) / s) + 1.
    y[n, o] = b[o] + sum_{c,i,j} W[o, c, i, j] * x_pad[n, c, s*h + i, s*w + j]  (a cross-correlation).
    Caches cols = im2col(x_pad). Backward:  dW = dy_mat @ cols.T;  dx = col2im(W_mat.T @ dy_mat), which at
    stride 1 is the convolution of dy with the flipped kernel (conv_transpose_stride1), taken there.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        bias: bool = True,
        init: str = "pytorch",
        rng: np.random.Generator | None = None,
        dtype: Any = "float32",
    ) -> None:
        kh, kw = _pair(kernel_size)
        shape = (out_channels, in_channels, kh, kw)
        super().__init__(shape, out_channels, kernel_size, stride, padding, bias, init, rng, dtype)
        self.in_channels, self.out_channels = in_channels, out_channels

    def forward(self, x: Any) -> Any:  # x: (N, C_in, H, W)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        n = x.shape[0]
        x_pad = pad2d(batch_last(x), (pw, pw, ph, ph))
        ho = conv_output_size(x.shape[2], kh, sh, ph)
        wo = conv_output_size(x.shape[3], kw, sw, pw)
        self.x_pad_shape = x_pad.shape
        self.cols = im2col(x_pad, kh, kw, sh, sw)  # (C_in*kh*kw, Ho*Wo*N)
        w_mat = self.params["weight"].reshape(self.out_channels, -1)  # (C_out, C_in*kh*kw)
        y = (w_mat @ self.cols).reshape(self.out_channels, ho, wo, n).transpose(3, 0, 1, 2)
        return self._add_bias(y)  # (N, C_out, Ho, Wo)

    def backward(self, dy: Any) -> Any:  # dy: (N, C_out, Ho, Wo)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        dy = batch_last(dy)  # one copy when dy comes from a Linear (Flatten's backward), else a view
        dy_mat = dy.transpose(1, 2, 3, 0).reshape(self.out_channels, -1)  # (C_out, Ho*Wo*N): a view
        self.grads["weight"][...] = (dy_mat @ self.cols.T).reshape(self.grads["weight"].shape)
        self._bias_grad(dy)
        if not self.needs_input_grad:
            return None
        if (sh, sw) == (1, 1):  # the same dx, as a convolution with the flipped kernel (faster here)
            return conv_transpose_stride1(dy, self.params["weight"], (ph, pw))
        w_mat = self.params["weight"].reshape(self.out_channels, -1)  # (C_out, C_in*kh*kw)
        dx_pad = col2im(w_mat.T @ dy_mat, self.x_pad_shape, kh, kw, sh, sw)  # (N, C_in, H_pad, W_pad)
        return pad2d(dx_pad, (-pw, -pw, -ph, -ph))  # drop the padding's gradient

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}"
        )


class ConvTranspose2d(_ConvBase):
    """torch.nn.ConvTranspose2d (dilation 1, groups 1).   x: (N, C_in, H, W) -> y: (N, C_out, H_out, W_out).

    weight: (C_in, C_out, kH, kW); bias: (C_out,); H_out = (H - 1) s - 2p + kH + output_padding.
    It is the backward (adjoint) of a Conv2d with the same weight: each input pixel scatters
    W[c] * x[n, c, h, w] onto a kH x kW patch of the "full" output at (s*h, s*w), i.e.
        full = col2im(W_mat.T @ x_mat),  full: (N, C_out, (H-1)s + kH, ...),
    and the result keeps rows [p, p + H_out) of it (output_padding adds rows past the end, zero before
    the bias). Backward is therefore a plain convolution: dx = W_mat @ im2col(d_full).
    Caches x_mat, the input as (C_in, H*W*N).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        output_padding: int | tuple[int, int] = 0,
        bias: bool = True,
        init: str = "pytorch",
        rng: np.random.Generator | None = None,
        dtype: Any = "float32",
    ) -> None:
        kh, kw = _pair(kernel_size)
        shape = (in_channels, out_channels, kh, kw)
        super().__init__(shape, out_channels, kernel_size, stride, padding, bias, init, rng, dtype)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.output_padding = _pair(output_padding)
        oph, opw = self.output_padding
        if oph >= self.stride[0] or opw >= self.stride[1]:
            raise ValueError(
                f"output_padding {self.output_padding} must be smaller than stride {self.stride}"
            )

    def _full_shape(self, n: int, h: int, w: int) -> tuple[int, int, int, int]:
        """The scatter target: the full output plus output_padding rows/cols at the end."""
        (kh, kw), (sh, sw), (oph, opw) = self.kernel_size, self.stride, self.output_padding
        return n, self.out_channels, (h - 1) * sh + kh + oph, (w - 1) * sw + kw + opw

    def forward(self, x: Any) -> Any:  # x: (N, C_in, H, W)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        n, _, h, w = x.shape
        self.in_hw = (h, w)
        x = batch_last(x)  # so that x_mat below is a view
        self.x_mat = x.transpose(1, 2, 3, 0).reshape(self.in_channels, -1)  # (C_in, H*W*N): a view
        w_mat = self.params["weight"].reshape(self.in_channels, -1)  # (C_in, C_out*kh*kw)
        full = col2im(w_mat.T @ self.x_mat, self._full_shape(n, h, w), kh, kw, sh, sw)
        return self._add_bias(pad2d(full, (-pw, -pw, -ph, -ph)))  # keep [p, p + H_out)

    def backward(self, dy: Any) -> Any:  # dy: (N, C_out, H_out, W_out)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        dy = batch_last(dy)
        self._bias_grad(dy)
        cols = im2col(pad2d(dy, (pw, pw, ph, ph)), kh, kw, sh, sw)  # (C_out*kh*kw, H*W*N)
        self.grads["weight"][...] = (self.x_mat @ cols.T).reshape(self.grads["weight"].shape)
        w_mat = self.params["weight"].reshape(self.in_channels, -1)  # (C_in, C_out*kh*kw)
        dx_mat = w_mat @ cols  # (C_in, H*W*N)
        return dx_mat.reshape(self.in_channels, *self.in_hw, dy.shape[0]).transpose(3, 0, 1, 2)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, output_padding={self.output_padding}"
        )
