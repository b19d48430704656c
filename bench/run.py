"""One command: dataset, server, load, report - ours vs the seeds' way vs raw SQL.

    python -m bench.run                     # embedded PostgreSQL, 1M clients
    python -m bench.run --clients 100000 --seconds 3 --database-url postgresql://...

Scenario 1 (ListClients, page size 50, order by name):
- grpc page 1 / grpc page 10,000 (reached by page token): the real server over gRPC;
- seeds page 1 / page 10,000: what the source documents do, OFFSET + COUNT(*),
  as raw asyncpg queries (no gRPC, no Python service: the most generous version);
- raw page 1 / page 10,000: the exact keyset statement the server sends, on a
  held asyncpg connection: the floor for our server.
- grpc floor: a health Check, no SQL and no handler: what any call to a
  Python grpc.aio server from a Python client costs here.

Scenario 2 (ListClients search, page 1 of 50, order by name), for terms whose
matches come early in name order ("brown"), late and clustered ("smith",
"tanaka"), rarely (one phone number) and everywhere ("example.com"), plus a
late one with an exact count:
- grpc search: the real server;
- seeds search: the source documents' ILIKE on the name and e-mail columns,
  OFFSET + COUNT(*), as raw asyncpg queries;
- raw search: the exact statement(s) the server sends (built by the same
  query code), on a held asyncpg connection.
- h2load page 1 / h2load floor (when Debian's nghttp2-client is installed):
  the same calls from a C client, to separate the client's cost from the server's.
Each runs twice: latency (1 process, 1 call in flight, the scenarios taking
turns in --rounds rounds so that the machine's noise falls on all alike) and
throughput (--procs processes x --concurrency calls in flight). Client
processes share the 2 cores with the server and PostgreSQL, so compare ratios
within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg

from server.db.engine import to_asyncpg_dsn

# (name, kind, payload): kind is grpc (ListClients), rpc (any unary method:
# target, method path, serialized request, a module-level check of the
# serialized response or None), health or sql.
Scenario = tuple[str, str, Any]

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

Caller = Callable[[], Awaitable[None]]


async def _open(kind: str, payload: Any, n: int, stack: contextlib.AsyncExitStack) -> list[Caller]:
    """``n`` callers of one scenario (gRPC callers share a channel, as an app would;
    SQL callers each hold a connection, as a pool would)."""
    if kind in ("grpc", "health", "rpc"):
        import grpc
        from booking.v1 import clients_pb2, clients_pb2_grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        channel = await stack.enter_async_context(grpc.aio.insecure_channel(payload[0]))
        if kind == "rpc":
            _, method, message, check = payload
            unary: Any = channel.unary_unary(method)  # bytes in, bytes out

            async def rpc_call() -> None:
                response = await unary(message)
                if check is not None:
                    check(response)

            return [rpc_call] * n
        if kind == "health":
            check = health_pb2_grpc.HealthStub(channel).Check
            ping = health_pb2.HealthCheckRequest()

            async def health_call() -> None:
                await check(ping)

            return [health_call] * n
        list_clients = clients_pb2_grpc.ClientServiceStub(channel).ListClients
        request = clients_pb2.ListClientsRequest.FromString(payload[1])
        expected = payload[2] if len(payload) > 2 else PAGE

        async def grpc_call() -> None:
            response = await list_clients(request)
            assert len(response.clients) == expected

        return [grpc_call] * n
    dsn, statements = payload
    callers: list[Caller] = []
    for _ in range(n):
        conn = await asyncpg.connect(dsn)
        stack.push_async_callback(conn.close)

        async def sql_call(conn: asyncpg.Connection = conn) -> None:
            for sql, args in statements:
                await conn.fetch(sql, *args)

        callers.append(sql_call)
    return callers


async def _run(callers: list[Caller], seconds: float, lat: list[float]) -> None:
    end = time.perf_counter() + seconds

    async def loop(call: Caller) -> None:
        while time.perf_counter() < end:
            t = time.perf_counter()
            await call()
            lat.append((time.perf_counter() - t) * 1000)

    await asyncio.gather(*(loop(c) for c in callers))


async def _h2load(payload: Any, seconds: float, clients: int, lat: list[float]) -> None:
    """The same gRPC call from h2load (nghttp2, C): no Python on the client side."""
    target, path, message = payload
    with tempfile.TemporaryDirectory() as tmp:
        body, log = Path(tmp) / "body", Path(tmp) / "log"
        # gRPC framing: uncompressed flag, big-endian length, message.
        body.write_bytes(b"\0" + len(message).to_bytes(4, "big") + message)
        proc = await asyncio.create_subprocess_exec(
            *["h2load", "-c", str(clients), "-m", "1", "-D", f"{int(seconds * 1000)}ms"],
            *["-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers"],
            *["--log-file", str(log), f"http://{target}{path}"],
            stdout=asyncio.subprocess.DEVNULL,
        )
        if await proc.wait() != 0:
            raise RuntimeError(f"h2load failed on {path}")
        for line in log.read_text().splitlines():
            _start, status, micros = line.split("\t")
            assert status == "200", f"h2load got HTTP {status} from {path}"
            lat.append(int(micros) / 1000)


async def _latency(
    scenarios: list[Scenario], seconds: float, rounds: int
) -> dict[str, list[float]]:
    """One call in flight; the scenarios take turns in short rounds, so that the
    machine's noise (shared, 2 cores) falls on all of them alike."""
    lat: dict[str, list[float]] = {name: [] for name, _, _ in scenarios}
    async with contextlib.AsyncExitStack() as stack:
        callers = {
            name: await _open(kind, p, 1, stack) for name, kind, p in scenarios if kind != "h2load"
        }
        for name, _, _ in scenarios:
            if name in callers:
                await _run(callers[name], min(0.5, seconds / rounds), [])  # warm up
        for _ in range(rounds):
            for name, kind, payload in scenarios:
                if kind == "h2load":
                    await _h2load(payload, seconds / rounds, 1, lat[name])
                else:
                    await _run(callers[name], seconds / rounds, lat[name])
    return lat


