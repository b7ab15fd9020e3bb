"""Answers counted by revision from Traefik's access log, as the vLLM traffic tests read them.

The lines are shaped as Traefik v3.7 writes them (`--accesslog.format=json`),
trimmed to the fields read, with its service names for an HTTPRoute's backendRefs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelrollout_dev.traefik import Traefik

pytestmark = pytest.mark.unit

ROUTER = "httproute-ml-chat-gw-ml-inference-gw-ep-web-0-bb90b1a1609c8b7b5466@kubernetesgateway"


def entry(service: str | None, status: int) -> str:
    line = {"RouterName": ROUTER, "DownstreamStatus": status, "OriginStatus": status}
    if service is not None:
        line["ServiceName"] = (
            f"httproute-ml-chat-gw-ml-inference-gw-ep-web-0-bb90b1a1609c8b7b5466-svc-ml-{service}-0"
            "@kubernetesgateway"
        )
    return json.dumps(line)


def test_answers_are_counted_by_the_revision_whose_service_took_them(tmp_path: Path) -> None:
    traefik = Traefik("kubeconfig", tmp_path, "ml", "inference-gw")
    traefik.access_log_path.write_text(
        "\n".join(
            [
                entry("chat-65f3431c41", 200),  # before the mark
                entry("chat-65f3431c41", 200),
                entry("chat-c44482fe18", 200),
                entry("chat-c44482fe18", 500),
                entry("chat-c44482fe18", 500),
                entry("other-c44482fe18", 200),  # another rollout's Service
                entry(None, 404),  # no route matched
            ]
        )
        + "\n"
    )
    assert traefik.answers_by_revision("ml", "chat", since=1) == {
        ("65f3431c41", "200"): 1,
        ("c44482fe18", "200"): 1,
        ("c44482fe18", "500"): 2,
        ("none", "200"): 1,
        ("none", "404"): 1,
    }
    assert traefik.access_log_length() == 7
