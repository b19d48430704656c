"""Ids are UUIDs in the 8-4-4-4-12 form only (any letter case), and every page
token the server issues is one it accepts back, whatever the names sort by."""

from __future__ import annotations

import grpc
import pytest
from booking.v1 import clients_pb2, resources_pb2

from server.ids import is_uuid, uuid7
from tests.conftest import Stubs, violated_fields

GOOD = uuid7()


@pytest.mark.parametrize(
    "value",
    [
        GOOD.replace("-", "") + "----",  # dashes moved: uuid.UUID takes it
        "{" + GOOD[:-2] + "}",
        "urn:uuid:" + GOOD[:27],
        GOOD[:8] + "-" + GOOD[9:13] + GOOD[14:18] + "-" + GOOD[18:],
        GOOD[:-1] + "g",
        " " + GOOD[1:],
        GOOD + "\n",  # a regex "$" also matches before a final newline
    ],
)
async def test_only_the_canonical_uuid_form_is_an_id(stubs: Stubs, org: str, value: str) -> None:
    assert len(value) in (36, 37, 38, 45) and not is_uuid(value)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.clients.GetClient(
            clients_pb2.GetClientRequest(organization_id=org, client_id=value)
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(caught.value) == {"client_id"}


def test_either_letter_case_is_an_id() -> None:
    assert is_uuid(GOOD) and is_uuid(GOOD.upper())


async def test_tokens_of_names_that_fold_longer_are_accepted(stubs: Stubs, org: str) -> None:
    """Folding expands text ("ﬃ" -> "ffi", U+FDFA -> 18 letters): a token's name
    key can be far longer than any name field, and must still come back."""
    for given, family in (("\ufb03" * 200, "\ufb03" * 199 + "0"), ("\ufdfa" * 200, "\ufdfa" * 200)):
        await stubs.clients.CreateClient(
            clients_pb2.CreateClientRequest(
                organization_id=org,
                client=resources_pb2.Client(given_name=given, family_name=family),
            )
        )
    seen, token = 0, ""
    while True:
        page = await stubs.clients.ListClients(
            clients_pb2.ListClientsRequest(organization_id=org, page_size=1, page_token=token)
        )
        seen += len(page.clients)
        token = page.next_page_token
        if not token:
            break
    assert seen == 2
