#!/usr/bin/env bash
# The CuPy training step of an older minivae beside this one, on the same GPU in the same call
# (about 1.5 minutes on an H200): which speed-ups paid, measured, not guessed.
#   mkdir -p .before && git archive <commit> minivae | tar -x -C .before     # the older package
#   MINIVAE_DATA=$PWD/.gpu_data bash benchmarks/gpu_before_after.sh .before OUTDIR
# .before is git-ignored: name it in the device tool's carry, beside .gpu_data. Commit 8095f4a is the code
# behind the first GPU session's 5.70 ms at conv batch 32 (README); the current benchmark times older packages too
# (one without train_step's check_values checks the images every step, as its training loop did).
# Runs the CuPy tests of the kernels, layers, losses, optimizer and models; times the conv step of the
# older package (CuPy), this one with minivae.kernels on against off (ab_kernels.py, interleaved), and
# on beside PyTorch CUDA (every arch and batch, interleaved), NumPy at conv batch 256 for the CuPy/NumPy
# ratio, a per-layer profile, what one operation of each kind costs (op_cost.py), and one epoch of real
# training (the seed protocol on 9,600 images).
set -uo pipefail
BEFORE=${1:?usage: gpu_before_after.sh BEFORE_DIR OUTDIR}
OUT=${2:?usage: gpu_before_after.sh BEFORE_DIR OUTDIR}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
{
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  # a small step is bound by the host's Python dispatch, so the host CPU matters as much as the GPU
  lscpu | grep -E "^Model name|^CPU\(s\)|MHz" | tr -s " "
  echo "== tests ($SECONDS s)"
  XDIST=$(python -c "import xdist" 2>/dev/null && echo "-n 6")
  PYTHONPATH=. timeout 120 python -m pytest -q -p no:cacheprovider $XDIST -k "cupy or backend or kernels" -rf \
    tests/test_kernels.py tests/test_losses.py tests/test_optim.py tests/test_conv.py tests/test_layers.py \
    tests/test_models.py tests/test_backend.py 2>&1 | tail -12
  echo "== before: $BEFORE ($SECONDS s)"
  PYTHONPATH=$BEFORE timeout 60 python benchmarks/bench_train_step.py --backend cupy --arch conv --no-torch \
    --json "$OUT/before.json" 2>&1 | tail -8
  echo "== this minivae, fused kernels on against off, interleaved ($SECONDS s)"
  PYTHONPATH=. timeout 60 python benchmarks/ab_kernels.py --backend cupy 2>&1
  echo "== this minivae, fused kernels on, beside PyTorch CUDA (interleaved) ($SECONDS s)"
  PYTHONPATH=. timeout 100 python benchmarks/bench_train_step.py --backend cupy --json "$OUT/after.json" 2>&1
  echo "== numpy, conv batch 256 ($SECONDS s)"
  PYTHONPATH=. timeout 60 python benchmarks/bench_train_step.py --backend numpy --arch conv --batch 256 --no-torch \
    --json "$OUT/numpy_conv256.json" 2>&1 | tail -3
  echo "== one epoch of the seed protocol on 9,600 images, CuPy ($SECONDS s)"
  PYTHONPATH=. timeout 60 python -m minivae train --preset seed --train-limit 12000 --test-limit 1000 --epochs 1 \
    --tsne-points 0 --backend cupy --quiet --out /tmp/one_epoch 2>&1 | tail -3
  cp /tmp/one_epoch/history.csv "$OUT/one_epoch_history.csv"
  echo "== what one operation costs, and minivae.kernels beside the lines they replace ($SECONDS s)"
  PYTHONPATH=. timeout 60 python benchmarks/op_cost.py --json "$OUT/op_cost.json" 2>&1
  echo "== profile ($SECONDS s)"
  PYTHONPATH=. timeout 30 python benchmarks/bench_train_step.py --profile --backend cupy --arch conv --batch 32 256 \
    --steps 5 2>&1
  echo "== done ($SECONDS s)"
} 2>&1 | tee "$OUT/all.log"
