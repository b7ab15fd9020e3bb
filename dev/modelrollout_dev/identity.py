"""Acting as a ServiceAccount on the local cluster: its token in a kubeconfig of its own.

The Helm test runs the operator with exactly the chart's permissions this way;
benchmarks give the operator an identity of its own, so the API server's
audit log tells its requests apart from the harness's.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from kubernetes import client


def service_account_token(
    api_client: client.ApiClient, namespace: str, name: str, expiration_seconds: int = 3600
) -> str:
    """A bound token for the ServiceAccount (TokenRequest), valid `expiration_seconds`."""
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=expiration_seconds)
    )
    response = client.CoreV1Api(api_client).create_namespaced_service_account_token(
        name, namespace, request
    )
    token: str = response.status.token
    return token


def token_kubeconfig(admin_kubeconfig: str, token: str, path: Path) -> str:
    """The admin kubeconfig's cluster, with `token` as the only user; returns the path."""
    admin = yaml.safe_load(Path(admin_kubeconfig).read_text())
    context = next(
        item["context"] for item in admin["contexts"] if item["name"] == admin["current-context"]
    )
    cluster = next(item for item in admin["clusters"] if item["name"] == context["cluster"])
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": "operator", "user": {"token": token}}],
                "contexts": [
                    {
                        "name": "operator",
                        "context": {"cluster": cluster["name"], "user": "operator"},
                    }
                ],
                "current-context": "operator",
            }
        )
    )
    return str(path)
