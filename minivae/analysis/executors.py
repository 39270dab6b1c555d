"""Where a sweep's runs train, and what each run directory already holds.

Every run is one call of run_task, which trains and reports exactly as `minivae train` does, into its own
directory. It first reads what the directory holds (run_state), so the same sweep command run again is
idempotent: a finished run of the same config is skipped, an interrupted one resumed from its last.npz, one
that died before its first checkpoint started again, and a directory holding another config refused. The
config is compared by config_key, a hash of its JSON. The directory's lock (rundir.lock_run_dir) keeps two
sweeps from writing one run at once.

The executors run the calls and yield one Outcome per run as it ends:
- local, jobs 1: one after another in this process;
- local, jobs N: a pool of N worker processes (concurrent.futures);
- dask: a task per run on a Dask scheduler, a LocalCluster of N single-threaded worker processes, or the
  scheduler at an address. A task whose worker dies is run again once (allowed-failures 1 on a
  LocalCluster), and a task that raises is retried once (retries=1); a second failure is reported.
A failure stays with its run: the others go on, and the Outcome carries the error.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from minivae.errors import UserError
from minivae.training.config import flag

EXECUTORS = ("local", "dask")
DASK_EXTRA = 'pip install -e ".[dask]"'
Task = tuple[dict[str, Any], str]  # (the run's TrainConfig as a dict, its directory)


class RunFailed(RuntimeError):
    """A run's error as one line (a plain exception, so that it pickles from a worker)."""


@dataclass
class Outcome:
    path: str
    status: str  # trained | resumed | skipped | failed
    error: str = ""


# ------------------------------------------------------------------------------- what a directory holds


def config_key(cfg: dict[str, Any]) -> str:
    """A run's identity: the first 16 hex digits of the SHA-256 of its config as sorted-key JSON."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]


def run_state(cfg: dict[str, Any], path: str | Path) -> str:
    """What the sweep does with run directory `path` for config `cfg`: "new" (train it), "finished"
    (report.md and metrics.json written: skip it), "resume" (a last.npz: continue it) or "restart" (a
    start that died before its first checkpoint: start again). A file there, or a run of another
    config, is one UserError line naming the directory."""
    from minivae.training.rundir import LOCK

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserError(f"{p} is a file, not a run directory: move it away, or choose another --out")
    if not p.is_dir() or not [q for q in p.iterdir() if q.name != LOCK]:
        return "new"
    try:
        stored = json.loads((p / "config.json").read_text())
    except (OSError, ValueError):
        raise UserError(
            f"{p} holds files but no readable config.json, so it is not a run of this sweep: move it "
            "away, or choose another --out"
        ) from None
    if config_key(stored) != config_key(cfg):
        raise UserError(f"{p} holds a run of another config ({_differences(stored, cfg)}): {_LEAVE}")
    if (p / "report.md").is_file() and (p / "metrics.json").is_file():
        return "finished"
    return "resume" if (p / "last.npz").is_file() else "restart"


_LEAVE = "nothing was changed; choose another --out, or move that directory away"


def _differences(stored: dict[str, Any], cfg: dict[str, Any]) -> str:
    names = sorted(set(stored) | set(cfg), key=lambda k: (k not in cfg, k))
    diff = [k for k in names if stored.get(k) != cfg.get(k)]
    shown = ", ".join(f"--{flag(k)} {stored.get(k)} there, {cfg.get(k)} in this sweep" for k in diff[:3])
    return shown + (f" and {len(diff) - 3} more" if len(diff) > 3 else "")


def clear_unstarted(path: Path) -> None:
    """Remove what a start that died before its first checkpoint left (config.json, history.csv,
    temporary files), holding the directory's lock while it does; refused while another process holds it."""
    from minivae.training.loop import NEW_RUN_FILES
    from minivae.training.rundir import LOCK, RunDir

    fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    run = RunDir(path, fd, created=False, created_lock=False)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UserError(f"{path} is in use by another minivae run (see its {LOCK}): {_LEAVE}") from None
        if not (path / "last.npz").exists():  # else a run took it and checkpointed meanwhile: resume that
            for name in NEW_RUN_FILES:
                (path / name).unlink(missing_ok=True)
            run.remove_stale_tmp()
    finally:
        run.release()


