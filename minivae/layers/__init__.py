"""Hand-written layers: forward and backward side by side, PyTorch's names and shapes."""

from minivae.layers.activations import LeakyReLU, ReLU, Sigmoid, Tanh, sigmoid
from minivae.layers.conv import Conv2d, ConvTranspose2d, col2im, im2col
from minivae.layers.init import INITS
from minivae.layers.linear import Linear
from minivae.layers.module import Flatten, Module, Reshape, Sequential, ZeroPad2d

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
