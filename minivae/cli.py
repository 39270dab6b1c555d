"""The `minivae` command line: argparse flags mapped onto TrainConfig, one function per command."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import signal
import sys
import threading
import time
import typing
from pathlib import Path

from minivae import threads
from minivae.errors import UserError
from minivae.training.config import PRESETS, TrainConfig, flag

DESCRIPTION = """\
Train a variational autoencoder (a beta-VAE) on MNIST digits with hand-written backprop,
then read its report: test-set ELBO, reconstructions per digit, samples and latent maps."""

EXAMPLES = """\
examples:
  minivae train [--preset seed] [--arch conv --latent 15 ...]   train, evaluate, write report.md
  minivae train --resume RUN                                    continue an interrupted run
  minivae evaluate RUN [--iwae-k 5000 --test-limit 0]           redo a run's metrics, figures, report
  minivae sweep --latents 5 10 15 20 --seeds 3                  compare latent sizes
  minivae sweep --betas 0.25 0.5 1 2 4 8                        a rate-distortion curve over beta
  minivae data fetch | info                                     the verified MNIST cache"""

# The help groups of TrainConfig's fields, in the order `train --help` and `sweep --help` show them.
CONFIG_GROUPS: dict[str, tuple[str, ...]] = {
    "model": ("arch", "latent", "hidden", "activation", "init", "bottleneck", "backend", "dtype", "threads"),
    "data": ("dataset", "binarize", "train_limit", "test_limit", "val_fraction"),
    "optimisation": (
        "objective", "k", "optimizer", "lr", "lr_schedule", "lr_stages", "adam_eps", "epochs", "batch_size", "patience",
        "grad_clip", "seed",
    ),
    "β and schedules": (
        "beta", "loss", "beta_schedule", "beta_warmup_epochs", "beta_cycles", "beta_cycle_ratio",
        "capacity_max", "capacity_epochs",
    ),
    "output and reporting": ("tsne_points",),
    "faults": ("on_nonfinite",),
}  # fmt: skip


def _with_default(text: str, default: object) -> str:
    """The help text with its default, unless the text already states it."""
    return text if "(default:" in text else f"{text} (default: {default})"


def _add_config_flags(
    p: argparse.ArgumentParser, help_override: dict[str, str] | None = None
) -> dict[str, argparse._ArgumentGroup]:
    """One flag per TrainConfig field, in CONFIG_GROUPS' groups (returned by title, for the command's own
    flags); defaults are left unset so presets can fill them. help_override: field name -> help text."""
    hints, fields = typing.get_type_hints(TrainConfig), {f.name: f for f in dataclasses.fields(TrainConfig)}
    grouped = [name for names in CONFIG_GROUPS.values() for name in names]
    if sorted(grouped) != sorted(fields):
        raise RuntimeError(
            f"CONFIG_GROUPS must name each TrainConfig field once: {sorted(set(fields) ^ set(grouped))}"
        )
    presets = "; ".join(f"{k}: {', '.join(f'{a}={b}' for a, b in v.items())}" for k, v in PRESETS.items())
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help=f"start from a named configuration, which the flags given then override (default: none: "
        f"the defaults shown, the main job). {presets}",
    )
    groups = {}
    for title, names in CONFIG_GROUPS.items():
        g = groups[title] = p.add_argument_group(title)
        for name in names:
            f = fields[name]
            conv = {int: int, float: float, int | None: int, float | None: float, list[int]: int}.get(
                hints[name], str
            )
            text = (help_override or {}).get(name) or _with_default(f.metadata.get("help", ""), f.default)
            many = {"nargs": "+", "metavar": "N"} if hints[name] == list[int] else {}  # --hidden 200 200
            g.add_argument(
                f"--{flag(name)}", dest=name, type=conv, default=argparse.SUPPRESS, help=text, **many
            )
    return groups


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    preset = PRESETS[args.preset] if args.preset else {}
    return TrainConfig(**{**preset, **given}).validate()


def _default_out(cfg: TrainConfig) -> Path:
    return Path("runs") / f"{cfg.arch}_z{cfg.latent}_{time.strftime('%Y%m%d-%H%M%S')}"


def resume_changes(args: argparse.Namespace) -> dict[str, object]:
    """The config flags given with --resume (field -> value; argparse leaves the others unset). --out and
    --preset are refused: a resumed run stays in its directory, with its own config."""
    if args.out:
        raise UserError(
            f"--out with --resume: a resumed run stays in its own directory ({args.resume}); leave --out out"
        )
    if args.preset:
        raise UserError(
            f"--preset with --resume: the run {args.resume} keeps its own config; leave --preset out"
        )
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}


def cmd_train(args: argparse.Namespace) -> int:
    from minivae.training.loop import Interrupted, train
    from minivae.training.rundir import release_held

    cfg, changes = None, None
    if args.resume:
        out, changes = Path(args.resume), resume_changes(args)
    else:
        cfg = config_from_args(args)
        out = Path(args.out) if args.out else _default_out(cfg)
    try:  # train() names the run directory once it exists; its lock is held until the report is written
        from minivae.analysis.report import write_report  # matplotlib: slow to import, so inside the try

        model, data, _ = train(
            cfg, out, resume=bool(args.resume), progress=not args.quiet, changes=changes, keep_lock=True
        )
        cfg = TrainConfig.from_dict(json.loads((out / "config.json").read_text()))
        print("evaluating on the test set and drawing figures...")
        with threads.limit(cfg.threads):  # the evaluation's products on the policy's threads, as training's
            ev = write_report(model, cfg, data.x_test, data.y_test, out, progress=not args.quiet)
    except Interrupted as e:
        print(f"minivae: interrupted by {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # outside a training step: during loading or the report
        hint = f"; resume with: minivae train --resume {out}" if (out / "last.npz").exists() else ""
        print(f"minivae: interrupted{hint}", file=sys.stderr)
        return 130
    finally:
        release_held(out)
    print(summary_line(ev.metrics))
    print(f"report: {out / 'report.md'}")
    return 0


def summary_line(m: dict) -> str:
    """The one line `train` and `evaluate` both print: the test set's ELBO parts and PSNRs (metrics.json)."""
    return (
        f"test: negative ELBO {m['neg_elbo']:.2f} nats = distortion {m['distortion_nats']:.2f} + rate "
        f"{m['rate_nats']:.2f}; PSNR, mean over the ten digits: sampled z {m['psnr_sampled_digit_mean']:.2f} dB, "
        f"z = mu {m['psnr_mean_digit_mean']:.2f} dB"
    )