# ------------------------------------------------------------------------------------------ one run


def run_task(cfg: dict[str, Any], path: str, progress: bool = False, on_step: Callable | None = None) -> str:
    """Train and report one run into `path` (here, or in a worker) as `minivae train` does; returns
    "trained", "resumed" or "skipped". Any error is raised as RunFailed, one line."""
    from minivae.analysis.report import write_report
    from minivae.training.config import TrainConfig
    from minivae.training.loop import train
    from minivae.training.rundir import release_held

    out = Path(path)
    try:
        state = run_state(cfg, out)
        if state == "finished":
            return "skipped"
        if state == "restart":
            clear_unstarted(out)
            state = run_state(cfg, out)
        resume = state == "resume"
        train_cfg = TrainConfig.from_dict(cfg)
        try:  # the run keeps its directory's lock until its report is written
            model, data, _ = train(
                train_cfg, out, resume=resume, progress=progress, on_step=on_step, keep_lock=True
            )
            write_report(model, train_cfg, data.x_test, data.y_test, out, progress=progress)
        finally:
            release_held(out)
    except Exception as e:
        text = " ".join(str(e).split()) or "(no message)"
        raise RunFailed(text if isinstance(e, UserError) else f"{type(e).__name__}: {text}") from None
    return "resumed" if resume else "trained"


def one_blas_thread() -> None:
    """In a worker process: one BLAS thread per run, unless OPENBLAS_NUM_THREADS (or the run's --threads)
    says otherwise. N runs at once on N cores, each on one thread, keep every core busy without the
    threads of one run waiting on a core another run holds."""
    from threadpoolctl import threadpool_limits

    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    threadpool_limits(limits=int(os.environ["OPENBLAS_NUM_THREADS"]))


def _worker_task(cfg: dict[str, Any], path: str, on_step: Callable | None) -> str:
    one_blas_thread()
    return run_task(cfg, path, False, on_step)


# ------------------------------------------------------------------------------------------ executors


def run_local(tasks: list[Task], jobs: int, progress: bool, on_step: Callable | None) -> Iterator[Outcome]:
    """The runs in this process (jobs 1, with each run's progress bars) or in a pool of `jobs` processes."""
    if jobs == 1:
        for cfg, path in tasks:
            yield _outcome(path, lambda cfg=cfg, path=path: run_task(cfg, path, progress, on_step))
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(_worker_task, cfg, path, on_step): path for cfg, path in tasks}
        for fut in as_completed(futures):
            yield _outcome(futures[fut], fut.result)


def _outcome(path: str, result: Callable[[], str]) -> Outcome:
    try:
        return Outcome(path, result())
    except RunFailed as e:
        return Outcome(path, "failed", str(e))
    except Exception as e:  # the pool's worker process died (BrokenProcessPool), a pickling error, ...
        return Outcome(path, "failed", f"{type(e).__name__}: {' '.join(str(e).split())}")


def import_distributed() -> Any:
    """dask.distributed, or one line saying how to install it."""
    try:
        import distributed
    except ImportError:
        raise UserError(f"--executor dask needs Dask's distributed scheduler: {DASK_EXTRA}") from None
    return distributed


def start_cluster(jobs: int, dashboard_address: str | None = ":8787") -> Any:
    """A LocalCluster of `jobs` single-threaded worker processes; a task whose worker dies runs once more
    (allowed-failures 1), then fails with KilledWorker."""
    import dask

    distributed = import_distributed()
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        return distributed.LocalCluster(
            n_workers=jobs, threads_per_worker=1, processes=True, dashboard_address=dashboard_address
        )


