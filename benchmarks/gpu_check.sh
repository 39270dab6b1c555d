#!/usr/bin/env bash
# The one script to run on a GPU machine with CuPy (and PyTorch, for the comparison), offline, in a few
# minutes on an H200; each step's command is the one docs/performance.md quotes:
#   1. the CuPy tests of the kernels, losses, optimizer, layers, models and backend (a gate: a wrong
#      kernel shows here first);
#   2. the training step beside PyTorch CUDA, every arch and batch, interleaved; minivae.kernels on
#      against off, interleaved (--kernels both); NumPy at conv batch 256, for CuPy against NumPy;
#   3. the operation count and what one operation costs (count_ops.py --time), and a per-layer profile;
#   4. one epoch of real training (the seed protocol on 9,600 images), then the whole test suite, the
#      lessons on CuPy included.
# Prepare (here, once): minivae data fetch && mkdir -p .gpu_data/mnist && for f in ~/.cache/minivae/mnist/*-ubyte;
#   do gzip -c "$f" > .gpu_data/mnist/$(basename "$f").gz; done      # 12 MB to carry (.gpu_data is git-ignored)
# Usage (from the repo root, MNIST's four IDX files, raw or .gz, in $MINIVAE_DATA/mnist/):
#   MINIVAE_DATA=$PWD/.gpu_data PYTHONPATH=. bash benchmarks/gpu_check.sh OUTDIR
# Logs and JSON go to OUTDIR.
set -uo pipefail
OUT=${1:?usage: gpu_check.sh OUTDIR}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
  # a small step is bound by the host's Python dispatch, so the host CPU matters as much as the GPU
  lscpu | grep -E "^Model name|^CPU\(s\)" | tr -s " "
  python -c "import numpy, cupy; print('numpy', numpy.__version__, 'cupy', cupy.__version__)" 2>&1
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" 2>&1
  # the `minivae` command for the tests that run it (no network: no build isolation, no dependencies)
  python -m pip install -q --no-deps --no-build-isolation --no-index -e . 2>&1 | tail -2
} > "$OUT/env.txt"
cat "$OUT/env.txt"
XDIST=$(python -c "import xdist" 2>/dev/null && echo "-n 6")
{
  echo "== CuPy tests ($SECONDS s)"
  timeout 120 python -m pytest -q -p no:cacheprovider $XDIST -k "cupy or backend or kernels" -rf \
    tests/test_kernels.py tests/test_losses.py tests/test_optim.py tests/test_conv.py tests/test_layers.py \
    tests/test_models.py tests/test_backend.py 2>&1 | tail -12
  echo "== the step beside PyTorch CUDA, interleaved ($SECONDS s)"
  timeout 120 python benchmarks/bench_train_step.py --backend cupy --json "$OUT/bench.json" 2>&1
  echo "== minivae.kernels on against off, interleaved ($SECONDS s)"
  timeout 120 python benchmarks/bench_train_step.py --backend cupy --arch conv --kernels both --no-torch \
    --steps 40 --json "$OUT/kernels.json" 2>&1 | tail -6
  echo "== numpy, conv batch 256 ($SECONDS s)"
  timeout 90 python benchmarks/bench_train_step.py --backend numpy --arch conv --batch 256 --no-torch \
    --json "$OUT/numpy_conv256.json" 2>&1 | tail -3
  echo "== operations in one step, and what one costs ($SECONDS s)"
  timeout 90 python benchmarks/count_ops.py --time --json "$OUT/op_cost.json" 2>&1
  echo "== profile: cupy, conv ($SECONDS s)"
  timeout 40 python benchmarks/bench_train_step.py --profile --backend cupy --arch conv --batch 32 256 --steps 5 2>&1
  echo "== one epoch of the seed protocol on 9,600 images, CuPy ($SECONDS s)"
  timeout 90 python -m minivae train --preset seed --train-limit 12000 --test-limit 1000 --epochs 1 \
    --tsne-points 0 --backend cupy --quiet --out /tmp/minivae_one_epoch 2>&1 | tail -3
  cp /tmp/minivae_one_epoch/history.csv "$OUT/one_epoch_history.csv"
  echo "== the whole test suite ($SECONDS s)"
  timeout 300 python -m pytest -q -p no:cacheprovider $XDIST -rs > "$OUT/pytest.log" 2>&1
  tail -30 "$OUT/pytest.log"
  echo "== done ($SECONDS s)"
} 2>&1 | tee "$OUT/all.log"
