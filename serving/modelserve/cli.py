"""`modelserve` command line: serve, eval, loadgen, make-tiny-model."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from modelserve.http_defaults import KEEP_ALIVE_TIMEOUT_S


def _add_serve(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("serve", help="serve a causal LM over an OpenAI-compatible API")
    parser.add_argument(
        "--model", required=True, help="path, file://, pvc://claim/path or hf://org/name@rev"
    )
    parser.add_argument(
        "--served-model-name", help="the model name clients send (default: --model)"
    )
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--pvc-mount-root", default="/models", help="where pvc:// claims are mounted"
    )
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--max-model-len", type=int, help="cap the context length")
    parser.add_argument("--max-batch-size", type=int, default=32, help="requests decoded together")
    parser.add_argument("--no-batching", action="store_true", help="decode one request at a time")
    parser.add_argument(
        "--max-queue-size", type=int, default=256, help="waiting requests before 429"
    )
    parser.add_argument("--request-timeout", type=float, default=600.0, help="seconds per request")
    parser.add_argument(
        "--drain-timeout", type=float, default=30.0, help="seconds to drain on SIGTERM"
    )
    parser.add_argument(
        "--keep-alive-timeout",
        type=float,
        default=KEEP_ALIVE_TIMEOUT_S,
        help="seconds an idle client connection stays open: keep it above the gateway's "
        f"idle timeout for upstream connections (default {KEEP_ALIVE_TIMEOUT_S:.0f})",
    )
    parser.add_argument("--log-level", default="info")
    breaker = parser.add_argument_group(
        "circuit breaker (fail fast with 503 and an unready /health while the engine fails)"
    )
    breaker.add_argument(
        "--breaker-failures",
        type=int,
        default=5,
        help="engine failures in a row that open the breaker; 0 turns it off (default 5)",
    )
    breaker.add_argument(
        "--breaker-cooldown",
        type=float,
        default=30.0,
        help="seconds an open breaker refuses requests before one trial request (default 30)",
    )
    cache = parser.add_argument_group(
        "response cache (greedy and seeded non-streaming answers; off by default)"
    )
    cache.add_argument(
        "--response-cache-size",
        type=int,
        default=0,
        help="answers held at most, least recently used evicted first; 0 (default) turns the "
        "cache off",
    )
    cache.add_argument(
        "--response-cache-ttl",
        type=float,
        default=300.0,
        help="seconds an answer is served from the cache (default %(default)g)",
    )
    cache.add_argument(
        "--response-cache-max-bytes",
        type=int,
        default=64 * 1024 * 1024,
        help="bytes of answers (JSON bodies) held at most (default %(default)d)",
    )
    faults = parser.add_argument_group(
        "fault injection (rollout testing only; needs --fault-injection or "
        "MODELSERVE_FAULT_INJECTION=enabled as well as a parameter)"
    )
    faults.add_argument("--fault-injection", action="store_true", help="allow fault parameters")
    faults.add_argument("--fault-error-rate", type=float, default=0.0, help="fraction answered 500")
    faults.add_argument(
        "--fault-latency", type=float, default=0.0, help="seconds added per request"
    )
    faults.add_argument(
        "--fault-token-delay", type=float, default=0.0, help="seconds added per token"
    )
    faults.add_argument("--fault-seed", type=int, help="seed for choosing failed requests")
    faults.add_argument(
        "--fault-engine-error-rate",
        type=float,
        default=0.0,
        help="fraction of engine steps that raise inside the engine (fails their requests)",
    )
    faults.add_argument(
        "--fault-engine-error-limit",
        type=int,
        help="stop injecting engine errors after this many (default: never stop)",
    )


def _run_serve(args: argparse.Namespace) -> int:
    from modelrollout.models.uri import ModelURIError, parse_model_uri, resolve_local_directory
    from modelserve.config.settings import ServeSettings
    from modelserve.faults import (
        FaultConfigError,
        build_fault_injection,
        fault_injection_switched_on,
    )

    try:
        directory = resolve_local_directory(parse_model_uri(args.model), args.pvc_mount_root)
        # A wrong path fails the container at once (CrashLoopBackOff says why) instead of
        # leaving a server that never turns healthy.
        if directory is not None and not (directory / "config.json").is_file():
            raise ModelURIError(f"no model at {directory}: config.json is missing")
        faults = build_fault_injection(
            switched_on=fault_injection_switched_on(args.fault_injection),
            error_rate=args.fault_error_rate,
            added_latency_s=args.fault_latency,
            token_delay_s=args.fault_token_delay,
            seed=args.fault_seed,
            engine_error_rate=args.fault_engine_error_rate,
            engine_error_limit=args.fault_engine_error_limit,
        )
    except (ModelURIError, FaultConfigError) as error:
        print(f"modelserve serve: {error}", file=sys.stderr)
        return 2
    if (
        args.response_cache_size < 0
        or args.response_cache_ttl <= 0
        or args.response_cache_max_bytes < 1
    ):
        print(
            "modelserve serve: --response-cache-size must be >= 0, --response-cache-ttl > 0, "
            "--response-cache-max-bytes >= 1",
            file=sys.stderr,
        )
        return 2
    if args.max_batch_size < 1 or args.max_queue_size < 0:
        print(
            "modelserve serve: --max-batch-size must be >= 1, --max-queue-size >= 0",
            file=sys.stderr,
        )
        return 2
    if args.breaker_failures < 0 or args.breaker_cooldown < 0:
        print(
            "modelserve serve: --breaker-failures and --breaker-cooldown must be >= 0",
            file=sys.stderr,
        )
        return 2
    settings = ServeSettings(
        model_uri=args.model,
        served_model_name=args.served_model_name or args.model,
        pvc_mount_root=args.pvc_mount_root,
        dtype=args.dtype,
        device=args.device,
        max_model_len=args.max_model_len,
        max_batch_size=1 if args.no_batching else args.max_batch_size,
        max_queue_size=args.max_queue_size,
        request_timeout_s=args.request_timeout,
        drain_timeout_s=args.drain_timeout,
        keep_alive_timeout_s=args.keep_alive_timeout,
        breaker_failure_threshold=args.breaker_failures,
        breaker_cooldown_s=args.breaker_cooldown,
        faults=faults,
        response_cache_size=args.response_cache_size,
        response_cache_ttl_s=args.response_cache_ttl,
        response_cache_max_bytes=args.response_cache_max_bytes,
        pod_name=os.environ.get("HOSTNAME") or socket.gethostname(),
    )
    from modelserve.server import serve

    serve(settings, args.host, args.port, args.log_level)
    return 0


def _add_eval(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="perplexity of a served model on a text file, or (--suite) quality gates",
        description=(
            "Two modes. Perplexity: --url URL --model NAME --text-file FILE prints the "
            "perplexity. Quality gates: --suite FILE --candidate URL [--stable URL] "
            "--model NAME runs the suite (see modelserve.gates), prints the result JSON, "
            "writes it to --output and the termination log, and exits 0 when every gate "
            "passes, 1 when one fails, 2 when the suite cannot run."
        ),
    )
    parser.add_argument("--model", required=True, help="the served model name")
    perplexity_mode = parser.add_argument_group("perplexity mode")
    perplexity_mode.add_argument("--url", help="base URL of the server")
    perplexity_mode.add_argument("--text-file", type=Path, help="one text per paragraph")
    gates = parser.add_argument_group("quality-gate mode")
    gates.add_argument("--suite", type=Path, help="the suite (YAML), e.g. from a ConfigMap")
    gates.add_argument("--candidate", help="base URL of the candidate model's server")
    gates.add_argument(
        "--stable", help="base URL of the stable model's server (for agreement and perplexity)"
    )
    gates.add_argument("--output", type=Path, help="also write the result JSON here")
    gates.add_argument(
        "--termination-log",
        type=Path,
        default=Path("/dev/termination-log"),
        help="also written when it exists and is writable: Kubernetes reports it as the "
        "container's terminated message (default: %(default)s)",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")


def _run_eval(args: argparse.Namespace) -> int:
    if args.suite is not None:
        if args.url or args.text_file or not args.candidate:
            print(
                "modelserve eval: --suite takes --candidate (and --stable), not --url/--text-file",
                file=sys.stderr,
            )
            return 2
        return _run_gates(args)
    if not (args.url and args.text_file) or args.candidate or args.stable or args.output:
        print(
            "modelserve eval: give --url and --text-file, or --suite and --candidate",
            file=sys.stderr,
        )
        return 2
    from modelserve.eval import perplexity

    texts = [p.strip() for p in args.text_file.read_text().split("\n\n") if p.strip()]
    result = perplexity(args.url, args.model, texts, args.timeout)
    print(f"tokens scored: {result.tokens_scored} perplexity: {result.perplexity:.3f}")
    return 0


def _run_gates(args: argparse.Namespace) -> int:
    from modelserve.gates import (
        GateRunError,
        SuiteError,
        error_result,
        fit_result,
        load_suite,
        run_suite,
    )

    try:
        suite = load_suite(args.suite.read_text())
        result = run_suite(suite, args.candidate, args.stable, args.model, args.timeout)
        code = 0 if result.passed else 1
    except (OSError, SuiteError, GateRunError) as error:
        print(f"modelserve eval: {error}", file=sys.stderr)
        result, code = error_result(str(error)), 2
    except Exception as error:
        # Exit status 1 means "a gate failed" (the rollout is rolled back): a crash must
        # not read as one, so it reports 2 like any other failure to judge the model.
        logging.getLogger("modelserve.eval").exception("the suite crashed")
        result, code = error_result(f"internal error: {error!r}"), 2
    text = fit_result(result).to_json()
    print(text)
    targets = [args.output] if args.output else []
    termination_log: Path = args.termination_log
    if termination_log.is_file() and os.access(termination_log, os.W_OK):
        targets.append(termination_log)
    for target in targets:
        try:
            target.write_text(text)
        except OSError as error:
            print(f"modelserve eval: cannot write {target}: {error}", file=sys.stderr)
            code = 2
    return code


def _add_loadgen(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("loadgen", help="send load to one or more servers")
    parser.add_argument(
        "--target", action="append", required=True, help="URL or URL=WEIGHT; repeat"
    )
    parser.add_argument("--model", required=True)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--rate", type=float, help="open loop: requests per second")
    mode.add_argument("--concurrency", type=int, help="closed loop: concurrent clients")
    parser.add_argument("--requests", type=int, help="stop after this many requests")
    parser.add_argument("--duration", type=float, help="stop issuing after this many seconds")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--no-stream", action="store_true")
    parser.add_argument("--chat", action="store_true", help="use /v1/chat/completions")
    prompts = parser.add_mutually_exclusive_group()
    prompts.add_argument("--prompt", action="append", help="prompt mix (repeat); default: built-in")
    prompts.add_argument(
        "--prompts-file", type=Path, help="prompt mix, one per line (blank lines skipped)"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    parser.add_argument("--seed", type=int, default=0)


def _run_loadgen(args: argparse.Namespace) -> int:
    from modelserve.loadgen import DEFAULT_PROMPTS, LoadConfig, parse_target, run_load

    prompts: tuple[str, ...] = tuple(args.prompt) if args.prompt else DEFAULT_PROMPTS
    if args.prompts_file is not None:
        try:
            lines = args.prompts_file.read_text().splitlines()
        except OSError as error:
            print(f"modelserve loadgen: --prompts-file: {error}", file=sys.stderr)
            return 2
        prompts = tuple(line.strip() for line in lines if line.strip())
        if not prompts:
            print(f"modelserve loadgen: {args.prompts_file} holds no prompt", file=sys.stderr)
            return 2
    try:
        config = LoadConfig(
            targets=[parse_target(t) for t in args.target],
            model=args.model,
            rate=args.rate,
            concurrency=args.concurrency,
            max_requests=args.requests,
            duration_s=args.duration,
            prompts=prompts,
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            stream=not args.no_stream,
            chat=args.chat,
            request_timeout_s=args.timeout,
            seed=args.seed,
        )
    except ValueError as error:
        print(f"modelserve loadgen: {error}", file=sys.stderr)
        return 2
    result = run_load(config)
    print(result.summary())
    return 0 if result.ok == result.requests else 1


def _add_make_tiny_model(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "make-tiny-model", help="write a tiny random model (no download)"
    )
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--intermediate-size", type=int, help="default: 2 x hidden size")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument(
        "--scripted-answer",
        help="greedy decoding answers every chat prompt with this text (its words distinct)",
    )


def _run_make_tiny_model(args: argparse.Namespace) -> int:
    from modelserve.tiny_model import TinyModelShape, make_tiny_model

    shape = TinyModelShape(
        hidden_size=args.hidden_size,
        intermediate_size=args.intermediate_size or 2 * args.hidden_size,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
    )
    try:
        out_dir = make_tiny_model(
            args.out_dir, seed=args.seed, shape=shape, scripted_answer=args.scripted_answer
        )
    except ValueError as error:
        print(f"modelserve make-tiny-model: --scripted-answer: {error}", file=sys.stderr)
        return 2
    print(out_dir)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="modelserve", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_serve(subparsers)
    _add_eval(subparsers)
    _add_loadgen(subparsers)
    _add_make_tiny_model(subparsers)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(args, "log_level", "info").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    runners = {
        "serve": _run_serve,
        "eval": _run_eval,
        "loadgen": _run_loadgen,
        "make-tiny-model": _run_make_tiny_model,
    }
    return runners[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
