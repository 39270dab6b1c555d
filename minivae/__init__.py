"""minivae: a from-scratch NumPy/CuPy beta-VAE with hand-written layers and manual backprop."""

__version__ = "0.1.0"