def dashboard_line(client: Any) -> str:
    if importlib.util.find_spec("bokeh") is None:
        return "the dashboard needs bokeh: pip install 'bokeh>=3.1'"
    return f"dashboard: {client.dashboard_link}"


@contextlib.contextmanager
def dask_client(jobs: int, address: str | None) -> Iterator[Any]:
    """A Client of the scheduler at `address`, or of a new LocalCluster of `jobs` workers (closed after)."""
    distributed = import_distributed()
    if address:
        try:
            client = distributed.Client(address, timeout="20s")
        except OSError as e:
            raise UserError(f"--dask-address {address}: no Dask scheduler answered ({e})") from None
        with client:
            workers = len(client.nthreads())
            print(
                f"dask: scheduler {address}, {workers} worker(s); {dashboard_line(client)}", file=sys.stderr
            )
            yield client
        return
    with start_cluster(jobs) as cluster, distributed.Client(cluster) as client:
        print(
            f"dask: a LocalCluster of {jobs} single-threaded worker processes; {dashboard_line(client)}",
            file=sys.stderr,
        )
        yield client


def run_dask(tasks: list[Task], client: Any, on_step: Callable | None) -> Iterator[Outcome]:
    """One task per run on the client's scheduler, each retried once if it raises."""
    distributed = import_distributed()
    tag = uuid.uuid4().hex[:8]  # keys unique to this sweep, named by the run on the dashboard
    futures = {
        client.submit(_worker_task, cfg, path, on_step, key=f"{Path(path).name}-{tag}", retries=1): path
        for cfg, path in tasks
    }
    for fut in distributed.as_completed(futures):
        path = futures[fut]
        if fut.status == "finished":
            yield Outcome(path, fut.result())
            continue
        e = fut.exception()
        if isinstance(e, distributed.KilledWorker):
            yield Outcome(path, "failed", "its worker process died on each try (KilledWorker)")
        else:
            yield Outcome(path, "failed", str(e) if isinstance(e, RunFailed) else f"{type(e).__name__}: {e}")


def run_all(
    tasks: list[Task],
    executor: str = "local",
    jobs: int = 1,
    address: str | None = None,
    progress: bool = True,
    on_step: Callable | None = None,
) -> dict[str, Outcome]:
    """Run every task on the executor; a line per run as it ends, and a live line of done, running and
    failed. Returns each run's Outcome by directory."""
    if executor not in EXECUTORS:
        raise UserError(f"--executor {executor!r}: choose one of {', '.join(EXECUTORS)}")
    with contextlib.ExitStack() as stack:
        if executor == "dask":
            client = stack.enter_context(dask_client(jobs, address))
            slots = sum(client.nthreads().values()) or 1
            outcomes = run_dask(tasks, client, on_step)
        else:
            slots, outcomes = jobs, run_local(tasks, jobs, progress and jobs == 1, on_step)
        return _follow(outcomes, len(tasks), slots, progress and (executor == "dask" or jobs > 1))


def _follow(outcomes: Iterator[Outcome], total: int, slots: int, live: bool) -> dict[str, Outcome]:
    """Collect the outcomes, printing each and updating the done / running / failed line."""
    bar = tqdm(total=total, desc="sweep", unit="run", disable=not live, file=sys.stderr, dynamic_ncols=True)
    seen: dict[str, Outcome] = {}
    with bar:
        bar.set_postfix_str(f"done 0, running {min(slots, total)}, failed 0")
        for o in outcomes:
            seen[o.path] = o
            failed = sum(x.status == "failed" for x in seen.values())
            line = f"{o.path}: {o.status}" + (f": {o.error}" if o.error else "")
            bar.write(line, file=sys.stderr)
            pending = total - len(seen)
            status = f"done {len(seen) - failed}, running {min(slots, pending)}, failed {failed}"
            bar.set_postfix_str(status, refresh=False)
            bar.update()
    return seen
