"""The in-memory API fake passes the same contract as the real API server (tests/cluster)."""

from __future__ import annotations

import pytest

from tests.support.fake_kube import FakeKubeApi
from tests.support.kube_contract import CONTRACT, Check

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("check", CONTRACT, ids=lambda check: check.__name__)
def test_the_fake_behaves_as_the_api_server(check: Check) -> None:
    api = FakeKubeApi()
    try:
        check(api, "ns")
    finally:
        api.stop_watches()