def cmd_evaluate(args: argparse.Namespace) -> int:
    from minivae.training.rundir import lock_run_dir

    out = Path(args.run)
    if args.iwae_k < 0:
        raise UserError(f"--iwae-k must be >= 0 (0: off), got {args.iwae_k}")
    if args.test_limit is not None and args.test_limit < 0:
        raise UserError(f"--test-limit must be >= 0 (0: the whole test set), got {args.test_limit}")
    if not (out / f"{args.which}.npz").is_file():
        raise UserError(f"{out} has no {args.which}.npz: is it a minivae run directory?")
    run_dir = lock_run_dir(out, resume=True)  # evaluate writes the run's report: one writer at a time
    try:
        code = _evaluate_run(args, out)
    except BaseException:
        if run_dir.created_lock:  # a refused evaluate leaves no trace, not even a lock file
            run_dir.discard([])
        else:
            run_dir.release()
        raise
    run_dir.release()
    return code


def _evaluate_run(args: argparse.Namespace, out: Path) -> int:
    from minivae.analysis.report import write_report
    from minivae.data import as_nchw, load_mnist, to_float
    from minivae.training.loop import eval_images, load_run

    model, cfg = load_run(out, which=args.which, backend=args.backend)
    images, labels = load_mnist("test", dataset=cfg.dataset)
    limit = cfg.test_limit if args.test_limit is None else args.test_limit  # 0: the whole test set
    if limit:
        images, labels = images[:limit], labels[:limit]
    x = eval_images(as_nchw(to_float(images, model.xp, cfg.dtype)), cfg, "test")
    if args.iwae_k:
        print(
            f"estimating log p(x) with k = {args.iwae_k} importance samples for each of {len(x)} test images "
            f"({args.iwae_k * len(x):,} decoder passes) on {cfg.backend}...",
            file=sys.stderr,
        )
    with threads.limit(cfg.threads):  # minivae.threads' policy, or the run's --threads
        ev = write_report(model, cfg, x, labels, out, iwae_k=args.iwae_k, progress=not args.quiet)
    m = ev.metrics
    print(summary_line(m))
    if args.iwae_k:
        print(
            f"test: log p(x) >= {m['iwae_log_px']:.2f} ± {m['iwae_stderr']:.2f} nats (IWAE, k = {args.iwae_k}, "
            f"{len(x)} images, ± the standard error over images); {m['active_units']} of {model.latent} "
            "latent units active"
        )
    print(f"report: {out / 'report.md'}")
    return 0


