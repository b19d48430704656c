"""create_server: one SERVICES table drives registration, health and reflection;
stop() closes the pool and telemetry even when an earlier step fails."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from server.app import create_server
from server.handlers import SERVICES, service_names
from server.testing import RunningServer, test_settings


async def test_every_registered_service_is_served_health_checked_and_reflected(
    booking_server: RunningServer,
) -> None:
    names = service_names()
    assert len(names) == len(SERVICES) and all(n.startswith("booking.v1.") for n in names)
    async with grpc.aio.insecure_channel(booking_server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in names:
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        listed: set[str] = set()
        async for answer in stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        ):
            listed |= {s.name for s in answer.list_services_response.service}
        assert set(names) <= listed
        for service in SERVICES:
            # Every method of every registered service answers (here: with a
            # validation error, not UNIMPLEMENTED).
            for method in service.pb2.DESCRIPTOR.services_by_name[service.short_name].methods:
                call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                    f"/{service.full_name}/{method.name}"
                )
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call(b"")
                assert caught.value.code() != grpc.StatusCode.UNIMPLEMENTED, method.full_name


async def test_stop_closes_the_pool_and_telemetry_when_a_step_fails(database_url: str) -> None:
    server = create_server(test_settings(), database_url=database_url)
    await server.start()
    closed: list[str] = []

    async def broken() -> None:
        raise RuntimeError("health monitor failed to stop")

    engine = server.database.engine

    async def dispose() -> None:
        closed.append("pool")
        await engine.dispose()

    def telemetry_shutdown() -> None:
        closed.append("telemetry")

    server.health.stop = broken  # type: ignore[method-assign]
    server.database = _Namespace(engine=_Namespace(dispose=dispose))  # type: ignore[assignment]
    server.telemetry = _Namespace(shutdown=telemetry_shutdown)  # type: ignore[assignment]
    await server.stop(0.1)
    assert closed == ["pool", "telemetry"]


class _Namespace:
    def __init__(self, **attributes: Any) -> None:
        self.__dict__.update(attributes)


async def test_a_taken_port_is_port_unavailable(database_url: str) -> None:
    """grpcio raises RuntimeError on a failed bind: create_server turns it into
    PortUnavailable (an OSError the CLI reports in one line, exit 3)."""
    import socket

    from server.app import PortUnavailable

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortUnavailable):
            create_server(test_settings(port=port), database_url=database_url)


def test_the_lock_file_is_never_followed_through_a_symlink(tmp_path: Any) -> None:
    from server.db.embedded import EmbeddedPostgres, EmbeddedPostgresError

    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    pg = EmbeddedPostgres(tmp_path / "pgdata")
    pg.lock_path.symlink_to(victim)
    with pytest.raises(EmbeddedPostgresError):
        pg.start()
    assert victim.read_text() == "precious\n"
