"""The real API server passes the contract the in-memory fake of the unit tests is held to."""

from __future__ import annotations

import pytest
from kubernetes import client

from modelrollout.kube.api import KubeApi
from tests.support.kube_contract import CONTRACT, Check

pytestmark = pytest.mark.cluster


@pytest.mark.parametrize("check", CONTRACT, ids=lambda check: check.__name__)
def test_the_api_server_keeps_the_contract(
    check: Check, kube_api_client: client.ApiClient, namespace: str
) -> None:
    check(KubeApi(kube_api_client), namespace)