SWEEP_LATENTS = [5, 10, 15, 20]


def sweep_latents(args: argparse.Namespace) -> list[int]:
    """The latent sizes to sweep: --latents, or --latent N as the one size N, or SWEEP_LATENTS."""
    if hasattr(args, "latent") and args.latents is not None:
        raise UserError("give the latent sizes once: --latents Z1 Z2 ..., or --latent Z for one size")
    if hasattr(args, "latent"):
        return [args.latent]
    return args.latents if args.latents is not None else SWEEP_LATENTS


def cmd_sweep(args: argparse.Namespace) -> int:
    if args.executor == "dask":  # without the extra: one line, before the sweep's own imports
        from minivae.analysis.executors import import_distributed

        import_distributed()
    from minivae.analysis.sweep import SweepIncomplete, sweep

    latents = sweep_latents(args)
    base = config_from_args(args)
    if any(k < 1 for k in latents) or args.seeds < 1 or args.jobs < 1:
        raise UserError("--latents, --seeds and --jobs take whole numbers >= 1")
    if args.betas is not None and not all(math.isfinite(b) and b >= 0 for b in args.betas):
        raise UserError(f"--betas takes finite numbers >= 0, got {' '.join(f'{b:g}' for b in args.betas)}")
    if len(set(latents)) < len(latents) or len(set(args.betas or [])) < len(args.betas or []):
        raise UserError("--latents and --betas take each value once")
    if args.dask_address and args.executor != "dask":
        raise UserError("--dask-address needs --executor dask")
    out = Path(args.out) if args.out else Path("runs") / f"sweep_{base.arch}_{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        report = sweep(
            base,
            latents,
            args.seeds,
            out,
            jobs=args.jobs,
            progress=not args.quiet,
            betas=args.betas,
            fixed_effective_beta=args.fixed_effective_beta,
            executor=args.executor,
            address=args.dask_address,
        )
    except SweepIncomplete as e:  # the failed runs were named as they ended; the same command retries them
        print(f"minivae: error: {e}; the same command runs them again", file=sys.stderr)
        return 1
    print(f"report: {report}")
    return 0


class Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line as the README promises: `minivae <command>: error: ...`,
    a pointer to that command's --help instead of the usage block, exit code 2, and the closest
    flag, command or choice for a misspelt one. Subcommands' parsers are this class too (add_parser
    makes its parent's class); `--help` is argparse's own."""

    def error(self, message: str) -> typing.NoReturn:
        text = " ".join(message.splitlines())
        self.exit(2, f"{self.prog}: error: {text} (see {self.prog} --help)\n")

    def _check_value(self, action: argparse.Action, value: object) -> None:
        try:
            super()._check_value(action, value)
        except argparse.ArgumentError as e:
            close = difflib.get_close_matches(str(value), [str(c) for c in action.choices or ()], n=1)
            if not close:
                raise
            raise argparse.ArgumentError(action, f"{e.message}; did you mean {close[0]}?") from None

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            # the flags no parser took: refused by the (sub)command they were given to, whose flags are
            # the ones a misspelt flag is compared with
            parser = self._chosen_subcommand(parsed)
            known = [s for s in parser._option_string_actions if s.startswith("-")]
            hints = []
            for word in extras:
                if word.startswith("-") and not _is_number(word):
                    close = difflib.get_close_matches(word.split("=", 1)[0], known, n=1)
                    hints += [c for c in close if c not in hints]
            hint = f"; did you mean {' or '.join(hints)}?" if hints else ""
            parser.error(f"unrecognized arguments: {' '.join(extras)}{hint}")
        return parsed

    def _chosen_subcommand(self, parsed: argparse.Namespace) -> argparse.ArgumentParser:
        """The deepest subcommand's parser that `parsed` names (this parser if it names none)."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                sub = action.choices.get(getattr(parsed, action.dest, None))
                if isinstance(sub, Parser):
                    return sub._chosen_subcommand(parsed)
        return self


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="minivae",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train_command(sub)
    _add_evaluate_command(sub)
    _add_sweep_command(sub)

    from minivae.data.cli import register as register_data

    register_data(sub)
    return parser


