#!/usr/bin/env bash
# The seed study's protocol, redone: the quality check for the conv model.
#   bash benchmarks/seed_study.sh [SEEDS] [LATENTS...]      e.g.  bash benchmarks/seed_study.sh 3 15
# Two sweeps: the seed's architecture as it was (ReLU bottleneck, Glorot init, Keras's Adam), and the
# variant with a LeakyReLU bottleneck whose units cannot die. Each is `minivae sweep --preset ...`:
# conv model, 48,000 / 12,000 split, batch 32, 15 epochs, Adam 1e-3, early stopping patience 5.
# Runs already finished are skipped and interrupted ones resumed, so the script can be rerun to add
# seeds. On a 2-core CPU one run takes about 50 minutes (the two sweeps side by side, one BLAS thread
# each); on a GPU the two share it: EXTRA="--backend cupy" bash benchmarks/seed_study.sh 3 15.
# Then: python benchmarks/seed_study_compare.py runs/seed_study --latent 15
set -euo pipefail
SEEDS=${1:-3}
shift || true
LATENTS=${*:-15}
OUT=${OUT:-runs/seed_study}
EXTRA=${EXTRA:-}
# one BLAS thread per sweep: the two sweeps then share two cores without fighting over them
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
minivae sweep --preset seed --latents $LATENTS --seeds "$SEEDS" --out "$OUT/relu" --quiet $EXTRA &
minivae sweep --preset seed-leaky --latents $LATENTS --seeds "$SEEDS" --out "$OUT/leaky" --quiet $EXTRA &
wait
echo "reports: $OUT/relu/report.md $OUT/leaky/report.md"
