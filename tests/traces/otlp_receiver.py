"""A real OTLP/gRPC trace receiver for the tests: `opentelemetry.proto.collector.trace.v1.TraceService`
on 127.0.0.1:0, keeping every span it is sent with the service that sent it."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from concurrent import futures
from dataclasses import dataclass

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

SERVER = trace_pb2.Span.SPAN_KIND_SERVER
CLIENT = trace_pb2.Span.SPAN_KIND_CLIENT
INTERNAL = trace_pb2.Span.SPAN_KIND_INTERNAL


def value_of(value: common_pb2.AnyValue) -> object:
    """An OTLP attribute value as Python: str, int, float, bool, bytes, list or dict."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [value_of(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {item.key: value_of(item.value) for item in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


def attributes_of(key_values) -> dict[str, object]:
    return {item.key: value_of(item.value) for item in key_values}


@dataclass
class ReceivedSpan:
    """One span as received, with its resource's attributes and its instrumentation scope."""

    service: str
    resource: dict[str, object]
    scope: str
    span: trace_pb2.Span

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def kind(self) -> int:
        return self.span.kind

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def span_id(self) -> str:
        return self.span.span_id.hex()

    @property
    def parent_id(self) -> str:
        return self.span.parent_span_id.hex()

    @property
    def attributes(self) -> dict[str, object]:
        return attributes_of(self.span.attributes)

    def every_value(self):
        """(where, value) for every attribute value the span carries: its own, its events' and
        links', and its resource's; and its name, status message and events' names."""
        yield "name", self.span.name
        yield "status.message", self.span.status.message
        for key, value in self.attributes.items():
            yield f"attribute {key}", value
        for event in self.span.events:
            yield f"event {event.name}", event.name
            for key, value in attributes_of(event.attributes).items():
                yield f"event {event.name} attribute {key}", value
        for link in self.span.links:
            for key, value in attributes_of(link.attributes).items():
                yield f"link attribute {key}", value
        for key, value in self.resource.items():
            yield f"resource attribute {key}", value

    def __repr__(self) -> str:
        return (
            f"<{self.service} {self.name!r} trace={self.trace_id[:8]} span={self.span_id[:8]} "
            f"parent={self.parent_id[:8] or '-'} {self.attributes}>"
        )


class OtlpReceiver:
    """Collects the spans exported to it; `.endpoint` is its `http://127.0.0.1:PORT`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        self.exports = 0
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self._Servicer(self), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.server.start()

    class _Servicer(trace_service_pb2_grpc.TraceServiceServicer):
        def __init__(self, receiver: OtlpReceiver) -> None:
            self.receiver = receiver

        def Export(self, request, context):  # noqa: N802 (the RPC's name)
            self.receiver._keep(request)
            return trace_service_pb2.ExportTraceServiceResponse()

    def _keep(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        received = []
        for resource_spans in request.resource_spans:
            resource = attributes_of(resource_spans.resource.attributes)
            service = str(resource.get("service.name", ""))
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(ReceivedSpan(service, resource, scope_spans.scope.name, span))
        with self._lock:
            self.exports += 1
            self._spans.extend(received)

    def spans(self, service: str | None = None) -> list[ReceivedSpan]:
        with self._lock:
            return [span for span in self._spans if service is None or span.service == service]

    def traces(self) -> dict[str, list[ReceivedSpan]]:
        """Trace id -> its spans."""
        by_trace = defaultdict(list)
        for span in self.spans():
            by_trace[span.trace_id].append(span)
        return dict(by_trace)

    def wait_for_spans(self, service: str, timeout: float = 10) -> list[ReceivedSpan]:
        deadline = time.monotonic() + timeout
        while not (spans := self.spans(service)) and time.monotonic() < deadline:
            time.sleep(0.05)
        return spans

    def stop(self) -> None:
        self.server.stop(grace=0)
