"""Server reflection for grpcurl, buf curl and other tools: both protocols.

Callers ask for one of two reflection services, which differ only in name:

- ``grpc.reflection.v1alpha.ServerReflection`` - the one grpcio-reflection serves;
  grpcurl 1.8 asks for it.
- ``grpc.reflection.v1.ServerReflection`` - the stable name. ``buf curl``,
  grpc-go's and grpc-java's newer tools ask for it first (and only some fall back to
  v1alpha on UNIMPLEMENTED).

grpcio-reflection (up to at least 1.85) ships only v1alpha, and neither it nor
grpcio-tools ships a ``grpc/reflection/v1/reflection.proto`` descriptor. The v1
messages are wire-identical to v1alpha's (same messages, field numbers and types; only
the package differs), so:

1. The v1 method is served by the *same* grpcio-reflection servicer, registered a
   second time under the v1 service name with the v1alpha message classes as
   (de)serializers. The bytes on the wire are the same either way.
2. For reflection to list and describe the v1 service itself, its file descriptor must
   be in the default pool. It is derived at run time from the v1alpha descriptor that
   grpcio-reflection ships: the same FileDescriptorProto with the package, file name,
   type references and language options renamed to v1's. Deriving it (rather than
   vendoring reflection.proto and generating a ``_pb2``, or writing the descriptor out
   by hand) keeps it wire-identical to the serializers in (1) by construction, needs no
   generated file, no codegen step and no buf configuration, and cannot drift from the
   installed grpcio-reflection. If something else already registered the v1 file (a
   future grpcio-reflection), that registration is used as is.

Nothing happens at import time; ``enable_reflection`` does the work (once per process
for the descriptor).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc import aio
from grpc_reflection.v1alpha import reflection, reflection_pb2

__all__ = ["SERVICE_NAMES", "V1_FILE", "V1_SERVICE_NAME", "enable_reflection"]

V1ALPHA_SERVICE_NAME: str = reflection.SERVICE_NAME
V1_PACKAGE = "grpc.reflection.v1"
V1_SERVICE_NAME = f"{V1_PACKAGE}.ServerReflection"
V1_FILE = "grpc/reflection/v1/reflection.proto"
_METHOD = "ServerReflectionInfo"

# Reflection's own service names, listed by reflection itself (newest first).
SERVICE_NAMES = (V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME)

_register_lock = threading.Lock()


def v1_file_descriptor_proto() -> descriptor_pb2.FileDescriptorProto:
    """grpc/reflection/v1/reflection.proto, derived from grpcio-reflection's v1alpha."""
    source = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(source)
    old_prefix = f".{source.package}."
    new_prefix = f".{V1_PACKAGE}."
    out = descriptor_pb2.FileDescriptorProto()
    out.CopyFrom(source)
    out.name = V1_FILE
    out.package = V1_PACKAGE
    out.ClearField("options")  # v1alpha's are deprecated=true and v1alpha packages
    out.options.java_package = "io.grpc.reflection.v1"
    out.options.java_outer_classname = "ServerReflectionProto"
    out.options.java_multiple_files = True
    out.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"
    for message in out.message_type:
        for field in message.field:
            if field.type_name.startswith(old_prefix):
                field.type_name = new_prefix + field.type_name[len(old_prefix) :]
    for service in out.service:
        for method in service.method:
            for attr in ("input_type", "output_type"):
                name: str = getattr(method, attr)
                if name.startswith(old_prefix):
                    setattr(method, attr, new_prefix + name[len(old_prefix) :])
    return out


def _ensure_v1_descriptor(pool: Any) -> None:
    """Put the v1 reflection file in ``pool`` unless it is there already."""
    with _register_lock:
        try:
            pool.FindFileByName(V1_FILE)
        except KeyError:
            pool.AddSerializedFile(v1_file_descriptor_proto().SerializeToString())


def enable_reflection(service_names: Iterable[str], server: aio.Server) -> None:
    """Serve reflection v1 and v1alpha for ``service_names`` (plus reflection's own)."""
    _ensure_v1_descriptor(descriptor_pool.Default())
    servicer = reflection.aio.ReflectionServicer((*service_names, *SERVICE_NAMES))
    for service_name in SERVICE_NAMES:
        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            _METHOD: grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            )
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service_name, handlers),)
        )
        server.add_registered_method_handlers(service_name, handlers)