async def _throughput(scenario: Scenario, seconds: float, concurrency: int) -> list[float]:
    _, kind, payload = scenario
    lat: list[float] = []
    async with contextlib.AsyncExitStack() as stack:
        callers = await _open(kind, payload, concurrency, stack)
        await _run(callers, min(0.5, seconds), [])  # warm up
        await _run(callers, seconds, lat)
    return lat


def _latency_worker(job: tuple[list[Scenario], float, int]) -> dict[str, list[float]]:
    return asyncio.run(_latency(*job))


def _throughput_worker(job: tuple[Scenario, float, int]) -> list[float]:
    return asyncio.run(_throughput(*job))


def _summary(lat: list[float], seconds: float) -> dict[str, float]:
    lat = sorted(lat)
    q = statistics.quantiles(lat, n=100, method="inclusive")
    return {"rps": len(lat) / seconds, "p50": q[49], "p95": q[94], "p99": q[98], "n": len(lat)}


def results_table(
    results: dict[str, dict[str, dict[str, float]]], procs: int, concurrency: int
) -> list[str]:
    """measure()'s results as a markdown table, one row per scenario."""
    lines = [
        "| scenario | p50 ms | p95 ms | p99 ms | calls/s (1 in flight) | calls/s "
        f"({procs}x{concurrency} in flight) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lat, thr = r["latency"], r["throughput"]
        lines.append(
            f"| {name} | {lat['p50']:.2f} | {lat['p95']:.2f} | {lat['p99']:.2f} | "
            f"{lat['rps']:.0f} | {thr['rps']:.0f} |"
        )
    return lines


def measure(
    scenarios: list[Scenario], seconds: float, rounds: int, procs: int, concurrency: int
) -> dict[str, dict[str, dict[str, float]]]:
    ctx = multiprocessing.get_context("spawn")
    results: dict[str, dict[str, dict[str, float]]] = {}
    with ctx.Pool(1) as pool:
        latency = pool.apply(_latency_worker, ((scenarios, seconds, rounds),))
    for name, _, _ in scenarios:
        results[name] = {"latency": _summary(latency[name], seconds)}
    for scenario in scenarios:
        if scenario[1] == "h2load":
            # One C client process with as many connections as the Python ones in all.
            lat: list[float] = []
            asyncio.run(_h2load(scenario[2], seconds, procs * concurrency, lat))
            results[scenario[0]]["throughput"] = _summary(lat, seconds)
        else:
            with ctx.Pool(procs) as pool:
                runs = pool.map(_throughput_worker, [(scenario, seconds, concurrency)] * procs)
            results[scenario[0]]["throughput"] = _summary([x for r in runs for x in r], seconds)
        one, thr = results[scenario[0]]["latency"], results[scenario[0]]["throughput"]
        print(
            f"{scenario[0]:34s} p50 {one['p50']:8.2f} ms  p95 {one['p95']:8.2f}  "
            f"p99 {one['p99']:8.2f}  | {thr['rps']:8.0f} calls/s (p50 {thr['p50']:.2f} ms)",
            flush=True,
        )
    return results


# -- search scenarios -------------------------------------------------------------------

# (label, term or None for the rare phone number, exact count?)
SEARCHES: list[tuple[str, str | None, bool]] = [
    ("early (brown)", "brown", False),
    ("late, clustered (smith)", "smith", False),
    ("last, clustered (tanaka)", "tanaka", False),
    ("rare (one phone number)", None, False),
    ("common (example.com, every client)", "example.com", False),
    ("late + exact count (smith)", "smith", True),
]
EXACT_COUNT_CAP = 10_000  # the server's default (Settings.exact_count_cap)


def _seeds_search(org: str, term: str) -> list[tuple[str, list[Any]]]:
    """The source documents' search: ILIKE on each column, OFFSET page + COUNT(*)."""
    where = (
        "WHERE organization_id = $1 AND (given_name ILIKE $2 OR family_name ILIKE $2 "
        "OR email ILIKE $2 OR phone ILIKE $2)"
    )
    pattern = f"%{term}%"
    return [
        (
            f"SELECT {COLUMNS} FROM clients {where} "
            "ORDER BY family_name, given_name, id OFFSET 0 LIMIT $3",
            [org, pattern, PAGE],
        ),
        (f"SELECT count(*) FROM clients {where}", [org, pattern]),
    ]


def search_scenarios(
    target: str, dsn: str, org: str, clients: int
) -> tuple[list[Scenario], list[tuple[str, str, int]]]:
    """gRPC, seeds and raw scenarios per search; and (label, term, matches) rows."""
    from booking.v1 import clients_pb2, common_pb2

    from server.paging import PageRequest
    from server.queries._listing import count_sql, page_sql
    from server.queries.clients import CLIENTS, ClientFilter, build_list_clients_query
    from server.text import fold

    async def matches_of(term: str) -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM clients WHERE organization_id = $1 "
                    "AND search_text LIKE $2",
                    org,
                    f"%{fold(term)}%",
                )
            )
        finally:
            await conn.close()

    scenarios: list[Scenario] = []
    rows: list[tuple[str, str, int]] = []
    for label, given_term, exact in SEARCHES:
        term = given_term or f"{clients // 2:08d}"  # the middle client's phone number
        matches = asyncio.run(matches_of(term))
        rows.append((label, term, matches))
        mode = common_pb2.COUNT_MODE_EXACT if exact else common_pb2.COUNT_MODE_NONE
        request = clients_pb2.ListClientsRequest(
            organization_id=org, page_size=PAGE, query=term, count_mode=mode
        )
        flt = ClientFilter(query=fold(term))
        query = build_list_clients_query(org, flt, CLIENTS.orders["name"])
        raw = [page_sql(query, PageRequest(size=PAGE, number=1, after=None, offset=0))]
        if exact:
            raw.append(count_sql(query, EXACT_COUNT_CAP))
        expected = min(PAGE, matches)
        scenarios += [
            (f"grpc search {label}", "grpc", (target, request.SerializeToString(), expected)),
            (f"seeds search {label}", "sql", (dsn, _seeds_search(org, term))),
            (f"raw search {label}", "sql", (dsn, raw)),
        ]
    return scenarios, rows


