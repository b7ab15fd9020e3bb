"""`python -m modelrollout.shadowproxy --stable URL --candidate URL ...`: the comparison proxy."""

from __future__ import annotations

import argparse
import sys

from aiohttp import web

from modelrollout.shadowproxy.server import ProxyConfig, ShadowProxy


def _percent(value: str) -> float:
    number = float(value)
    if not 0 <= number <= 100:
        raise argparse.ArgumentTypeError("must be between 0 and 100")
    return number


def _positive(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise argparse.ArgumentTypeError("must be above 0")
    return number


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m modelrollout.shadowproxy")
    parser.add_argument("--stable", required=True, help="stable's base URL (answers users)")
    parser.add_argument("--candidate", required=True, help="the candidate's base URL")
    parser.add_argument("--candidate-revision", required=True, help="label of the series")
    parser.add_argument("--sample-percent", type=_percent, required=True)
    parser.add_argument("--window", type=_positive, default=60.0, help="seconds")
    parser.add_argument("--max-pending", type=int, default=256)
    parser.add_argument(
        "--drain", type=_positive, default=25.0, help="seconds in-flight answers get on SIGTERM"
    )
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    proxy = ShadowProxy(
        ProxyConfig(
            stable=args.stable.rstrip("/"),
            candidate=args.candidate.rstrip("/"),
            sample_percent=args.sample_percent,
            window_seconds=args.window,
            max_pending=args.max_pending,
            candidate_revision=args.candidate_revision,
        )
    )
    # No access log: request lines are all it would hold, but nothing of a request is kept.
    # On SIGTERM aiohttp stops accepting and lets in-flight answers finish (shutdown_timeout).
    web.run_app(
        proxy.app(),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        shutdown_timeout=args.drain,
    )


if __name__ == "__main__":
    main()
