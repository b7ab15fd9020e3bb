"""Traffic routers, one per module, registered in one table by the name `spec.traffic.router` takes.

Each router class declares its `capabilities` (traffic/base.py); the engine and
spec validation ask those, so a new router is its module and one line here (and
its name and settings in the spec, models/spec.py).
"""

from __future__ import annotations

from modelrollout.kube.api import KubeApi
from modelrollout.traffic.base import Capability, RouterCapabilities, TrafficRouter
from modelrollout.traffic.gatewayapi import GatewayAPIRouter
from modelrollout.traffic.inferencepool import InferencePoolRouter
from modelrollout.traffic.service import ServiceRouter

ROUTERS: dict[str, type[TrafficRouter]] = {
    "service": ServiceRouter,
    "gatewayAPI": GatewayAPIRouter,
    "inferencePool": InferencePoolRouter,
}


def _router_class(name: str) -> type[TrafficRouter]:
    try:
        return ROUTERS[name]
    except KeyError:
        raise ValueError(
            f"spec.traffic.router: unknown router {name!r} (one of {', '.join(ROUTERS)})"
        ) from None


def router_for(name: str, api: KubeApi) -> TrafficRouter:
    return _router_class(name)(api)


def capabilities_of(name: str) -> RouterCapabilities:
    return _router_class(name).capabilities


def routers_with(capability: Capability) -> list[str]:
    return [name for name, router in ROUTERS.items() if capability in router.capabilities]
