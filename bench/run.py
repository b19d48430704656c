"""One command: dataset, server, load, report - ours vs the seeds' way vs raw SQL.

    python -m bench.run                     # embedded PostgreSQL, 1M clients
    python -m bench.run --clients 100000 --seconds 3 --database-url postgresql://...

Scenario 1 (ListClients, page size 50, order by name):
- grpc page 1 / grpc page 10,000 (reached by page token): the real server over gRPC;
- seeds page 1 / page 10,000: what the source documents do, OFFSET + COUNT(*),
  as raw asyncpg queries (no gRPC, no Python service: the most generous version);
- raw page 1 / page 10,000: the exact keyset statement the server sends, on a
  held asyncpg connection: the floor for our server.
Each runs twice: latency (1 process, 1 call in flight) and throughput
(--procs processes x --concurrency calls in flight). Client processes share the
2 cores with the server and PostgreSQL, so compare ratios within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg

from server.db.engine import to_asyncpg_dsn

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PAGE = 50
DEEP_PAGE = 10_000
COLUMNS = (
    "id, organization_id, given_name, family_name, email, phone, external_id, active, "
    "version, created_at, updated_at, name_key"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- workers (run in spawned processes) ----------------------------------------------


async def _grpc_loop(target: str, request: bytes, seconds: float, concurrency: int) -> list[float]:
    import grpc
    from booking.v1 import clients_pb2, clients_pb2_grpc

    req = clients_pb2.ListClientsRequest.FromString(request)
    lat: list[float] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = clients_pb2_grpc.ClientServiceStub(channel)
        await stub.ListClients(req)  # warm up
        end = time.perf_counter() + seconds

        async def one() -> None:
            while time.perf_counter() < end:
                t = time.perf_counter()
                response = await stub.ListClients(req)
                lat.append((time.perf_counter() - t) * 1000)
                assert len(response.clients) == PAGE

        await asyncio.gather(*(one() for _ in range(concurrency)))
    return lat


async def _sql_loop(
    dsn: str, statements: list[tuple[str, list[Any]]], seconds: float, concurrency: int
) -> list[float]:
    lat: list[float] = []
    conns = [await asyncpg.connect(dsn) for _ in range(concurrency)]
    try:
        for sql, args in statements:
            await conns[0].fetch(sql, *args)
        end = time.perf_counter() + seconds

        async def one(conn: asyncpg.Connection) -> None:
            while time.perf_counter() < end:
                t = time.perf_counter()
                for sql, args in statements:
                    await conn.fetch(sql, *args)
                lat.append((time.perf_counter() - t) * 1000)

        await asyncio.gather(*(one(c) for c in conns))
    finally:
        for c in conns:
            await c.close()
    return lat


def _worker(job: tuple[str, Any, float, int]) -> list[float]:
    kind, payload, seconds, concurrency = job
    if kind == "grpc":
        target, request = payload
        return asyncio.run(_grpc_loop(target, request, seconds, concurrency))
    dsn, statements = payload
    return asyncio.run(_sql_loop(dsn, statements, seconds, concurrency))


def measure(
    kind: str, payload: Any, seconds: float, procs: int, concurrency: int
) -> dict[str, float]:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(procs) as pool:
        results = pool.map(_worker, [(kind, payload, seconds, concurrency)] * procs)
    lat = sorted(x for r in results for x in r)
    q = statistics.quantiles(lat, n=100, method="inclusive")
    return {"rps": len(lat) / seconds, "p50": q[49], "p95": q[94], "p99": q[98], "n": len(lat)}


# -- setup ------------------------------------------------------------------------------


@contextlib.contextmanager
def database(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    from server.db.embedded import EmbeddedPostgres

    pg = EmbeddedPostgres(RESULTS / "pgdata")
    root = pg.start()
    try:

        async def ensure() -> None:
            conn = await asyncpg.connect(to_asyncpg_dsn(root))
            try:
                if not await conn.fetchval("SELECT true FROM pg_database WHERE datname='bench'"):
                    await conn.execute("CREATE DATABASE bench")
            finally:
                await conn.close()

        asyncio.run(ensure())
        yield pg.url("bench")
    finally:
        pg.stop()


@contextlib.contextmanager
def server_process(url: str) -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "BOOKING_ENV": "dev", "BOOKING_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "--database-url", url, "serve", "--port", str(port)],
        env=env,
        cwd=ROOT,
    )
    target = f"127.0.0.1:{port}"
    try:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + 60
        with grpc.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                try:
                    if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                        break
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("server did not become SERVING")
                time.sleep(0.2)
        yield target
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url")
    parser.add_argument("--clients", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)

    from booking.v1 import clients_pb2

    from bench.generate import generate
    from server.config import DEV_PAGE_TOKEN_SECRET
    from server.db.migrate import upgrade
    from server.paging import PageTokenCodec, request_scope

    with database(args.database_url) as url:
        asyncio.run(upgrade(url, ROOT / "alembic"))
        org = asyncio.run(generate(url, args.clients))
        offset = (DEEP_PAGE - 1) * PAGE
        if offset + PAGE > args.clients:
            raise SystemExit(f"page {DEEP_PAGE} needs {offset + PAGE} clients")
        dsn = to_asyncpg_dsn(url)

        async def position() -> tuple[str, str, str]:
            conn = await asyncpg.connect(dsn)
            try:
                row = await conn.fetchrow(
                    "SELECT name_key, id::text FROM clients WHERE organization_id = $1 "
                    "ORDER BY name_key, id OFFSET $2 LIMIT 1",
                    org,
                    offset - 1,
                )
                first = await conn.fetchval(
                    "SELECT id::text FROM clients WHERE organization_id = $1 "
                    "ORDER BY name_key, id OFFSET $2 LIMIT 1",
                    org,
                    offset,
                )
                return row["name_key"], row["id"], first
            finally:
                await conn.close()

        name_key, last_id, expected_first = asyncio.run(position())
        # The token the server itself issues after page 9,999 (same secret, same scope).
        scope = request_scope("ListClients", org, None, None, None, "", "name", False)
        token = PageTokenCodec(DEV_PAGE_TOKEN_SECRET).encode(scope, DEEP_PAGE, (name_key, last_id))
        page1 = clients_pb2.ListClientsRequest(organization_id=org, page_size=PAGE)
        deep = clients_pb2.ListClientsRequest(organization_id=org, page_size=PAGE, page_token=token)
        where = "WHERE organization_id = $1"
        raw1 = [
            (
                f"SELECT {COLUMNS} FROM clients {where} ORDER BY name_key, id LIMIT $2",
                [org, PAGE + 1],
            )
        ]
        raw_deep = [
            (
                f"SELECT {COLUMNS} FROM clients {where} AND (name_key, id) > ($2, $3) "
                f"ORDER BY name_key, id LIMIT $4",
                [org, name_key, last_id, PAGE + 1],
            )
        ]
        count = (f"SELECT count(*) FROM clients {where}", [org])
        seeds1 = [
            (
                f"SELECT {COLUMNS} FROM clients {where} ORDER BY name_key, id OFFSET 0 LIMIT $2",
                [org, PAGE],
            ),
            count,
        ]
        seeds_deep = [
            (
                f"SELECT {COLUMNS} FROM clients {where} ORDER BY name_key, id OFFSET $2 LIMIT $3",
                [org, offset, PAGE],
            ),
            count,
        ]

        with server_process(url) as target:
            import grpc
            from booking.v1 import clients_pb2_grpc

            with grpc.insecure_channel(target) as channel:
                got = clients_pb2_grpc.ClientServiceStub(channel).ListClients(deep)
                assert got.page_info.page == DEEP_PAGE and got.clients[0].id == expected_first, (
                    "the deep token did not land on page 10,000"
                )
            scenarios = [
                ("grpc page 1", "grpc", (target, page1.SerializeToString())),
                ("grpc page 10,000 (token)", "grpc", (target, deep.SerializeToString())),
                ("seeds page 1 (OFFSET+COUNT)", "sql", (dsn, seeds1)),
                ("seeds page 10,000 (OFFSET+COUNT)", "sql", (dsn, seeds_deep)),
                ("raw keyset page 1", "sql", (dsn, raw1)),
                ("raw keyset page 10,000", "sql", (dsn, raw_deep)),
            ]
            results: dict[str, dict[str, dict[str, float]]] = {}
            for name, kind, payload in scenarios:
                results[name] = {
                    "latency": measure(kind, payload, args.seconds, 1, 1),
                    "throughput": measure(
                        kind, payload, args.seconds, args.procs, args.concurrency
                    ),
                }
                lat, thr = results[name]["latency"], results[name]["throughput"]
                print(
                    f"{name:34s} p50 {lat['p50']:8.2f} ms  p95 {lat['p95']:8.2f}  "
                    f"p99 {lat['p99']:8.2f}  | {thr['rps']:8.0f} calls/s "
                    f"(p50 {thr['p50']:.2f} ms)",
                    flush=True,
                )

    g1, gd = results["grpc page 1"]["latency"], results["grpc page 10,000 (token)"]["latency"]
    s1 = results["seeds page 1 (OFFSET+COUNT)"]["latency"]
    sd = results["seeds page 10,000 (OFFSET+COUNT)"]["latency"]
    r1, rd = results["raw keyset page 1"]["latency"], results["raw keyset page 10,000"]["latency"]
    lines = [
        f"# bench: ListClients at {args.clients:,} clients, page size {PAGE}",
        "",
        f"`python -m bench.run --clients {args.clients} --seconds {args.seconds:g}` "
        f"({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, shared with the server)",
        "",
        "| scenario | p50 ms | p95 ms | p99 ms | calls/s (1 in flight) | calls/s "
        f"({args.procs}x{args.concurrency} in flight) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lat, thr = r["latency"], r["throughput"]
        lines.append(
            f"| {name} | {lat['p50']:.2f} | {lat['p95']:.2f} | {lat['p99']:.2f} | "
            f"{lat['rps']:.0f} | {thr['rps']:.0f} |"
        )
    lines += [
        "",
        f"- page 10,000 / page 1 (grpc, p50): {gd['p50'] / g1['p50']:.2f}x",
        f"- seeds' page 10,000 / ours page 10,000 (p50): {sd['p50'] / gd['p50']:.1f}x",
        f"- seeds' page 1 / ours page 1 (p50): {s1['p50'] / g1['p50']:.1f}x",
        f"- server / raw query, page 1 (p50): {g1['p50'] / r1['p50']:.2f}x; "
        f"page 10,000: {gd['p50'] / rd['p50']:.2f}x",
    ]
    report = "\n".join(lines)
    (RESULTS / "latest.md").write_text(report + "\n")
    print("\n" + report)


if __name__ == "__main__":
    main()