def search_report(
    results: dict[str, dict[str, dict[str, float]]], rows: list[tuple[str, str, int]]
) -> list[str]:
    lines = [
        "",
        f"## Search (ListClients query, page 1 of {PAGE}, order by name)",
        "",
        "p50 / p95 ms with 1 call in flight; calls/s with all callers in flight. "
        "seeds = ILIKE on the columns + OFFSET + COUNT(*); raw = the server's own statement(s).",
        "",
        "| search | term | matches | grpc p50 | grpc p95 | grpc calls/s | seeds p50 | seeds p95 "
        "| seeds calls/s | raw p50 | raw p95 | raw calls/s | seeds / grpc (p50) "
        "| grpc / raw (p50) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, term, matches in rows:
        g = results[f"grpc search {label}"]
        s = results[f"seeds search {label}"]
        r = results[f"raw search {label}"]
        gl, sl, rl = g["latency"], s["latency"], r["latency"]
        lines.append(
            f"| {label} | `{term}` | {matches:,} | {gl['p50']:.2f} | {gl['p95']:.2f} | "
            f"{g['throughput']['rps']:.0f} | {sl['p50']:.2f} | {sl['p95']:.2f} | "
            f"{s['throughput']['rps']:.0f} | {rl['p50']:.2f} | {rl['p95']:.2f} | "
            f"{r['throughput']['rps']:.0f} | {sl['p50'] / gl['p50']:.1f}x | "
            f"{gl['p50'] / rl['p50']:.2f}x |"
        )
    return lines


# -- setup ------------------------------------------------------------------------------


@contextlib.contextmanager
def database(
    url: str | None, data_dir: Path = RESULTS / "pgdata", name: str = "bench"
) -> Iterator[str]:
    """``url``, else database ``name`` (created when absent) of an embedded
    PostgreSQL in ``data_dir``, kept between runs."""
    if url:
        yield url
        return
    from server.db.embedded import EmbeddedPostgres

    pg = EmbeddedPostgres(data_dir)
    root = pg.start()
    try:

        async def ensure() -> None:
            conn = await asyncpg.connect(to_asyncpg_dsn(root))
            try:
                if not await conn.fetchval("SELECT true FROM pg_database WHERE datname=$1", name):
                    await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()

        asyncio.run(ensure())
        yield pg.url(name)
    finally:
        pg.stop()


@contextlib.contextmanager
def server_process(
    url: str, workers: int = 1, *, root: Path = ROOT, probe: bytes | None = None
) -> Iterator[str]:
    """A server process from the checkout at ``root``; ready when health says
    SERVING, or (``probe``: a serialized ListClientsRequest) when ListClients
    answers: an older checkout's health waits for its own schema head."""
    port = _free_port()
    env = {**os.environ, "BOOKING_ENV": "dev", "BOOKING_LOG_LEVEL": "WARNING"}
    if root != ROOT:
        # The other checkout's packages first (the editable install's finder
        # comes after sys.path), and its migrations are not ours to run.
        env["PYTHONPATH"] = os.pathsep.join((str(root), str(root / "clients")))
        env["BOOKING_MIGRATE_ON_START"] = "false"
        env["BOOKING_MIGRATIONS_DIR"] = str(root / "alembic")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "server", "--database-url", url),
            *("serve", "--port", str(port), "--workers", str(workers)),
        ],
        env=env,
        cwd=root,
    )
    target = f"127.0.0.1:{port}"
    try:
        import grpc
        from booking.v1 import clients_pb2, clients_pb2_grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + 60
        with grpc.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            list_clients = clients_pb2_grpc.ClientServiceStub(channel).ListClients
            while True:
                try:
                    if probe is not None:
                        list_clients(clients_pb2.ListClientsRequest.FromString(probe), timeout=5)
                        break
                    if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                        break
                except grpc.RpcError:
                    pass
                if proc.poll() is not None:
                    raise RuntimeError(f"the server from {root} exited ({proc.returncode})")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the server from {root} did not become ready")
                time.sleep(0.2)
        yield target
    finally:
        proc.terminate()
        proc.wait(30)


