"""Quality check for the MLP VAE in PyTorch's example setting:

    python benchmarks/quality_mlp.py [--out runs/quality_mlp] [--backend numpy]

784-400-20 VAE, beta = 1, batch 128, Adam 1e-3, 10 epochs on all 60,000 training images, then the test
loss: per image, summed BCE + KL with one z (the negative ELBO estimate PyTorch's example prints).
Target: <= 106.0 nats (PyTorch's example reaches about 105.7). Prints the result and writes
<out>/quality.json. Not a test: it takes a few minutes on a CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from minivae.analysis.report import write_report
from minivae.training.config import PRESETS, TrainConfig
from minivae.training.loop import train

TARGET = 106.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/quality_mlp")
    p.add_argument("--backend", default="numpy")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    cfg = TrainConfig(**{**PRESETS["pytorch-example"], "backend": args.backend, "seed": args.seed})
    out = Path(args.out)
    model, data, history = train(cfg, out, resume=(out / "last.npz").exists(), progress=False)
    seconds = sum(float(r["seconds"]) for r in history)  # training time per epoch, resumed runs included
    ev = write_report(model, cfg, data.x_test, data.y_test, out)
    loss = float(ev.metrics["neg_elbo"])
    result = {"test_loss_nats": loss, "target": TARGET, "passed": loss <= TARGET, "train_seconds": seconds,
              "epochs": len(history), "config": cfg.to_dict()}  # fmt: skip
    (out / "quality.json").write_text(json.dumps(result, indent=2) + "\n")
    verdict = "meets" if loss <= TARGET else "MISSES"
    print(f"test loss {loss:.2f} nats (sum BCE + KL per image, one z): {verdict} the target <= {TARGET}")
    print(f"trained in {seconds:.0f} s on {cfg.backend}; report: {out / 'report.md'}")
    return 0 if loss <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
