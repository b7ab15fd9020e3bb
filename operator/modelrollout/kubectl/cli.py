"""`kubectl modelrollout`: watch ModelRollouts and send them commands, the kubectl way.

Installed as the console script `kubectl-modelrollout`, which kubectl runs as
the plugin `kubectl modelrollout`. Commands (promote, abort, pause, resume,
retry, rollback) set an annotation to a fresh nonce (engine/commands.py) and
never touch the spec; `undo` is the one command that edits the spec, putting an
earlier revision's model and runtime back, as `kubectl rollout undo` does.
Errors go to stderr as `error: ...` and exit 1, as kubectl's do.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from kubernetes import client, config
from urllib3.exceptions import HTTPError

from modelrollout.engine.commands import annotation_for
from modelrollout.kube.api import DEPLOYMENTS, MODELROLLOUTS, KubeApi, KubeApiError, Resource
from modelrollout.kube.events import EVENTS
from modelrollout.kube.labels import GROUP, PLURAL, label_selector, selector_labels
from modelrollout.kubectl.render import (
    Refused,
    Rollout,
    refusal,
    render_get,
    render_history,
    render_history_details,
    render_list,
    undo_patch,
    undo_target,
)

WATCH_INTERVAL_SECONDS = 1.0
# Cursor home, then the frame with each line's leftovers erased, then the rest of the screen.
_HOME, _ERASE_LINE, _ERASE_BELOW = "\x1b[H", "\x1b[K", "\x1b[J"

DONE = {
    "promote": "promoted",
    "promote-full": "promoted (all remaining steps skipped)",
    "abort": "aborted",
    "pause": "paused",
    "resume": "resumed",
    "retry": "retried",
    "rollback": "rolled back to the revision kept warm",
}


class CliError(Exception):
    """Printed as `error: <message>`; the command exits 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # kubectl exits 1 on a usage error; argparse would exit 2.
        self.print_usage(sys.stderr)
        self.exit(1, f"error: {message}\n")


class PluginApi(KubeApi):
    """KubeApi plus the few reads and writes only the plugin needs."""

    def list_all_namespaces(self, resource: Resource) -> list[dict[str, Any]]:
        prefix = f"/apis/{resource.group}/{resource.version}" if resource.group else "/api/v1"
        items: list[dict[str, Any]] = self._call("GET", f"{prefix}/{resource.plural}")["items"]
        return items

    def events_about(self, namespace: str, uid: str) -> list[dict[str, Any]]:
        query = [("fieldSelector", f"involvedObject.uid={uid}")]
        items: list[dict[str, Any]] = self._call("GET", EVENTS.path(namespace), query=query)[
            "items"
        ]
        return items

    def json_patch(
        self, resource: Resource, namespace: str, name: str, operations: list[dict[str, Any]]
    ) -> dict[str, Any]:
        return self._call(
            "PATCH",
            resource.path(namespace, name),
            body=operations,
            content_type="application/json-patch+json",
        )


@dataclass(frozen=True)
class Target:
    api: PluginApi
    namespace: str

    def where(self, name: str) -> str:
        return f"{self.namespace}/{name}"

    def rollout(self, name: str) -> dict[str, Any]:
        body = self.api.get(MODELROLLOUTS, self.namespace, name)
        if body is None:
            # Word for word what kubectl says.
            raise CliError(f'{PLURAL}.{GROUP} "{name}" not found')
        return body

    def observe(self, name: str) -> tuple[Rollout, list[dict[str, Any]], list[dict[str, Any]]]:
        """The rollout, its Deployments and its Events."""
        body = self.rollout(name)
        deployments = self.api.list(
            DEPLOYMENTS, self.namespace, label_selector(selector_labels(name))
        )
        events = self.api.events_about(self.namespace, body["metadata"]["uid"])
        return Rollout.of(body), deployments, events


def _now() -> datetime:
    return datetime.now(UTC)


SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def _in_cluster(namespace: str | None) -> Target:
    """The pod's ServiceAccount, as kubectl does in a pod without a kubeconfig."""
    configuration = client.Configuration()
    try:
        # The bound token is read again as the kubelet rotates it.
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException as error:
        raise CliError(f"cannot load the pod's ServiceAccount credentials: {error}") from None
    if not namespace and SERVICE_ACCOUNT_NAMESPACE.exists():
        namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    return Target(PluginApi(client.ApiClient(configuration)), namespace or "default")