def _add_train_command(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train a beta-VAE, then evaluate it and write its report")
    t.add_argument(
        "--resume",
        default=None,
        metavar="RUN",
        help="continue the run in directory RUN with its own config (--epochs may raise the total) "
        "(default: none, a new run)",
    )
    groups = _add_config_flags(t)
    out = groups["output and reporting"]
    out.add_argument("--out", default=None, help="run directory (default: runs/<arch>_z<latent>_<time>)")
    out.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_train)


def _add_evaluate_command(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("evaluate", help="per-digit MSE/PSNR, figures and report.md for a run")
    e.add_argument("run", help="a run directory written by minivae train")
    e.add_argument(
        "--which", choices=["best", "last"], default="best", help="which checkpoint (default: best)"
    )
    e.add_argument("--backend", default=None, help="override the run's backend (numpy | cupy)")
    e.add_argument(
        "--iwae-k",
        type=int,
        default=0,
        metavar="K",
        help="also estimate log p(x) by importance sampling with K samples per test image (the IWAE bound, "
        "Burda et al. 2015; K = 5000 is their reported setting, slow on a CPU); 0: off (default)",
    )
    e.add_argument(
        "--test-limit",
        type=int,
        default=None,
        metavar="N",
        help="evaluate on the first N test images, 0 for all 10,000 (default: the run's own --test-limit)",
    )
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=cmd_evaluate)


def _add_sweep_command(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("sweep", help="train several latent sizes (and seeds) and compare them per digit")
    s.add_argument(
        "--latents",
        type=int,
        nargs="+",
        default=None,
        metavar="Z",
        help=f"latent sizes (default: {' '.join(map(str, SWEEP_LATENTS))})",
    )
    s.add_argument(
        "--betas",
        type=float,
        nargs="+",
        default=None,
        metavar="BETA",
        help="beta values to sweep, each run at every latent size (in --loss units; ELBO units with "
        "--fixed-effective-beta); adds a rate-distortion curve (default: --beta only)",
    )
    s.add_argument(
        "--fixed-effective-beta",
        action="store_true",
        help="hold beta fixed in standard ELBO units across latent sizes: --betas (without --betas, "
        "--beta's effective value) are effective betas, and for --loss seed each run's beta = beta_eff * "
        "latent / (2 * 784). Without it the seed form's effective beta falls as the latent size grows",
    )
    s.add_argument(
        "--seeds", type=int, default=1, help="runs per latent size (seeds seed, seed+1, ...) (default: 1)"
    )
    s.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs trained at once: worker processes (--executor local) or the LocalCluster's workers "
        "(--executor dask without --dask-address) (default: 1)",
    )
    s.add_argument(
        "--executor",
        choices=["local", "dask"],
        default="local",
        help="local: this machine's processes; dask: a task per run on a Dask scheduler, see docs/sweeps.md "
        '(needs pip install -e ".[dask]") (default: local)',
    )
    s.add_argument(
        "--dask-address",
        default=None,
        metavar="ADDR",
        help="with --executor dask: the scheduler to run on, e.g. tcp://host:8786 (default: a new LocalCluster "
        "of --jobs workers)",
    )
    groups = _add_config_flags(
        s, {"latent": "one latent size to sweep, the same as --latents Z (default: see --latents)"}
    )
    out = groups["output and reporting"]
    out.add_argument("--out", default=None, help="sweep directory (default: runs/sweep_<arch>_<time>)")
    out.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_sweep)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM outside the training loop: stop like Ctrl-C (checkpoints are atomic)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"minivae: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("minivae: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
