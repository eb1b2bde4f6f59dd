"""How the corpus talks to the gateway: a gRPC call with any bytes as the request message, a raw
HTTP/2 exchange with any headers and body (the `h2` library), and a raw TCP exchange for what is
not HTTP/2 at all. Each of them is bounded in time, so a gateway that hangs fails the case
instead of the run.
"""

from __future__ import annotations

import base64
import socket
import struct
import time
import urllib.parse
from dataclasses import dataclass, field

import grpc
import h2.config
import h2.connection
import h2.events
import h2.exceptions

from corpus_protos import rpc

# The gateways of the corpus run with `--max-message-size` this small.
MAX_MESSAGE_SIZE = 65536

JOB_WORKER = "/codepipeline.jobworker.v1.JobWorkerService/"
EMULATOR_ADMIN = "/codepipeline.emulator.v1.EmulatorAdminService/"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"

# No case may take longer than this to be answered: past it, the gateway is taken to hang.
ANSWER_TIMEOUT_SECONDS = 5.0


@dataclass
class Answer:
    """What the gateway answered a call: the gRPC status, its message and decoded details.

    `http_status` is known only for raw HTTP/2 exchanges (gRPC libraries hide it)."""

    code: grpc.StatusCode
    message: str = ""
    details: list = field(default_factory=list)
    http_status: int | None = None
    body: bytes = b""

    def detail(self, cls):
        """The one detail of this google.rpc type, or None."""
        found = [d for d in self.details if isinstance(d, cls)]
        assert len(found) <= 1, f"more than one {cls.DESCRIPTOR.full_name} in {self.details}"
        return found[0] if found else None

    @property
    def violated_fields(self) -> list[str]:
        bad_request = self.detail(rpc.BadRequest)
        return [v.field for v in bad_request.field_violations] if bad_request else []

    @property
    def reason(self) -> str | None:
        info = self.detail(rpc.ErrorInfo)
        return info.reason if info else None

    def __str__(self) -> str:
        shown = [f"{d.DESCRIPTOR.name}({str(d).strip()!r})" for d in self.details]
        http = f"HTTP {self.http_status}, " if self.http_status is not None else ""
        return f"{http}{self.code.name}: {self.message!r} {shown}"


CODES_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def decode_status_details(raw: bytes | None) -> list:
    """The google.rpc details carried in `grpc-status-details-bin` (a google.rpc.Status)."""
    if not raw:
        return []
    status = rpc.Status.FromString(raw)
    details = []
    for any_detail in status.details:
        cls = rpc.BY_TYPE_URL.get(any_detail.type_url)
        assert cls is not None, f"unexpected detail type {any_detail.type_url}"
        details.append(cls.FromString(any_detail.value))
    return details


def grpc_call(
    channel: grpc.Channel,
    path: str,
    request: bytes,
    metadata: tuple[tuple[str, str], ...] = (),
    timeout: float = ANSWER_TIMEOUT_SECONDS,
) -> Answer:
    """A unary call of `path` whose request message is exactly `request` (any bytes: no
    serializer runs), as grpcio sends it."""
    call = channel.unary_unary(path)  # no serializers: bytes in, bytes out
    try:
        response = call(request, metadata=metadata, timeout=timeout)
    except grpc.RpcError as error:
        trailers = dict(error.trailing_metadata() or ())
        return Answer(
            code=error.code(),
            message=error.details() or "",
            details=decode_status_details(trailers.get("grpc-status-details-bin")),
        )
    return Answer(code=grpc.StatusCode.OK, body=response)


def grpc_frame(message: bytes, *, compressed_flag: int = 0, length: int | None = None) -> bytes:
    """A gRPC length-prefixed message: flag byte, 4-byte big-endian length, the message.
    `length` overrides the announced length (to announce more than is sent)."""
    announced = len(message) if length is None else length
    return bytes([compressed_flag]) + struct.pack(">I", announced) + message


def grpc_headers(path: str, *, method: str = "POST", content_type: str | None = "application/grpc",
                 authorization: str | None = None, extra: tuple[tuple[str, str], ...] = ()):
    """Request headers of a gRPC call over HTTP/2, each of which a case may change or drop."""
    headers = [(":method", method), (":scheme", "http"), (":path", path), (":authority", "corpus"),
               ("te", "trailers")]
    if content_type is not None:
        headers.append(("content-type", content_type))
    if authorization is not None:
        headers.append(("authorization", authorization))
    headers.extend(extra)
    return headers


