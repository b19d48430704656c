"""Callers that are not Python: buf curl over reflection v1, and the error details
decoded with nothing but the protos in protos/ (no googleapis-common-protos)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from booking.v1 import clients_pb2, resources_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory
from google.rpc import code_pb2, error_details_pb2, status_pb2

from server.reflection import V1_FILE, v1_file_descriptor_proto
from server.testing import RunningServer
from tests.conftest import Stubs

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
RPC_PROTOS = ("google/rpc/status.proto", "google/rpc/error_details.proto", "google/rpc/code.proto")


def _tool(name: str) -> str:
    path = shutil.which(name) or str(Path(sys.executable).parent / name)
    assert Path(path).exists(), f"{name} is not installed (see pyproject's dev extras)"
    return path


@dataclass
class Run:
    code: int
    out: str
    err: str


async def _run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Run:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, env=env
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


async def _buf_curl(url: str, *args: str, reflect: str = "grpc-v1") -> Run:
    """buf curl over the gRPC protocol, the schema from the server's reflection only
    (grpc-v1 by default: no fallback to v1alpha, v1 must answer)."""
    return await _run(
        _tool("buf"),
        *("curl", "--protocol", "grpc", "--http2-prior-knowledge"),
        *("--reflect-protocol", reflect),
        *args,
        url,
    )


class VendoredRpc:
    """google.rpc messages built from protos/google/rpc/*.proto by protoc, in a pool of
    their own: what a caller in another language has, nothing from googleapis-common-
    protos (whose google.rpc classes this process has loaded too)."""

    def __init__(self, tmp: Path) -> None:
        from grpc_tools import protoc  # type: ignore[import-untyped]

        out = tmp / "rpc.binpb"
        well_known = Path(protoc.__file__).parent / "_proto"  # google/protobuf/*.proto
        rc = protoc.main(
            [
                "protoc",
                f"-I{PROTOS}",
                f"-I{well_known}",
                "--include_imports",
                f"--descriptor_set_out={out}",
                *RPC_PROTOS,
            ]
        )
        assert rc == 0, "protoc could not compile protos/google/rpc"
        self.files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
        self.pool = descriptor_pool.DescriptorPool()
        for file in self.files.file:
            self.pool.Add(file)

    def cls(self, full_name: str) -> type[message.Message]:
        return message_factory.GetMessageClass(self.pool.FindMessageTypeByName(full_name))

    def decode_status(self, raw: bytes) -> tuple[message.Message, dict[str, Any]]:
        """A google.rpc.Status and its details by type name (type URL's last part)."""
        status = self.cls("google.rpc.Status").FromString(raw)
        details: dict[str, Any] = {}
        for any_msg in status.details:  # type: ignore[attr-defined]
            name = any_msg.type_url.rsplit("/", 1)[-1]
            details[name] = self.cls(name).FromString(any_msg.value)
        return status, details


@pytest.fixture
def vendored(tmp_path: Path) -> VendoredRpc:
    return VendoredRpc(tmp_path)


def _b64(text: str) -> bytes:
    """Base64 as HTTP tools print it (standard alphabet, padding often dropped)."""
    return base64.b64decode(text + "=" * (-len(text) % 4))


async def _create_client(stubs: Stubs, org: str) -> str:
    response = await stubs.clients.CreateClient(
        clients_pb2.CreateClientRequest(
            organization_id=org,
            client=resources_pb2.Client(given_name="Grace", family_name="Hopper"),
        )
    )
    return response.client.id


async def test_buf_curl_lists_and_calls_through_reflection_v1(
    booking_server: RunningServer, stubs: Stubs, org: str, vendored: VendoredRpc
) -> None:
    await _create_client(stubs, org)
    target = booking_server.target

    listed = await _buf_curl(f"http://{target}", "--list-services")
    assert listed.code == 0, listed.err
    assert {
        "booking.v1.ClientService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= set(listed.out.split())

    url = f"http://{target}/booking.v1.ClientService/ListClients"
    ok = await _buf_curl(
        url,
        "-d",
        json.dumps({"organization_id": org, "page_size": 10, "count_mode": "COUNT_MODE_EXACT"}),
    )
    assert ok.code == 0, ok.err
    body = json.loads(ok.out)
    assert [c["familyName"] for c in body["clients"]] == ["Hopper"]
    assert body["pageInfo"]["countKind"] == "COUNT_KIND_EXACT"

    bad = await _buf_curl(url, "-d", json.dumps({"organization_id": org, "page_size": -1}))
    assert bad.code != 0 and bad.out == ""
    # buf curl prints the error as Connect's JSON: details as type + base64 value.
    error = json.loads(bad.err)
    assert error["code"] == "invalid_argument"
    assert "page_size" in error["message"]
    types = [d["type"] for d in error["details"]]
    assert types == ["google.rpc.ErrorInfo", "google.rpc.BadRequest"]
    info, bad_request = (
        vendored.cls(d["type"]).FromString(_b64(d["value"])) for d in error["details"]
    )
    assert (info.reason, info.domain) == ("INVALID_ARGUMENT", "booking.v1")  # type: ignore[attr-defined]
    assert [
        (v.field, v.reason)
        for v in bad_request.field_violations  # type: ignore[attr-defined]
    ] == [("page_size", "OUT_OF_RANGE")]


async def test_buf_curl_describes_reflection_v1_itself(booking_server: RunningServer) -> None:
    """The v1 service's own descriptor is served (v1 lists and resolves v1)."""
    methods = await _buf_curl(f"http://{booking_server.target}", "--list-methods")
    assert methods.code == 0, methods.err
    assert "grpc.reflection.v1.ServerReflection/ServerReflectionInfo" in methods.out.split()
    assert "booking.v1.ClientService/ListClients" in methods.out.split()


async def test_grpc_status_details_bin_decodes_with_vendored_protos(
    booking_server: RunningServer, stubs: Stubs, org: str, vendored: VendoredRpc
) -> None:
    """The raw trailer (binary google.rpc.Status) and its base64 form as HTTP tools show
    it, decoded with the protos in protos/google/rpc only."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.clients.ListClients(
            clients_pb2.ListClientsRequest(organization_id="not-a-uuid", page_size=-1)
        )
    raw = dict(caught.value.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert isinstance(raw, bytes)
    status, details = vendored.decode_status(raw)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]  # type: ignore[attr-defined]
    assert set(details) == {"google.rpc.ErrorInfo", "google.rpc.BadRequest"}
    assert details["google.rpc.ErrorInfo"].reason == "INVALID_ARGUMENT"
    assert details["google.rpc.ErrorInfo"].domain == "booking.v1"
    assert {v.field for v in details["google.rpc.BadRequest"].field_violations} == {
        "organization_id",
        "page_size",
    }

    missing = str(uuid.uuid4())
    with pytest.raises(grpc.aio.AioRpcError) as not_found:
        await stubs.clients.GetClient(
            clients_pb2.GetClientRequest(organization_id=org, client_id=missing)
        )
    raw = dict(not_found.value.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert isinstance(raw, bytes)
    status, details = vendored.decode_status(raw)
    assert status.code == code_pb2.NOT_FOUND  # type: ignore[attr-defined]
    assert details["google.rpc.ErrorInfo"].reason == "CLIENT_NOT_FOUND"
    assert details["google.rpc.ResourceInfo"].resource_name == missing

    # The same trailer as an HTTP tool prints it: base64 in the response headers.
    verbose = await _buf_curl(
        f"http://{booking_server.target}/booking.v1.ClientService/GetClient",
        "-v",
        "-d",
        json.dumps({"organization_id": org, "client_id": missing}),
        reflect="grpc-v1alpha",
    )
    assert verbose.code != 0
    header = "grpc-status-details-bin: "
    (line,) = (ln for ln in verbose.err.splitlines() if header in ln.lower())
    encoded = line[line.lower().index(header) + len(header) :]
    status, details = vendored.decode_status(_b64(encoded))
    assert status.code == code_pb2.NOT_FOUND  # type: ignore[attr-defined]
    assert details["google.rpc.ResourceInfo"].resource_name == missing


def test_vendored_rpc_protos_match_googleapis_common_protos(vendored: VendoredRpc) -> None:
    """protos/google/rpc are copies of googleapis: the same messages, fields and enums
    as the googleapis-common-protos the server encodes with."""

    def clear_json_names(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
        for msg in messages:  # protoc fills json_name, CopyToProto leaves it out
            for field in msg.field:
                field.ClearField("json_name")
            clear_json_names(msg.nested_type)

    def shape(file: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
        out = descriptor_pb2.FileDescriptorProto()
        out.CopyFrom(file)
        out.ClearField("source_code_info")
        clear_json_names(out.message_type)
        return out

    ours = {f.name: shape(f) for f in vendored.files.file}
    for module in (status_pb2, error_details_pb2, code_pb2):
        theirs = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(theirs)
        assert ours[theirs.name] == shape(theirs), theirs.name


def test_v1_descriptor_is_v1alpha_renamed() -> None:
    """The derived v1 file: same messages and field numbers, v1 names only."""
    from grpc_reflection.v1alpha import reflection_pb2

    v1 = v1_file_descriptor_proto()
    assert (v1.name, v1.package) == (V1_FILE, "grpc.reflection.v1")
    alpha = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(alpha)
    assert [(m.name, [(f.name, f.number, f.type) for f in m.field]) for m in v1.message_type] == [
        (m.name, [(f.name, f.number, f.type) for f in m.field]) for m in alpha.message_type
    ]
    assert "v1alpha" not in v1.SerializeToString().decode("latin-1")
    served = descriptor_pool.Default().FindServiceByName("grpc.reflection.v1.ServerReflection")
    assert served.file.name == V1_FILE


# The README's examples ("Callers in other languages"): the blocks below until the
# README has that section, then the README's own blocks, run as written (only the
# address and the buf path differ).
README_SECTION = "## Callers in other languages"


def _example(fence: str, fallback: str) -> str:
    readme = (ROOT / "README.md").read_text()
    if README_SECTION not in readme:
        return fallback
    section = readme[readme.index(README_SECTION) :]
    end = section.find("\n## ")
    section = section if end < 0 else section[:end]
    start = section.index(f"```{fence}\n") + len(f"```{fence}\n")
    return section[start : section.index("```", start)]


SH_EXAMPLE = r"""BUF=.venv/bin/buf
ADDR=localhost:50051
ORG=${ORG:?an organization id, e.g. from the grpcurl example}
# The server speaks gRPC, not Connect: --protocol grpc. The schema comes from reflection.
$BUF curl --protocol grpc --http2-prior-knowledge \
  -d "{\"organization_id\":\"$ORG\",\"page_size\":2}" \
  http://$ADDR/booking.v1.ClientService/ListClients
# Bad input: buf curl exits non-zero and prints each detail as {"type", "value": base64}
$BUF curl --protocol grpc --http2-prior-knowledge \
  -d "{\"organization_id\":\"$ORG\",\"page_size\":-1}" \
  http://$ADDR/booking.v1.ClientService/ListClients
# The raw trailer: -v prints Grpc-Status-Details-Bin, an unpadded base64 google.rpc.Status;
# buf convert decodes it, details included, with the protos in protos/.
B64=$($BUF curl -v --protocol grpc --http2-prior-knowledge \
  -d "{\"organization_id\":\"$ORG\",\"page_size\":-1}" \
  http://$ADDR/booking.v1.ClientService/ListClients 2>&1 |
  sed -n 's/.*Grpc-Status-Details-Bin: //p')
while [ $(( ${#B64} % 4 )) -ne 0 ]; do B64="$B64="; done
printf '%s' "$B64" | base64 -d |
  $BUF convert protos --type google.rpc.Status --from -#format=binpb --to -#format=json
"""


async def test_buf_curl_example_runs_as_written(
    booking_server: RunningServer, stubs: Stubs, org: str
) -> None:
    await _create_client(stubs, org)
    block = _example("sh", SH_EXAMPLE)
    assert "ADDR=localhost:50051" in block and "BUF=.venv/bin/buf" in block
    script = block.replace("ADDR=localhost:50051", f"ADDR={booking_server.target}").replace(
        "BUF=.venv/bin/buf", f"BUF={_tool('buf')}"
    )
    proc = await asyncio.create_subprocess_exec(
        *("bash", "-u", "-c", script),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env={**os.environ, "ORG": org},
    )
    out = (await proc.communicate())[0].decode()
    assert proc.returncode == 0, out  # the last command, buf convert
    assert '"familyName": "Hopper"' in out, out
    assert '"type": "google.rpc.BadRequest"' in out, out
    decoded = json.loads(out.strip().splitlines()[-1])
    assert decoded["code"] == 3
    assert decoded["details"] == [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "INVALID_ARGUMENT",
            "domain": "booking.v1",
        },
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [
                {
                    "field": "page_size",
                    "description": "must not be negative",
                    "reason": "OUT_OF_RANGE",
                }
            ],
        },
    ]


# Node (@grpc/grpc-js): run when node and the npm packages are installed (NODE_PATH);
# the tests never install them.
NODE_SNIPPET = r"""
// Run from the repository root: ADDR=localhost:50051 ORG=<organization id> node errors.js
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");

// Stubs: proto-loader reads protos/ (booking/v1, google/type; google/protobuf is built in).
const def = protoLoader.loadSync("booking/v1/clients.proto", { includeDirs: ["protos"] });
const { ClientService } = grpc.loadPackageDefinition(def).booking.v1;

// Error details: protobufjs reads protos/google/rpc/*.proto.
const rpc = new protobuf.Root();
rpc.resolvePath = (_origin, target) =>
  target.startsWith("google/protobuf/") ? target : `protos/${target}`;
rpc.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"]);
const Status = rpc.lookupType("google.rpc.Status");

const client = new ClientService(process.env.ADDR, grpc.credentials.createInsecure());
client.listClients({ organizationId: process.env.ORG, pageSize: -1 }, (err) => {
  // grpc-status-details-bin holds a serialized google.rpc.Status (grpc-js has
  // decoded the header's base64 already).
  const [raw] = err.metadata.get("grpc-status-details-bin");
  const status = Status.decode(raw);
  console.log(err.code, status.message);
  for (const any of status.details) {
    const type = rpc.lookupType(any.type_url.split("/").pop());
    console.log(any.type_url, JSON.stringify(type.toObject(type.decode(any.value))));
  }
  client.close();
});
"""


async def test_node_grpc_js_decodes_error_details(
    booking_server: RunningServer, org: str, tmp_path: Path
) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    env = {**os.environ, "ADDR": booking_server.target, "ORG": org}
    probe = await _run(
        node,
        "-e",
        'for (const m of ["@grpc/grpc-js", "@grpc/proto-loader", "protobufjs"]) require.resolve(m)',
        cwd=ROOT,
        env=env,
    )
    if probe.code != 0:
        pytest.skip("@grpc/grpc-js, @grpc/proto-loader, protobufjs not installed (NODE_PATH)")
    script = tmp_path / "errors.js"
    script.write_text(_example("js", NODE_SNIPPET))
    run = await _run(node, str(script), cwd=ROOT, env=env)
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0] == "3 the request has invalid fields: page_size"
    info = 'google.rpc.ErrorInfo {"reason":"INVALID_ARGUMENT","domain":"booking.v1"}'
    assert lines[1] == f"type.googleapis.com/{info}"
    assert lines[2].startswith("type.googleapis.com/google.rpc.BadRequest ")
    violations = json.loads(lines[2].split(" ", 1)[1])["fieldViolations"]
    assert [(v["field"], v["reason"]) for v in violations] == [("page_size", "OUT_OF_RANGE")]
