"""Traffic routers, one per module, registered in one table."""

from __future__ import annotations

from collections.abc import Callable

from modelrollout.kube.api import KubeApi
from modelrollout.traffic.base import TrafficRouter
from modelrollout.traffic.gatewayapi import GatewayAPIRouter
from modelrollout.traffic.service import ServiceRouter

ROUTERS: dict[str, Callable[[KubeApi], TrafficRouter]] = {
    "service": ServiceRouter,
    "gatewayAPI": GatewayAPIRouter,
}


def router_for(name: str, api: KubeApi) -> TrafficRouter:
    try:
        return ROUTERS[name](api)
    except KeyError:
        raise ValueError(
            f"spec.traffic.router: unknown router {name!r} (one of {', '.join(ROUTERS)})"
        ) from None
