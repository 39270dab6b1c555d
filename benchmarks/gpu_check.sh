#!/usr/bin/env bash
# The one script to run on a GPU machine with CuPy and PyTorch but no network (under 5 minutes):
#   1. the test suite, whose backend-parametrised tests now also run on CuPy (NumPy-vs-CuPy included);
#   2. the training-step benchmark on NumPy and CuPy, beside PyTorch CPU and CUDA;
#   3. a per-layer profile of the conv step on CuPy.
# Usage (from the repo root, real MNIST copied into a folder named by MINIVAE_DATA):
#   MINIVAE_DATA=.gpu_data PYTHONPATH=. bash benchmarks/gpu_check.sh OUTDIR
set -uo pipefail
OUT=${1:?usage: gpu_check.sh OUTDIR}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
  python -c "import numpy, cupy; print('numpy', numpy.__version__, 'cupy', cupy.__version__)" 2>&1
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" 2>&1
  nproc
} > "$OUT/env.txt"
cat "$OUT/env.txt"
echo "== tests (CuPy cases included)"
timeout 170 python -m pytest -q -p no:cacheprovider -k "cupy or backend or train or models or conv" \
  --ignore=tests/test_lessons.py --ignore=tests/test_reliability.py 2>&1 | tail -25 | tee "$OUT/pytest.log"
echo "== benchmark"
timeout 110 python benchmarks/bench_train_step.py --steps 20 --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log"
echo "== profile (cupy, conv)"
timeout 30 python benchmarks/bench_train_step.py --profile --backend cupy --arch conv --batch 32 256 --steps 5 \
  2>&1 | tee "$OUT/profile.log"
