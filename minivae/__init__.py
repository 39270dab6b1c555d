"""minivae: a from-scratch NumPy/CuPy beta-VAE with hand-written layers and manual backprop."""

from minivae.threads import let_blas_threads_sleep

__version__ = "0.1.0"

let_blas_threads_sleep()  # before NumPy loads OpenBLAS, if it has not yet (minivae.threads says why)
