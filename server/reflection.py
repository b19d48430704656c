"""Server reflection for grpcurl, buf curl and other tools."""

from __future__ import annotations

from collections.abc import Iterable

from grpc import aio
from grpc_reflection.v1alpha import reflection

__all__ = ["SERVICE_NAMES", "enable_reflection"]

# Reflection's own service names, listed by reflection itself.
SERVICE_NAMES = (reflection.SERVICE_NAME,)


def enable_reflection(service_names: Iterable[str], server: aio.Server) -> None:
    """Serve reflection for ``service_names`` (plus reflection's own services)."""
    reflection.enable_server_reflection((*service_names, *SERVICE_NAMES), server)
