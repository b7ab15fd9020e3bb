"""The `modelrollout` command."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from modelrollout_dev import cluster_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelrollout", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    cluster_cli.add_parser(commands)
    demo = commands.add_parser(
        "demo", help="a real rollout on the local cluster: one good revision, one bad"
    )
    demo.add_argument("--keep-cluster", action="store_true", help="leave the cluster up")
    demo.add_argument(
        "--engine",
        choices=("torch", "vllm"),
        default="torch",
        help="torch: a good and a bad torch revision; vllm: torch to vLLM, then a slow vLLM",
    )
    demo.set_defaults(handler=_run_demo)
    return parser


def _run_demo(args: argparse.Namespace) -> int:
    # Imported here: the cluster commands need none of the demo's traffic stand-ins (starlette).
    from modelrollout_dev import demo

    return demo.run(keep_cluster=args.keep_cluster, engine=args.engine)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = args.handler
    result: int = handler(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
