"""The `minivae` command line: thin argparse front-ends over the library."""

from __future__ import annotations

import argparse
import sys

from minivae.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minivae", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    from minivae.data.cli import register as register_data

    register_data(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
