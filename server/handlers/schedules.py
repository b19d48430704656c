"""booking.v1.ScheduleService."""

from __future__ import annotations

from booking.v1 import schedules_pb2_grpc as pb_grpc

from server.handlers._base import Deps


class ScheduleService(pb_grpc.ScheduleServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._deps = deps