@dataclass
class Http2Answer:
    """The server's side of one HTTP/2 stream."""

    headers: dict[str, str] = field(default_factory=dict)
    trailers: dict[str, str] = field(default_factory=dict)
    data: bytes = b""
    ended: bool = False
    reset_code: int | None = None
    goaway_code: int | None = None
    seconds: float = 0.0

    @property
    def http_status(self) -> int | None:
        return int(self.headers[":status"]) if ":status" in self.headers else None

    def grpc(self) -> Answer:
        """The gRPC status in the trailers, or in the headers of a trailers-only response."""
        source = self.trailers if "grpc-status" in self.trailers else self.headers
        assert "grpc-status" in source, f"no grpc-status in the answer: {self}"
        raw_details = source.get("grpc-status-details-bin")
        if raw_details:
            raw_details = base64.b64decode(raw_details + "=" * (-len(raw_details) % 4))
        return Answer(
            code=CODES_BY_NUMBER[int(source["grpc-status"])],
            message=urllib.parse.unquote(source.get("grpc-message", "")),
            details=decode_status_details(raw_details),
            http_status=self.http_status,
            body=self.data,
        )


def http2_exchange(
    address: str,
    headers: list[tuple[str, str]],
    body: bytes = b"",
    *,
    end_stream: bool = True,
    timeout: float = ANSWER_TIMEOUT_SECONDS,
) -> Http2Answer:
    """Opens a connection, sends one stream (headers, then `body` as DATA, ending the stream
    unless `end_stream` is false), and reads until the stream is ended or reset or the
    connection goes away. Fails if that takes longer than `timeout`."""
    host, port = address.rsplit(":", 1)
    started = time.monotonic()
    answer = Http2Answer()
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        connection = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8", validate_outbound_headers=False)
        )
        connection.initiate_connection()
        stream = connection.get_next_available_stream_id()
        connection.send_headers(stream, headers, end_stream=end_stream and not body)
        if body:
            connection.send_data(stream, body, end_stream=end_stream)
        sock.sendall(connection.data_to_send())
        while True:
            remaining = timeout - (time.monotonic() - started)
            assert remaining > 0, f"no answer within {timeout} s: the gateway hangs ({answer})"
            sock.settimeout(remaining)
            try:
                data = sock.recv(65536)
            except socket.timeout:
                raise AssertionError(f"no answer within {timeout} s: the gateway hangs ({answer})") from None
            if not data:
                break
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    answer.headers = dict(event.headers)
                elif isinstance(event, h2.events.TrailersReceived):
                    answer.trailers = dict(event.headers)
                elif isinstance(event, h2.events.DataReceived):
                    answer.data += event.data
                    connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    answer.ended = True
                elif isinstance(event, h2.events.StreamReset):
                    answer.reset_code = event.error_code
                elif isinstance(event, h2.events.ConnectionTerminated):
                    answer.goaway_code = event.error_code
            sock.sendall(connection.data_to_send())
            if answer.ended or answer.reset_code is not None or answer.goaway_code is not None:
                break
    answer.seconds = time.monotonic() - started
    return answer


@dataclass
class RawAnswer:
    """Everything the server sent on a plain TCP connection, and how the connection ended."""

    data: bytes
    closed_by: str  # "eof" (FIN) or "reset" (RST)
    seconds: float

    def http2_frames(self) -> list[tuple[int, int, int, bytes]]:
        """The data read as HTTP/2 frames: (type, flags, stream id, payload)."""
        frames, rest = [], self.data
        while len(rest) >= 9:
            length = int.from_bytes(rest[:3], "big")
            kind, flags = rest[3], rest[4]
            stream = int.from_bytes(rest[5:9], "big") & 0x7FFFFFFF
            frames.append((kind, flags, stream, rest[9:9 + length]))
            rest = rest[9 + length:]
        assert not rest, f"trailing bytes that are not an HTTP/2 frame: {rest!r}"
        return frames


def raw_exchange(address: str, request: bytes, timeout: float = ANSWER_TIMEOUT_SECONDS) -> RawAnswer:
    """Sends `request` on a fresh TCP connection and reads until the server closes it. Fails if
    the server keeps the connection open longer than `timeout`."""
    host, port = address.rsplit(":", 1)
    started = time.monotonic()
    received = b""
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        while True:
            remaining = timeout - (time.monotonic() - started)
            assert remaining > 0, f"connection still open after {timeout} s; read {received!r}"
            sock.settimeout(remaining)
            try:
                data = sock.recv(65536)
            except socket.timeout:
                raise AssertionError(f"connection still open after {timeout} s; read {received!r}") from None
            except ConnectionResetError:
                closed_by = "reset"
                break
            if not data:
                closed_by = "eof"
                break
            received += data
    return RawAnswer(data=received, closed_by=closed_by, seconds=time.monotonic() - started)
