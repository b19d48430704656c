"""booking.v1.AppointmentService."""

from __future__ import annotations

from booking.v1 import appointments_pb2_grpc as pb_grpc

from server.handlers._base import Deps


class AppointmentService(pb_grpc.AppointmentServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._deps = deps
