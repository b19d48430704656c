"""RPC handlers: one module per proto service, named after its proto file.

Decode the request, validate it, call query functions, encode the response.
No SQL here (that is ``server.queries``), no transport concerns (that is
``server.interceptors``).

=========================  ============================  ===================
service                    proto file                    module
=========================  ============================  ===================
booking.v1.OrganizationService  organizations.proto      handlers.organizations
booking.v1.ProviderService      providers.proto          handlers.providers
booking.v1.CatalogService       catalog.proto            handlers.catalog
booking.v1.ClientService        clients.proto            handlers.clients
booking.v1.AuditService         audit.proto              handlers.audit
booking.v1.ScheduleService      schedules.proto          handlers.schedules
booking.v1.AvailabilityService  availability.proto       handlers.availability
booking.v1.AppointmentService   appointments.proto       handlers.appointments
booking.v1.PaymentService       payments.proto           handlers.payments
booking.v1.SummaryService       summaries.proto          handlers.summaries
=========================  ============================  ===================

Shared machinery (private modules): ``_base`` (Deps, deadlines, canonical ids,
NUL check), ``_writes`` (the write path: transaction, audit, request_id),
``_resource`` (Create/Get/Update of a tenant-owned resource), ``_lists`` (the
List path: ListSpec, Related), ``_encoders`` (the appointment, payment and time
off encoders other services' RPCs use too), ``_masks`` (update masks), ``_encoding`` (timestamps,
etags), ``_calendar_fields`` (google.type Date / TimeOfDay / TimeInterval
validation), ``_conflicts`` (booking conflicts as protos and as the
TIME_SLOT_TAKEN / BOOKING_NOT_ALLOWED errors).

A new service is one :class:`Service` entry in :data:`SERVICES`: it drives
registration, health (one status per service) and reflection.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from booking.v1 import (
    appointments_pb2,
    appointments_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    availability_pb2,
    availability_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    clients_pb2,
    clients_pb2_grpc,
    organizations_pb2,
    organizations_pb2_grpc,
    payments_pb2,
    payments_pb2_grpc,
    providers_pb2,
    providers_pb2_grpc,
    schedules_pb2,
    schedules_pb2_grpc,
    summaries_pb2,
    summaries_pb2_grpc,
)
from grpc import aio

from server.handlers._base import Deps
from server.handlers.appointments import AppointmentService
from server.handlers.audit import AuditService
from server.handlers.availability import AvailabilityService
from server.handlers.catalog import CatalogService
from server.handlers.clients import ClientService
from server.handlers.organizations import OrganizationService
from server.handlers.payments import PaymentService
from server.handlers.providers import ProviderService
from server.handlers.schedules import ScheduleService
from server.handlers.summaries import SummaryService

__all__ = ["SERVICES", "Deps", "Service", "service_names"]


@dataclass(frozen=True, slots=True)
class Service:
    """One proto service: its generated modules, its name in the proto file and
    its servicer class (which must implement the generated servicer)."""

    pb2: ModuleType
    pb2_grpc: ModuleType
    short_name: str
    servicer: Callable[[Deps], Any]

    def __post_init__(self) -> None:
        if self.short_name not in self.pb2.DESCRIPTOR.services_by_name:
            raise ValueError(f"{self.pb2.__name__} declares no service {self.short_name}")
        base = getattr(self.pb2_grpc, f"{self.short_name}Servicer")
        if not (isinstance(self.servicer, type) and issubclass(self.servicer, base)):
            raise TypeError(f"{self.servicer!r} does not implement {base.__name__}")

    @property
    def full_name(self) -> str:
        return str(self.pb2.DESCRIPTOR.services_by_name[self.short_name].full_name)

    def register(self, deps: Deps, server: aio.Server) -> None:
        add = getattr(self.pb2_grpc, f"add_{self.short_name}Servicer_to_server")
        add(self.servicer(deps), server)


SERVICES: tuple[Service, ...] = (
    Service(organizations_pb2, organizations_pb2_grpc, "OrganizationService", OrganizationService),
    Service(providers_pb2, providers_pb2_grpc, "ProviderService", ProviderService),
    Service(catalog_pb2, catalog_pb2_grpc, "CatalogService", CatalogService),
    Service(clients_pb2, clients_pb2_grpc, "ClientService", ClientService),
    Service(audit_pb2, audit_pb2_grpc, "AuditService", AuditService),
    Service(schedules_pb2, schedules_pb2_grpc, "ScheduleService", ScheduleService),
    Service(availability_pb2, availability_pb2_grpc, "AvailabilityService", AvailabilityService),
    Service(appointments_pb2, appointments_pb2_grpc, "AppointmentService", AppointmentService),
    Service(payments_pb2, payments_pb2_grpc, "PaymentService", PaymentService),
    Service(summaries_pb2, summaries_pb2_grpc, "SummaryService", SummaryService),
)


def service_names() -> tuple[str, ...]:
    return tuple(s.full_name for s in SERVICES)