def connect(args: argparse.Namespace) -> Target:
    """The user's kubeconfig; in a pod with none (no --kubeconfig, no $KUBECONFIG, no
    ~/.kube/config), the pod's ServiceAccount."""
    kubeconfig: str | None = getattr(args, "kubeconfig", None)
    context: str | None = getattr(args, "context", None)
    namespace: str | None = getattr(args, "namespace", None)
    default_file = Path(os.path.expanduser(config.KUBE_CONFIG_DEFAULT_LOCATION))
    if (
        kubeconfig is None
        and "KUBERNETES_SERVICE_HOST" in os.environ
        and not os.environ.get("KUBECONFIG")
        and not default_file.exists()
    ):
        return _in_cluster(namespace)
    try:
        api_client = config.new_client_from_config(config_file=kubeconfig, context=context)
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
    except (config.ConfigException, OSError) as error:
        raise CliError(f"cannot load the kubeconfig: {error}") from None
    if not namespace:
        chosen = next((c for c in contexts if c.get("name") == context), active) or {}
        namespace = (chosen.get("context") or {}).get("namespace") or "default"
    return Target(PluginApi(api_client), namespace)


# -- commands -------------------------------------------------------------------


def cmd_get(target: Target, args: argparse.Namespace) -> int:
    if not args.watch:
        print(render_get(*target.observe(args.name), _now()))
        return 0
    return watch(target, args.name, sys.stdout.isatty())


def watch(target: Target, name: str, tty: bool, interval: float = WATCH_INTERVAL_SECONDS) -> int:
    """Re-render until Ctrl-C: in place on a terminal, else one frame per change.

    A change is judged on the frame rendered with the clock stopped at the
    start, so ages ticking by alone do not print a new frame.
    """
    started = _now()
    last_seen: str | None = None
    last_drawn: str | None = None
    # Ctrl-C ends the watch even when started from a background job, where the shell
    # hands its children SIGINT ignored and Python then never raises KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        while True:
            observed = target.observe(name)
            seen = render_get(*observed, started)
            if tty:
                frame = render_get(*observed, _now())
                if frame != last_drawn:
                    lines = frame.split("\n")
                    sys.stdout.write(_HOME + "".join(f"{line}{_ERASE_LINE}\n" for line in lines))
                    sys.stdout.write(_ERASE_BELOW)
                    last_drawn = frame
            elif seen != last_seen:
                separator = "" if last_seen is None else "\n"
                sys.stdout.write(f"{separator}{render_get(*observed, _now())}\n")
            last_seen = seen
            sys.stdout.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0


def cmd_list(target: Target, args: argparse.Namespace) -> int:
    if args.all_namespaces:
        bodies = target.api.list_all_namespaces(MODELROLLOUTS)
    else:
        bodies = target.api.list(MODELROLLOUTS, target.namespace)
    if not bodies:
        where = "" if args.all_namespaces else f" in {target.namespace} namespace"
        print(f"No resources found{where}.", file=sys.stderr)
        return 0
    print(render_list([Rollout.of(b) for b in bodies], _now(), args.all_namespaces))
    return 0


def send_command(target: Target, name: str, command: str) -> str:
    """Send `command` (promote, promote-full, abort, ...) by annotation; what was done, in words.

    The plugin's commands and the dashboard's buttons both come here. Raises CliError
    when the operator would ignore the command, KubeApiError when the API server refuses
    the write (RBAC's 403 among them).
    """
    rollout = Rollout.of(target.rollout(name))
    reason = refusal(rollout, command, _now())
    if reason is not None:
        raise CliError(f"{target.where(name)}: {reason}")
    # Any value the operator has not handled yet is a new command: time for humans, hex for luck.
    nonce = f"{_now():%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"
    target.api.merge_patch(
        MODELROLLOUTS,
        target.namespace,
        name,
        {"metadata": {"annotations": {annotation_for(command): nonce}}},
    )
    done = DONE[command]
    if command == "rollback":
        done += f" {rollout.status.previous_revision} ({rollout.status.previous_model})"
    return f"modelrollout.dev/{name} {done}"


def cmd_command(target: Target, args: argparse.Namespace) -> int:
    command = "promote-full" if args.command == "promote" and args.full else args.command
    print(send_command(target, args.name, command))
    return 0


def cmd_history(target: Target, args: argparse.Namespace) -> int:
    rollout = Rollout.of(target.rollout(args.name))
    if not rollout.status.history:
        print(f"No history for {target.where(args.name)} yet.", file=sys.stderr)
        return 0
    print(render_history_details(rollout) if args.details else render_history(rollout))
    return 0


def undo(target: Target, name: str, to_revision: str | None) -> str:
    """Put an earlier revision's model and runtime back (the plugin's and the dashboard's undo)."""
    body = target.rollout(name)
    try:
        chosen = undo_target(Rollout.of(body), to_revision)
    except Refused as refused:
        raise CliError(f"{target.where(name)}: {refused}") from None
    try:
        target.api.json_patch(MODELROLLOUTS, target.namespace, name, undo_patch(body, chosen))
    except KubeApiError as error:
        # A failed `test` operation comes back as a bare 422: tell it from a real one.
        now = target.rollout(name).get("spec") or {}
        before = body.get("spec") or {}
        if error.status != 422 or all(now.get(k) == before.get(k) for k in ("model", "runtime")):
            raise
        raise CliError(
            f"{target.where(name)}: the spec changed while undo read it; run undo again"
        ) from None
    return f"modelrollout.dev/{name} rolled back to revision {chosen.revision} ({chosen.uri})"


