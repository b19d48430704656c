"""OpenTelemetry: one span and one duration sample per RPC.

The providers are built by :func:`create_telemetry` and passed explicitly (no
global state is touched at import). With no exporter configured the no-op API
providers are used, so tracing costs nothing until it is switched on.
"""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)

from server.config import Settings

__all__ = ["Telemetry", "create_telemetry"]


@dataclass(frozen=True, slots=True)
class Telemetry:
    tracer: trace.Tracer
    rpc_duration: metrics.Histogram
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None

    def shutdown(self) -> None:
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()


def create_telemetry(
    settings: Settings,
    span_exporter: SpanExporter | None = None,
    metric_reader: MetricReader | None = None,
) -> Telemetry:
    """Console exporters when ``settings.otel_console``; or the given span
    exporter and metric reader (tests, or a caller wiring its own backend)."""
    if not settings.otel_console and span_exporter is None and metric_reader is None:
        meter = metrics.NoOpMeterProvider().get_meter("booking-data")
        return Telemetry(
            tracer=trace.NoOpTracerProvider().get_tracer("booking-data"),
            rpc_duration=meter.create_histogram("rpc.server.duration", unit="ms"),
        )
    resource = Resource.create({"service.name": "booking-data"})
    tracer_provider = TracerProvider(resource=resource)
    if span_exporter is not None:
        tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    if settings.otel_console:
        tracer_provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    readers: list[MetricReader] = [metric_reader] if metric_reader is not None else []
    if settings.otel_console:
        readers.append(
            PeriodicExportingMetricReader(ConsoleMetricExporter(), export_interval_millis=60_000)
        )
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    meter = meter_provider.get_meter("booking-data")
    return Telemetry(
        tracer=tracer_provider.get_tracer("booking-data"),
        rpc_duration=meter.create_histogram(
            "rpc.server.duration", unit="ms", description="Duration of served RPCs"
        ),
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )
