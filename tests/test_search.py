# ruff: noqa: RUF001  (confusable letters are what these tests are about)
"""ListClients search and Unicode: one fold (server.text) for stored keys and
search terms, so that every stored name is found by any case or normalisation
variant of a piece of it, on every PostgreSQL version; prefix ranges whose
upper bound is right for every code point; the migration that backfills the
folded keys of existing rows."""

from __future__ import annotations

import asyncio
import unicodedata
import uuid
from collections.abc import Callable

import asyncpg
import grpc
import pytest
from booking.v1 import clients_pb2, resources_pb2
from google.protobuf import field_mask_pb2

from server.db.engine import to_asyncpg_dsn
from server.testing import create_database, drop_database, test_settings
from tests.conftest import Stubs

LIST = clients_pb2.ListClientsRequest

# (given, family, email): Turkish, Greek (final sigma, breathings, iota
# subscript), German, ligatures, full-width Latin, Japanese (half-width kana),
# Arabic (presentation forms), Devanagari (a composition exclusion), emoji
# (ZWJ sequence), precomposed and combining sequences, titlecase digraphs.
NAMES = [
    ("İsmail", "Yılmaz", "İSMAİL.YILMAZ@ÖRNEK.COM.TR"),
    ("Işıl", "Öztürk", None),
    ("Ὀδυσσεύς", "Παπαδόπουλος", None),
    ("Σίσυφος", "ᾈθηναῖος", None),
    ("Jörg", "Weiß", "Jörg.Weiß@Example.DE"),
    ("ﬁona", "Straßburger", None),
    ("Ｔａｒｏ", "ＪＯＨＮＳＯＮ", None),
    ("太郎", "田中", None),
    ("ｶﾀｶﾅ", "山田", None),
    ("محمد", "الحسيني", None),
    ("ﻣﺤﻤﺪ", "ﺍﻟﻌﻠﻲ", None),
    ("देवनागरी", "क़ुरैशी", None),
    ("😀 Smile", "👩\u200d💻 Coder", None),
    ("Jose\u0301", "Nguyễn", None),
    ("Zoë", "Bronte\u0308", None),
    ("Ǆemal", "ǅukić", None),
]

VARIANTS: list[Callable[[str], str]] = [
    lambda s: s,
    str.upper,
    str.lower,
    str.casefold,
    str.swapcase,
    str.title,
    lambda s: unicodedata.normalize("NFC", s),
    lambda s: unicodedata.normalize("NFD", s),
    lambda s: unicodedata.normalize("NFKC", s),
    lambda s: unicodedata.normalize("NFKD", s.upper()),
    lambda s: unicodedata.normalize("NFC", s.upper()),
]


def _units(text: str) -> list[str]:
    """Characters with their combining marks, ZWJ sequences and variation
    selectors kept together (a piece of a name never splits one)."""
    out: list[str] = []
    for ch in unicodedata.normalize("NFC", text):
        joined = ch in "\u200d\ufe0f" or (out and out[-1].endswith("\u200d"))
        if out and (unicodedata.category(ch).startswith("M") or joined):
            out[-1] += ch
        else:
            out.append(ch)
    return out


def _pieces(text: str) -> set[str]:
    """Every piece of ``text`` of 3+ characters (substring search), but those
    with white space at an end (a query is stripped: it would be shorter)."""
    units = _units(text)
    pieces = {"".join(units[i:j]) for i in range(len(units)) for j in range(i + 3, len(units) + 1)}
    return {p for p in pieces if p == p.strip()}


def _prefixes(text: str) -> set[str]:
    """1-2 character prefixes of ``text`` (a short query is a name prefix)."""
    units = _units(text)
    return {"".join(units[:1]), "".join(units[:2])}


async def _create(stubs: Stubs, org: str, given: str, family: str, email: str | None) -> str:
    client = resources_pb2.Client(given_name=given, family_name=family, email=email or "")
    response = await stubs.clients.CreateClient(
        clients_pb2.CreateClientRequest(organization_id=org, client=client)
    )
    return response.client.id


async def _found(stubs: Stubs, org: str, query: str) -> set[str]:
    response = await stubs.clients.ListClients(
        LIST(organization_id=org, query=query, page_size=1000)
    )
    assert not response.next_page_token
    return {c.id for c in response.clients}


async def test_every_name_is_found_by_any_variant_of_a_piece_of_it(stubs: Stubs, org: str) -> None:
    ids = [await _create(stubs, org, g, f, e) for g, f, e in NAMES]
    queries: list[tuple[str, str]] = []  # (query, client id)
    for client_id, (given, family, email) in zip(ids, NAMES, strict=True):
        pieces = _pieces(given) | _pieces(family) | _pieces(email or "")
        pieces |= {f"{given} {family}"}
        for piece in pieces:
            queries += [(v(piece), client_id) for v in VARIANTS]
        # Short queries match the start of the name order's key (family name first).
        for prefix in _prefixes(family):
            queries += [(v(prefix), client_id) for v in VARIANTS]
    distinct = sorted(set(queries))
    assert len(distinct) > 1000
    missed: list[tuple[str, str]] = []
    for start in range(0, len(distinct), 25):
        batch = distinct[start : start + 25]
        results = await asyncio.gather(*(_found(stubs, org, q) for q, _ in batch))
        missed += [(q, cid) for (q, cid), got in zip(batch, results, strict=True) if cid not in got]
    assert missed == [], f"{len(missed)} of {len(distinct)} missed, e.g. {missed[:10]!a}"


async def test_a_partial_update_refolds_only_what_it_writes(stubs: Stubs, org: str) -> None:
    client_id = await _create(stubs, org, "Işıl", "Öztürk", "isil@example.com")
    got = await stubs.clients.GetClient(
        clients_pb2.GetClientRequest(organization_id=org, client_id=client_id)
    )
    await stubs.clients.UpdateClient(
        clients_pb2.UpdateClientRequest(
            organization_id=org,
            client=resources_pb2.Client(id=client_id, family_name="STRAẞE", etag=got.client.etag),
            update_mask=field_mask_pb2.FieldMask(paths=["family_name"]),
        )
    )
    assert await _found(stubs, org, "strasse") == {client_id}
    assert await _found(stubs, org, "ÖZTÜRK") == set()
    assert await _found(stubs, org, "IŞIL") == {client_id}  # the given name's key is kept
    assert await _found(stubs, org, "ISIL@EXAMPLE") == {client_id}
    assert await _found(stubs, org, "st") == {client_id}  # name_key follows the family key


# Family names at the edges of the code space (noncharacters and private use
# are valid text; surrogates are not characters and cannot be sent).
EDGE_FAMILIES = [
    "\ud7ff",
    "\ud7ff\ud7ff",
    "\ue000",
    "\uffff",
    "\U00010000",
    "\U0010ffff",
    "\U0010ffff\U0010ffff",
    "a\U0010ffff",
    "b",
    "a",
    "\U0010fffe",
]
EDGE_QUERIES = [
    "\ud7ff",
    "\ud7ff\ud7ff",
    "\ue000",
    "\uffff",
    "\U0010ffff",
    "\U0010ffff\U0010ffff",
    "a\U0010ffff",
    "\U0010fffe",
    "\U0010fffe\U0010ffff",
]


async def test_prefix_search_is_exact_at_the_edges_of_the_code_space(
    stubs: Stubs, org: str
) -> None:
    ids = {await _create(stubs, org, "x", family, None): family for family in EDGE_FAMILIES}
    for query in EDGE_QUERIES:
        try:
            got = await _found(stubs, org, query)
        except grpc.aio.AioRpcError as e:  # pragma: no cover - the failure being tested
            pytest.fail(f"query {query!r}: {e.code().name} {e.details()}")
        # The name order's key is "<family> <given>": a prefix of it.
        expected = {cid for cid, family in ids.items() if f"{family} x".startswith(query)}
        assert got == expected, query


async def test_migration_0002_backfills_folded_keys_of_existing_rows(root_url: str) -> None:
    from alembic.config import Config  # noqa: F401  (alembic is what runs below)

    from server.db.migrate import downgrade, upgrade
    from server.text import fold

    name = f"booking_test_{uuid.uuid4().hex[:12]}"
    url = await create_database(root_url, name)
    migrations = test_settings().migrations_dir
    try:
        await upgrade(url, migrations, "0001")
        conn = await asyncpg.connect(to_asyncpg_dsn(url))
        try:
            org = str(uuid.uuid4())
            await conn.execute(
                "INSERT INTO organizations (id, name, slug, time_zone) "
                "VALUES ($1, 'O', 'o', 'UTC')",
                org,
            )
            rows = [(org, str(uuid.uuid4()), g, f, e) for g, f, e in NAMES]
            await conn.executemany(
                "INSERT INTO clients (organization_id, id, given_name, family_name, email) "
                "VALUES ($1, $2, $3, $4, $5)",
                rows,
            )
            await conn.close()
            await upgrade(url, migrations)
            conn = await asyncpg.connect(to_asyncpg_dsn(url))
            stored = {
                str(r["id"]): r
                for r in await conn.fetch(
                    "SELECT id, given_key, family_key, email_key, name_key, search_text "
                    "FROM clients"
                )
            }
            for _, cid, given, family, email in rows:
                r = stored[cid]
                assert (r["given_key"], r["family_key"]) == (fold(given), fold(family))
                assert r["email_key"] == (None if email is None else fold(email))
                assert r["name_key"] == f"{fold(family)} {fold(given)}"
                assert r["search_text"] == (
                    f"{fold(given)} {fold(family)} {'' if email is None else fold(email)} "
                )
            await conn.close()
            await downgrade(url, migrations, "0001")
            conn = await asyncpg.connect(to_asyncpg_dsn(url))
            assert await conn.fetchval(
                "SELECT count(*) FROM clients WHERE name_key = lower(family_name || ' ' || "
                "given_name)"
            ) == len(rows)
        finally:
            await conn.close()
    finally:
        await drop_database(root_url, name)


def test_fold_is_one_idempotent_rule() -> None:
    from server.text import fold

    assert fold("  İSTANBUL  ") == fold("istanbul") == fold("i\u0307stanbul") == "istanbul"
    assert fold("YILMAZ") == fold("Yılmaz") == "yilmaz"
    assert fold("ΟΔΥΣΣΕΥΣ") == fold("οδυσσευς") == "οδυσσευσ"
    assert fold("STRASSE") == fold("Straße") == fold("STRAẞE") == "strasse"
    assert fold("ﬁona") == fold("FIONA") == "fiona"
    assert fold("ＪＯＨＮ") == "john"
    assert fold("ｶﾀｶﾅ") == fold("カタカナ")
    assert fold("Jose\u0301") == fold("JOSÉ") == "josé"
    assert fold("Anna \t Maria") == "anna maria"
    # Idempotent on every code point (the stored keys are folds of folds' inputs).
    for cp in range(0x110000):
        if not 0xD800 <= cp < 0xE000:
            once = fold(chr(cp))
            assert fold(once) == once, hex(cp)


def test_successor_skips_surrogates_and_the_last_code_point() -> None:
    from server.text import successor

    assert successor("ab") == "ac"
    assert successor("\ud7ff") == "\ue000"
    assert successor("\uffff") == "\U00010000"
    assert successor("a\U0010ffff") == "b"
    assert successor("a\U0010ffff\U0010ffff") == "b"
    assert successor("\U0010ffff") is None
    assert successor("") is None


@pytest.mark.parametrize("walk_budget", [3, 2000])
async def test_search_pages_are_the_same_in_token_and_page_number_mode(
    stubs: Stubs, org: str, database_url: str, walk_budget: int
) -> None:
    """Both ways a search page is found (the bounded walk, or every match when
    the walk runs dry: a budget of 3 forces it) give the same rows, in token
    mode and at every page number."""
    from server.paging import PageRequest
    from server.queries._listing import page_sql
    from server.queries.clients import CLIENTS, ClientFilter, build_list_clients_query

    for i in range(23):  # matches and non-matches interleaved in name order
        family = f"Smith{i:02d}" if i % 3 else f"Smiht{i:02d}"
        await stubs.clients.CreateClient(
            clients_pb2.CreateClientRequest(
                organization_id=org,
                client=resources_pb2.Client(given_name="Ann", family_name=family),
            )
        )
    order = CLIENTS.orders["name"]
    conn = await asyncpg.connect(to_asyncpg_dsn(database_url))
    try:
        expected = [
            r["id"]
            for r in await conn.fetch(
                "SELECT id::text FROM clients WHERE organization_id = $1 "
                "AND search_text LIKE '%smith%' ORDER BY name_key, id",
                org,
            )
        ]
        assert len(expected) == 15

        async def page(request: PageRequest) -> list[asyncpg.Record]:
            query = build_list_clients_query(org, ClientFilter(query="smith"), order)
            query.walk_budget = walk_budget
            sql, args = page_sql(query, request)
            return list(await conn.fetch(sql, *args))

        walked: list[str] = []
        after = None
        for number in range(1, 10):
            rows = await page(PageRequest(size=4, number=number, after=after, offset=0))
            walked += [str(r["id"]) for r in rows[:4]]
            if len(rows) <= 4:
                break
            after = (rows[3]["name_key"], str(rows[3]["id"]))
        assert walked == expected
        numbered: list[str] = []
        for number in range(1, 6):
            rows = await page(
                PageRequest(size=4, number=number, after=None, offset=(number - 1) * 4)
            )
            numbered += [str(r["id"]) for r in rows[:4]]
            assert (len(rows) > 4) == (number * 4 < len(expected))
        assert numbered == expected
    finally:
        await conn.close()
