#!/usr/bin/env bash
# The one script to run on a GPU machine with CuPy and PyTorch but no network:
#   1. the training-step benchmark on NumPy and CuPy beside PyTorch CPU and CUDA (the GPU to itself),
#      with the memory-growth check (an older minivae beside this one: gpu_before_after.sh);
#   2. the cost of one array operation of each kind (op_cost.py) and a per-layer profile of the conv
#      step on CuPy;
#   3. the test suite (CuPy cases included) and, when TOTAL_SECONDS is given, the seed study's runs on
#      the GPU (benchmarks/seed_study_gpu.py $STUDY_ARGS) until the whole script has used TOTAL_SECONDS.
#      Six runs in parallel take about 7 minutes on an H200. All 18 runs of the study are done (README:
#      latent 15 on an H200, the rest on NumPy), so TOTAL_SECONDS is optional now: given, the default
#      STUDY_ARGS retrains latents 5, 10, 20 on CuPy (seed 0 of each first), a cross-check of NumPy's runs;
#      --skip relu/z5_s0 ... leaves runs out.
# Prepare (here, once): minivae data fetch && mkdir -p .gpu_data/mnist && for f in ~/.cache/minivae/mnist/*-ubyte;
#   do gzip -c "$f" > .gpu_data/mnist/$(basename "$f").gz; done      # 12 MB to carry (.gpu_data is git-ignored)
# Usage (from the repo root, MNIST's four IDX files, raw or .gz, copied into $MINIVAE_DATA/mnist/):
#   MINIVAE_DATA=$PWD/.gpu_data PYTHONPATH=. bash benchmarks/gpu_check.sh OUTDIR [TOTAL_SECONDS]
# Without TOTAL_SECONDS it takes about 3 minutes. Logs and JSON go to OUTDIR; the seed study's runs to
# runs/seed_study_gpu (and, without their checkpoints, OUTDIR/seed_study_gpu.tgz).
set -uo pipefail
OUT=${1:?usage: gpu_check.sh OUTDIR [TOTAL_SECONDS]}
TOTAL=${2:-0}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
  python -c "import numpy, cupy; print('numpy', numpy.__version__, 'cupy', cupy.__version__)" 2>&1
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" 2>&1
  echo "cpus $(nproc)"
  # the `minivae` command for the tests that run it (no network: no build isolation, no dependencies)
  python -m pip install -q --no-deps --no-build-isolation --no-index -e . 2>&1 | tail -2
} > "$OUT/env.txt"
cat "$OUT/env.txt"
echo "== benchmark ($SECONDS s)"
timeout 200 python benchmarks/bench_train_step.py --steps 20 --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log"
echo "== what one operation costs, and minivae.kernels beside the lines they replace ($SECONDS s)"
timeout 60 python benchmarks/op_cost.py --json "$OUT/op_cost.json" 2>&1 | tee "$OUT/op_cost.log"
echo "== profile: cupy, conv ($SECONDS s)"
timeout 40 python benchmarks/bench_train_step.py --profile --backend cupy --arch conv --batch 32 256 --steps 5 \
  2>&1 | tee "$OUT/profile.log"
echo "== tests ($SECONDS s)"
XDIST=$(python -c "import xdist" 2>/dev/null && echo "-n 6")
timeout 300 python -m pytest -q -p no:cacheprovider $XDIST -rs > "$OUT/pytest.log" 2>&1 &
TESTS=$!
if [ "$TOTAL" -gt 0 ]; then
  LEFT=$((TOTAL - SECONDS - 45)) # the study stops its runs then; 45 s for stopping and packing
  echo "== seed study on the GPU for ${LEFT} s ($SECONDS s)"
  # shellcheck disable=SC2086  # STUDY_ARGS is a list of flags
  python benchmarks/seed_study_gpu.py --out runs/seed_study_gpu --deadline "$LEFT" ${STUDY_ARGS:---latents 5 10 20 --seed-major} \
    2>&1 | tee "$OUT/seed_study.log"
  tar czf "$OUT/seed_study_gpu.tgz" --exclude='*.npz' -C runs seed_study_gpu
fi
wait $TESTS
echo "== tests done ($SECONDS s)"
tail -30 "$OUT/pytest.log"