@contextlib.contextmanager
def baseline_checkout(ref: str | None) -> Iterator[Path | None]:
    """A temporary git worktree of ``ref`` (removed afterwards), or None."""
    if not ref:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="booking-baseline-") as tmp:
        path = Path(tmp) / "tree"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), ref],
            check=True,
            capture_output=True,
        )
        try:
            yield path
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)],
                check=False,
                capture_output=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url")
    parser.add_argument("--clients", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1, help="server processes (serve --workers)")
    parser.add_argument(
        "--rounds", type=int, default=5, help="latency: scenarios take turns in this many rounds"
    )
    parser.add_argument(
        "--baseline",
        metavar="GIT_REF",
        help="also serve ListClients from this commit's server (a git worktree) on the same "
        "database, side by side in the same run (e.g. to show a change costs nothing)",
    )
    parser.add_argument(
        "--no-search", action="store_true", help="skip the search scenarios (the slow part)"
    )
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)

    from booking.v1 import clients_pb2

    from bench.generate import generate
    from server.config import DEV_PAGE_TOKEN_SECRET
    from server.db.migrate import upgrade
    from server.paging import PageTokenCodec

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
        # Bound the way the server binds it (its own ListSpec computes the scope).
        from server.handlers.clients import LIST
        from server.queries.clients import CLIENTS, ClientFilter

        scope = LIST.scope(org, ClientFilter(), CLIENTS.orders["name"])
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

        # The same pages from an older server, if asked: its scope is what that
        # server computed (ListClients with no filters, order by name).
        from server.paging import request_scope

        old_scope = request_scope("ListClients", org, None, None, None, "", "name", False)
        old_token = PageTokenCodec(DEV_PAGE_TOKEN_SECRET).encode(
            old_scope, DEEP_PAGE, (name_key, last_id)
        )
        old_deep = clients_pb2.ListClientsRequest(
            organization_id=org, page_size=PAGE, page_token=old_token
        )

        with (
            server_process(url, args.workers) as target,
            baseline_checkout(args.baseline) as baseline_root,
            contextlib.ExitStack() as stack,
        ):
            import grpc
            from booking.v1 import clients_pb2_grpc

            with grpc.insecure_channel(target) as channel:
                got = clients_pb2_grpc.ClientServiceStub(channel).ListClients(deep)
                assert got.page_info.page == DEEP_PAGE and got.clients[0].id == expected_first, (
                    "the deep token did not land on page 10,000"
                )
            page1s = page1.SerializeToString()
            scenarios: list[Scenario] = [
                ("grpc page 1", "grpc", (target, page1s)),
                ("grpc page 10,000 (token)", "grpc", (target, deep.SerializeToString())),
                ("seeds page 1 (OFFSET+COUNT)", "sql", (dsn, seeds1)),
                ("seeds page 10,000 (OFFSET+COUNT)", "sql", (dsn, seeds_deep)),
                ("raw keyset page 1", "sql", (dsn, raw1)),
                ("raw keyset page 10,000", "sql", (dsn, raw_deep)),
                ("grpc floor (health Check, no SQL)", "health", (target,)),
            ]
            if baseline_root is not None:
                base = stack.enter_context(
                    server_process(
                        url, args.workers, root=baseline_root, probe=page1.SerializeToString()
                    )
                )
                with grpc.insecure_channel(base) as channel:
                    got = clients_pb2_grpc.ClientServiceStub(channel).ListClients(old_deep)
                    assert got.clients[0].id == expected_first, "baseline deep token missed"
                # Interleaved with ours, so that the noise falls on both alike.
                scenarios[2:2] = [
                    (f"baseline {args.baseline} page 1", "grpc", (base, page1s)),
                    (
                        f"baseline {args.baseline} page 10,000 (token)",
                        "grpc",
                        (base, old_deep.SerializeToString()),
                    ),
                ]
            search_rows: list[tuple[str, str, int]] = []
            if not args.no_search:
                searches, search_rows = search_scenarios(target, dsn, org, args.clients)
                scenarios += searches
            if shutil.which("h2load"):  # Debian's nghttp2-client
                list_path = "/booking.v1.ClientService/ListClients"
                health_path = "/grpc.health.v1.Health/Check"
                scenarios += [
                    ("h2load page 1 (C client)", "h2load", (target, list_path, page1s)),
                    ("h2load floor (C client, health)", "h2load", (target, health_path, b"")),
                ]
            results = measure(scenarios, args.seconds, args.rounds, args.procs, args.concurrency)

    g1, gd = results["grpc page 1"]["latency"], results["grpc page 10,000 (token)"]["latency"]
    s1 = results["seeds page 1 (OFFSET+COUNT)"]["latency"]
    sd = results["seeds page 10,000 (OFFSET+COUNT)"]["latency"]
    r1, rd = results["raw keyset page 1"]["latency"], results["raw keyset page 10,000"]["latency"]
    floor = results["grpc floor (health Check, no SQL)"]["latency"]["p50"]
    over1, overd = g1["p50"] - r1["p50"], gd["p50"] - rd["p50"]
    lines = [
        f"# bench: ListClients at {args.clients:,} clients, page size {PAGE} (pages and search)",
        "",
        f"`python -m bench.run --clients {args.clients} --seconds {args.seconds:g} "
        f"--rounds {args.rounds} --workers {args.workers}"
        f"{' --baseline ' + args.baseline if args.baseline else ''}"
        f"{' --no-search' if args.no_search else ''}` "
        f"({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, shared with the server)",
        "",
        *results_table(results, args.procs, args.concurrency),
    ]
    lines += [
        "",
        f"- page 10,000 / page 1 (grpc, p50): {gd['p50'] / g1['p50']:.2f}x",
        f"- seeds' page 10,000 / ours page 10,000 (p50): {sd['p50'] / gd['p50']:.1f}x",
        f"- seeds' page 1 / ours page 1 (p50): {s1['p50'] / g1['p50']:.1f}x",
        f"- server / raw query, page 1 (p50): {g1['p50'] / r1['p50']:.2f}x; "
        f"page 10,000: {gd['p50'] / rd['p50']:.2f}x",
        f"- server overhead (grpc - raw, p50): page 1 {over1:.2f} ms = "
        f"{over1 / r1['p50']:.1f}x the raw query; page 10,000 {overd:.2f} ms = "
        f"{overd / rd['p50']:.1f}x. Of it, {floor:.2f} ms is the gRPC floor (a Python "
        f"client's call to a Python grpc.aio server doing nothing); the service's own "
        f"work (pool, validation, token, encoding 50 clients) is {over1 - floor:.2f} ms "
        f"= {(over1 - floor) / r1['p50']:.1f}x the raw query on page 1",
    ]
    h1 = results.get("h2load page 1 (C client)")
    hf = results.get("h2load floor (C client, health)")
    if h1 and hf:
        h1p, hfp = h1["latency"]["p50"], hf["latency"]["p50"]
        lines.append(
            f"- from a C client (h2load): page 1 p50 {h1p:.2f} ms = "
            f"{h1p / r1['p50']:.2f}x the raw query; the server's gRPC floor alone "
            f"(health Check) is {hfp:.2f} ms = {hfp / r1['p50']:.1f}x the raw query"
        )
    if args.baseline:
        b1 = results[f"baseline {args.baseline} page 1"]
        bd = results[f"baseline {args.baseline} page 10,000 (token)"]
        t1 = results["grpc page 1"]["throughput"]["rps"]
        td = results["grpc page 10,000 (token)"]["throughput"]["rps"]
        lines.append(
            f"- ours / baseline {args.baseline} (same run): p50 page 1 "
            f"{g1['p50'] / b1['latency']['p50']:.2f}x, page 10,000 "
            f"{gd['p50'] / bd['latency']['p50']:.2f}x; throughput page 1 "
            f"{t1 / b1['throughput']['rps']:.2f}x, page 10,000 "
            f"{td / bd['throughput']['rps']:.2f}x (1.00x = the same)"
        )
    if search_rows:
        lines += search_report(results, search_rows)
    report = "\n".join(lines)
    (RESULTS / "latest.md").write_text(report + "\n")
    print("\n" + report)


if __name__ == "__main__":
    main()
