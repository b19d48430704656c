"""booking.v1.AvailabilityService."""

from __future__ import annotations

from booking.v1 import availability_pb2_grpc as pb_grpc

from server.handlers._base import Deps


class AvailabilityService(pb_grpc.AvailabilityServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._deps = deps
