"""The dashboard's memory and API requests with N rollouts and P open pages.

On a cluster of its own (`bench-dashboard`, with an API server audit log of
the dashboard's user), `kubectl modelrollout dashboard` runs as a
ServiceAccount of its own, so the audit log counts its API requests. N
ModelRollouts exist; P pages are open on its server-sent events (3/5 of them
the list page, the rest one rollout's page each). The bench then writes
status changes as the operator would (each rollout through the steps of a
canary, `--writes` status writes each, plus one Event each) and reports:

- the dashboard's API requests by verb and resource over the whole run
  (one list and one watch per kind expected, whatever P);
- its peak RSS and CPU time;
- how many server-sent events the pages received, and the delay from a
  status write to the list pages' row update (p50, p99).

    .venv/bin/python -m bench.dashboard --rollouts 100 --pages 5
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from collections import Counter
from pathlib import Path

from bench.scale import (
    NAMESPACE,
    ProcessSampler,
    audit_counts,
    percentile,
    prepare_operator_identity,
    spec,
)
from kubernetes import client, config
from tests.support.dashboard import Dashboard, EventStream

from modelrollout.kube.labels import GROUP, PLURAL, VERSION
from modelrollout_dev import cluster

CLUSTER = "bench-dashboard"
ACCOUNT = "dashboard-bench"
USER = f"system:serviceaccount:modelrollout-system:{ACCOUNT}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=100)
    parser.add_argument("--pages", type=int, default=5)
    parser.add_argument("--writes", type=int, default=4, help="status writes per rollout")
    parser.add_argument("--keep", action="store_true", help="leave the cluster up afterwards")
    args = parser.parse_args()

    cluster.down(CLUSTER)
    state = cluster.up(CLUSTER, gpu_nodes=1, cpu_nodes=0, audit_users=(USER,))
    try:
        api_client = config.new_client_from_config(config_file=state.kubeconfig)
        crd = Path(__file__).resolve().parents[1] / "crds" / "modelrollouts.modelrollout.dev.yaml"
        kubectl = [state.kubectl, "--kubeconfig", state.kubeconfig]
        subprocess.run(
            [*kubectl, "apply", "--server-side", "-f", str(crd)], check=True, capture_output=True
        )
        subprocess.run(
            [*kubectl, "wait", "--for=condition=Established", "--timeout=60s",
             f"crd/{PLURAL}.{GROUP}"],
            check=True, capture_output=True,
        )  # fmt: skip
        core = client.CoreV1Api(api_client)
        core.create_namespace({"metadata": {"name": NAMESPACE}})
        kubeconfig = prepare_operator_identity(state, api_client, ACCOUNT)
        custom = client.CustomObjectsApi(api_client)
        names = [f"r{i:03d}" for i in range(args.rollouts)]
        for name in names:
            custom.create_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, PLURAL,
                {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelRollout",
                 "metadata": {"name": name},
                 "spec": spec("file:///models/v1", state.prometheus.url, 30, "10s")},
            )  # fmt: skip

        started = time.time()
        log = Path(state.directory) / "dashboard.log"
        with Dashboard(kubeconfig, NAMESPACE, log, startup_seconds=120) as board:
            sampler = ProcessSampler(board.pid)
            lists = max(1, args.pages * 3 // 5)
            pages = [EventStream(f"{board.url}/api/stream") for _ in range(lists)]
            pages += [
                EventStream(f"{board.url}/api/stream?rollout={NAMESPACE}/{names[i]}")
                for i in range(args.pages - lists)
            ]
            for page in pages:
                page.__enter__()
            for page in pages:
                page.wait_for(lambda p=page: p.events, 60, "the first snapshot")
            rss_idle = sampler.rss()
            cpu_before = sampler.cpu_seconds()

            written: dict[tuple[str, int], float] = {}
            for write in range(1, args.writes + 1):
                for name in names:
                    written[(name, write)] = time.monotonic()
                    custom.patch_namespaced_custom_object_status(
                        GROUP, VERSION, NAMESPACE, PLURAL, name,
                        {"status": {"phase": "Progressing", "stableRevision": "aaaaaaaaaa",
                                    "canaryRevision": "bbbbbbbbbb",
                                    "currentStep": min(write, 3),
                                    "weights": {"stable": 100 - 10 * write, "canary": 10 * write,
                                                "mirror": 0},
                                    "message": f"bench write {write}"}},
                    )  # fmt: skip
            for name in names:
                core.create_namespaced_event(
                    NAMESPACE,
                    {"metadata": {"generateName": f"{name}."},
                     "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelRollout",
                                        "name": name, "namespace": NAMESPACE},
                     "type": "Normal", "reason": "BenchEvent", "message": "bench"},
                )  # fmt: skip
            last = f"bench write {args.writes}"
            for page in pages[:lists]:
                page.wait_for(
                    lambda p=page: sum(
                        1 for e, d in p.events
                        if e == "row" and (d.get("lastEvent") or {}).get("reason") == "BenchEvent"
                    ) >= len(names) and any(d.get("message") == last for e, d in p.events),
                    120, "every row's last write and Event on the list pages",
                )  # fmt: skip
            cpu = sampler.cpu_seconds() - cpu_before
            peak = sampler.peak_rss
            delays = [
                arrival - written[(d["name"], int(d["message"].split()[-1]))]
                for arrival, (e, d) in zip(pages[0].arrivals, pages[0].events, strict=True)
                if e == "row" and d.get("message", "").startswith("bench write")
                and (d["name"], int(d["message"].split()[-1])) in written
            ]  # fmt: skip
            received = [len(page.events) for page in pages]
            stats = board.get("/api/stats")
            for page in pages:
                page.__exit__()
            sampler.stop()
        counts: Counter[tuple[str, str]] = audit_counts(
            cluster.audit_log_path(CLUSTER), started, time.time(), user=USER
        )
    finally:
        if not args.keep:
            cluster.down(CLUSTER)

    mib = 1024 * 1024
    print(f"dashboard: {args.rollouts} rollouts, {args.pages} pages "
          f"({lists} list, {args.pages - lists} rollout), "
          f"{args.writes * args.rollouts} status writes + {args.rollouts} Events")  # fmt: skip
    print(f"RSS: {rss_idle / mib:.0f} MiB with the pages open, peak {peak / mib:.0f} MiB; "
          f"CPU {cpu:.2f} s for the writes")  # fmt: skip
    print(f"server-sent events received per page: {received}")
    if delays:
        print(f"status write -> list row on a page: p50 {statistics.median(delays) * 1000:.0f} ms, "
              f"p99 {percentile(delays, 0.99) * 1000:.0f} ms")  # fmt: skip
    print(f"dashboard's own count: {stats['kinds']}")
    print("API requests of the dashboard (audit log), whole run:")
    for (verb, resource), number in sorted(counts.items()):
        print(f"  {verb:6} {resource:20} {number}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