def cmd_undo(target: Target, args: argparse.Namespace) -> int:
    print(undo(target, args.name, args.to_revision))
    return 0


def cmd_dashboard(target: Target, args: argparse.Namespace) -> int:
    try:
        from modelrollout.kubectl.dashboard.server import serve
    except ImportError as error:
        raise CliError(
            f"the dashboard needs the `dashboard` extra (pip install 'modelrollout[dashboard]'): "
            f"{error}"
        ) from None
    namespace = "" if args.all_namespaces else target.namespace
    return serve(target, namespace, args.address, args.port, actions=not args.read_only)


# -- parsing --------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    # The connection flags work before or after the subcommand, as kubectl's do;
    # SUPPRESS keeps the subcommand's unset flag from hiding the one given before it.
    flags = _Parser(add_help=False)
    flags.add_argument(
        "-n",
        "--namespace",
        default=argparse.SUPPRESS,
        help="namespace (default: the kubeconfig context's, else default)",
    )
    flags.add_argument("--kubeconfig", default=argparse.SUPPRESS, help="path to a kubeconfig")
    flags.add_argument("--context", default=argparse.SUPPRESS, help="kubeconfig context to use")
    parser = _Parser(
        prog="kubectl modelrollout",
        description="Watch ModelRollouts and send them commands.",
        parents=[flags],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str,
        handler: Callable[[Target, argparse.Namespace], int],
        help_text: str,
        aliases: Sequence[str] = (),
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, aliases=list(aliases), help=help_text, description=help_text, parents=[flags]
        )
        sub.set_defaults(handler=handler, command=name)
        return sub

    get = add("get", cmd_get, "show one rollout: phase, revisions, steps, checks, events")
    get.add_argument("name", metavar="NAME")
    get.add_argument("-w", "--watch", action="store_true", help="re-render on every change")
    listing = add("list", cmd_list, "list rollouts", aliases=["ls"])
    listing.add_argument(
        "-A", "--all-namespaces", action="store_true", help="rollouts of every namespace"
    )
    promote = add("promote", cmd_command, "complete the current step (--full: every step)")
    promote.add_argument("name", metavar="NAME")
    promote.add_argument("--full", action="store_true", help="skip every remaining step")
    for name, help_text in (
        ("abort", "roll the canary back: all traffic to stable"),
        ("pause", "hold the canary at its current step"),
        ("resume", "continue a paused canary"),
        ("retry", "start a rolled-back canary again from step 1"),
        (
            "rollback",
            "within the rollback window after a promotion: all traffic back to the previous "
            "revision, kept warm, in one write (no steps, no model load)",
        ),
    ):
        add(name, cmd_command, help_text).add_argument("name", metavar="NAME")
    history = add("history", cmd_history, "the revisions rolled out, newest first")
    history.add_argument("name", metavar="NAME")
    history.add_argument(
        "--details",
        action="store_true",
        help="each revision's model record: what the spec said and what its server reported",
    )
    undo = add("undo", cmd_undo, "set the spec back to an earlier revision's model and runtime")
    undo.add_argument("name", metavar="NAME")
    undo.add_argument(
        "--to-revision",
        metavar="REV",
        help="the revision to go back to (default: the last promoted one before stable)",
    )
    dashboard = add(
        "dashboard",
        cmd_dashboard,
        "a live web dashboard of the rollouts, with their checks' plots and the commands above",
    )
    dashboard.add_argument(
        "-A", "--all-namespaces", action="store_true", help="rollouts of every namespace"
    )
    dashboard.add_argument(
        "--address", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    dashboard.add_argument(
        "--port", type=int, default=3100, help="port to listen on (default 3100; 0: any free)"
    )
    dashboard.add_argument(
        "--read-only",
        action="store_true",
        help="show, never act: the server refuses every command (the chart's default)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[Target, argparse.Namespace], int] = args.handler
    name: str | None = getattr(args, "name", None)
    target: Target | None = None
    try:
        target = connect(args)
        return handler(target, args)
    except CliError as error:
        message = str(error)
    except KubeApiError as error:
        message = error.message
        if target is not None and name is not None:
            message = f"{target.where(name)}: {message}"
    except HTTPError as error:
        message = f"cannot reach the API server: {error}"
    except KeyboardInterrupt:
        return 130
    print(f"error: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
