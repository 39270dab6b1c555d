"""Hand-written layers: forward and backward side by side, PyTorch's names and shapes."""

from minivae.nn.activations import LeakyReLU, ReLU, Sigmoid, Tanh, sigmoid
from minivae.nn.conv import Conv2d, ConvTranspose2d, col2im, im2col
from minivae.nn.init import INITS
from minivae.nn.linear import Linear
from minivae.nn.module import Flatten, Module, Reshape, Sequential, ZeroPad2d

__all__ = [
    "INITS",
    "Conv2d",
    "ConvTranspose2d",
    "Flatten",
    "LeakyReLU",
    "Linear",
    "Module",
    "ReLU",
    "Reshape",
    "Sequential",
    "Sigmoid",
    "Tanh",
    "ZeroPad2d",
    "col2im",
    "im2col",
    "sigmoid",
]
