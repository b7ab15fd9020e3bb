"""The `modelrollout` command."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from modelrollout.devcluster import cli as devcluster_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelrollout", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    devcluster_cli.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = args.handler
    result: int = handler(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
