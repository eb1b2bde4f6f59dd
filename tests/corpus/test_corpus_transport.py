"""What no well-behaved gRPC client sends: messages over the size limit, bytes that are not
protobuf, broken gRPC framing, the wrong content-type, HTTP/1.1, unknown methods and services.

The answers here are the gateway's as observed and pinned (tonic's framing errors included); each
case is also bounded in time (corpus_wire.ANSWER_TIMEOUT_SECONDS), so a hang fails it. As
everywhere in the corpus, the emulator must count no call and health must stay SERVING.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass

import grpc
import pytest

from corpus_protos import jobworker as pb
from corpus_wire import (
    JOB_WORKER,
    MAX_MESSAGE_SIZE,
    grpc_frame,
    grpc_headers,
    http2_exchange,
    raw_exchange,
)

JOB_ID = "f4f4ff82-2d11-4a2b-9c3d-0123456789ab"
ACKNOWLEDGE = JOB_WORKER + "AcknowledgeJob"
GET_JOB_DETAILS = JOB_WORKER + "GetJobDetails"

# A request that passes the edge and would reach the emulator (NOT_FOUND there: no such job).
VALID_DETAILS = pb.GetJobDetailsRequest(job_id=JOB_ID).SerializeToString()


def failure_request_of_size(size: int) -> bytes:
    """A PutJobFailureResultRequest serialized to exactly `size` bytes."""
    for length in range(size, 0, -1):
        request = pb.PutJobFailureResultRequest(
            job_id=JOB_ID, failure_details=pb.FailureDetails(type=pb.FAILURE_TYPE_JOB_FAILED, message="m" * length)
        ).SerializeToString()
        if len(request) == size:
            return request
    raise AssertionError(f"no PutJobFailureResultRequest of {size} bytes")


# --- the message size limit --------------------------------------------------------------------


def test_a_message_one_byte_over_the_limit_is_resource_exhausted_message_too_large(gateway):
    before = gateway.call_counts()

    answer = gateway.call(JOB_WORKER + "PutJobFailureResult", failure_request_of_size(MAX_MESSAGE_SIZE + 1))

    assert answer.code == grpc.StatusCode.RESOURCE_EXHAUSTED, str(answer)
    assert answer.reason == "MESSAGE_TOO_LARGE", str(answer)
    gateway.assert_no_upstream_call_since(before)
    gateway.assert_serving()


def test_a_message_of_exactly_the_limit_is_judged_on_its_fields_not_its_size(gateway):
    before = gateway.call_counts()

    answer = gateway.call(JOB_WORKER + "PutJobFailureResult", failure_request_of_size(MAX_MESSAGE_SIZE))

    assert answer.code == grpc.StatusCode.INVALID_ARGUMENT, str(answer)
    assert answer.violated_fields == ["failure_details.message"], str(answer)
    gateway.assert_no_upstream_call_since(before)
    gateway.assert_serving()


def test_a_frame_announcing_a_huge_message_is_refused_before_its_body_arrives(gateway):
    """Only the 5-byte frame header is sent and the stream is left open: the answer must come
    from the header alone, not after waiting for 1 MB that never comes."""
    before = gateway.call_counts()

    exchange = http2_exchange(
        gateway.address,
        grpc_headers(ACKNOWLEDGE, authorization=gateway.bearer("worker")),
        grpc_frame(b"", length=1_000_000),
        end_stream=False,
    )

    answer = exchange.grpc()
    assert (answer.http_status, answer.code, answer.reason) == (
        200, grpc.StatusCode.RESOURCE_EXHAUSTED, "MESSAGE_TOO_LARGE"), str(answer)
    gateway.assert_no_upstream_call_since(before)
    gateway.assert_serving()


# --- bytes that are not protobuf ---------------------------------------------------------------


@dataclass
class GarbageCase:
    what: str
    body: bytes
    decode_error: str  # the end of tonic's message, "failed to decode Protobuf message: ..."

    def __str__(self) -> str:
        return f"an AcknowledgeJob message of {self.what} is INTERNAL (cannot decode)"


GARBAGE = [
    GarbageCase("eight 0xff bytes (an endless varint)", b"\xff" * 8, "invalid varint"),
    GarbageCase("random-looking bytes", bytes(range(250, 256)) + b"\x00garbage\x01", "invalid key value"),
    GarbageCase("a job_id field announcing 5 bytes and carrying 3", b"\x0a\x05abc", "buffer underflow"),
    GarbageCase("a job_id field sent with the varint wire type", b"\x08\x01", "invalid wire type"),
    GarbageCase("a job_id that is not UTF-8", b"\x0a\x02\xc3\x28", "invalid string value"),
    GarbageCase("a tag with field number 0", b"\x02\x00", "invalid tag"),
    GarbageCase("an end-group tag with no group", b"\x0c", "invalid wire type: EndGroup"),
]


@pytest.mark.parametrize("case", GARBAGE, ids=str)
def test_bytes_that_are_not_protobuf_are_refused(gateway, case: GarbageCase):
    """Pinned as observed: tonic answers a message that does not decode with INTERNAL and
    "failed to decode Protobuf message: ...", before any gateway code runs."""
    before = gateway.call_counts()

    answer = gateway.call(ACKNOWLEDGE, case.body)

    assert answer.code == grpc.StatusCode.INTERNAL, str(answer)
    assert answer.message.startswith("failed to decode Protobuf message"), str(answer)
    assert case.decode_error in answer.message, str(answer)
    gateway.assert_no_upstream_call_since(before)
    gateway.assert_serving()


# --- broken gRPC framing, over raw HTTP/2 ------------------------------------------------------


@dataclass
class FramingCase:
    what: str
    body: bytes
    code: grpc.StatusCode
    message: str  # a part of the grpc-message
    extra_headers: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        return f"a call whose body is {self.what} is {self.code.name}"


FRAMING = [
    FramingCase("empty (no message at all)", b"", grpc.StatusCode.INTERNAL, "Missing request message"),
    FramingCase("a frame announcing 100 bytes and carrying 38", grpc_frame(VALID_DETAILS, length=100),
                grpc.StatusCode.INTERNAL, "Unexpected EOF decoding stream"),
    FramingCase("only 3 bytes of a frame header", b"\x00\x00\x00", grpc.StatusCode.INTERNAL,
                "Unexpected EOF decoding stream"),
    FramingCase("flagged compressed without a grpc-encoding", grpc_frame(VALID_DETAILS, compressed_flag=1),
                grpc.StatusCode.INTERNAL, "compressed-flag but no grpc-encoding"),
    FramingCase("a frame whose flag byte is 7", grpc_frame(VALID_DETAILS, compressed_flag=7),
                grpc.StatusCode.INTERNAL, "invalid compression flag: 7"),
    FramingCase("gzip-compressed, which the gateway does not accept",
                grpc_frame(gzip.compress(VALID_DETAILS), compressed_flag=1), grpc.StatusCode.UNIMPLEMENTED,
                "compressed with `gzip` which isn't supported", (("grpc-encoding", "gzip"),)),
]


@pytest.mark.parametrize("case", FRAMING, ids=str)
def test_broken_grpc_framing_is_refused(gateway, case: FramingCase):
    before = gateway.call_counts()

    exchange = http2_exchange(
        gateway.address,
        grpc_headers(GET_JOB_DETAILS, authorization=gateway.bearer("worker"), extra=case.extra_headers),
        case.body,
    )

    answer = exchange.grpc()
    assert (answer.http_status, answer.code) == (200, case.code), str(answer)
    assert case.message in answer.message, str(answer)
    gateway.assert_no_upstream_call_since(before)
    gateway.assert_serving()


def test_a_stalled_request_body_is_answered_at_the_callers_deadline(gateway):
    """A frame header announcing 20 bytes, 5 of them sent, the stream left open, with
    `grpc-timeout: 300m`. The gateway's deadline layer answers DEADLINE_EXCEEDED (its own
    ErrorInfo) once the deadline passes: a call whose body never comes is still answered."""
    before = gateway.call_counts()

    exchange = http2_exchange(
        gateway.address,
        grpc_headers(GET_JOB_DETAILS, authorization=gateway.bearer("worker"), extra=(("grpc-timeout", "300m"),)),
        grpc_frame(VALID_DETAILS[:5], length=20),
        end_stream=False,
    )

    answer = exchange.grpc()
    assert (answer.http_status, answer.code) == (200, grpc.StatusCode.DEADLINE_EXCEEDED), str(answer)
    assert "deadline passed" in answer.message, str(answer)
    assert 0.25 <= exchange.seconds < 2.0, f"answered after {exchange.seconds:.3f} s, not at the 300 ms deadline"
    gateway.assert_no_upstream_call_since(before)
    gateway.assert_serving()


# --- the wrong content-type and method ---------------------------------------------------------


def test_a_json_body_sent_as_application_json_is_refused_with_http_415(gateway):
    """The gRPC spec asks a server to answer a content-type that is not application/grpc with
    HTTP 415, so a non-gRPC client does not read a gRPC error's HTTP 200 as success."""
    before = gateway.call_counts()

    exchange = http2_exchange(
        gateway.address,
        grpc_headers(ACKNOWLEDGE, content_type="application/json", authorization=gateway.bearer("worker")),
        b'{"jobId": "f4f4ff82-2d11-4a2b-9c3d-0123456789ab", "nonce": "1"}',
    )

    assert exchange.http_status == 415, str(exchange)
    gateway.assert_no_upstream_call_since(before)
    gateway.assert_serving()


NOT_GRPC_REQUESTS = [
    pytest.param(
        dict(content_type="application/json"), 415,
        id="a valid gRPC frame sent as application/json is refused with 415 without reaching the emulator",
    ),
    pytest.param(
        dict(content_type=None), 415,
        id="a valid gRPC frame sent without any content-type is refused with 415 without reaching the emulator",
    ),
    pytest.param(
        dict(method="GET"), 405,
        id="a valid gRPC frame sent with GET instead of POST is refused with 405 without reaching the emulator",
    ),
]


@pytest.mark.parametrize(("request_shape", "http_status"), NOT_GRPC_REQUESTS)
def test_a_request_that_is_not_grpc_does_not_reach_the_emulator(gateway, request_shape, http_status):
    before = gateway.call_counts()

    exchange = http2_exchange(
        gateway.address,
        grpc_headers(GET_JOB_DETAILS, authorization=gateway.bearer("worker"), **request_shape),
        grpc_frame(VALID_DETAILS),
    )

    assert exchange.http_status == http_status, str(exchange)
    gateway.assert_no_upstream_call_since(before)
    gateway.assert_serving()


def test_the_same_frame_sent_as_application_grpc_does_reach_the_emulator(gateway):
    """The control of the case above: the raw HTTP/2 client itself is right."""
    before = gateway.call_counts()

    exchange = http2_exchange(
        gateway.address,
        grpc_headers(GET_JOB_DETAILS, authorization=gateway.bearer("worker")),
        grpc_frame(VALID_DETAILS),
    )

    answer = exchange.grpc()
    assert (answer.http_status, answer.code, answer.reason) == (
        200, grpc.StatusCode.NOT_FOUND, "JobNotFoundException"), str(answer)
    after = gateway.call_counts()
    assert after["GetJobDetails"] == before["GetJobDetails"] + 1, f"{before} -> {after}"
    gateway.assert_serving()


# --- what is not HTTP/2 at all -----------------------------------------------------------------

HTTP1_ACKNOWLEDGE = (
    b"POST /codepipeline.jobworker.v1.JobWorkerService/AcknowledgeJob HTTP/1.1\r\n"
    b"Host: corpus\r\nContent-Type: application/grpc\r\nTE: trailers\r\n"
    b"Content-Length: 5\r\n\r\n\x00\x00\x00\x00\x00"
)

NOT_HTTP2 = [
    pytest.param(HTTP1_ACKNOWLEDGE,
                 id="a plain HTTP/1.1 POST of AcknowledgeJob gets the HTTP/2 preface and a closed connection"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: corpus\r\n\r\n",
                 id="a plain HTTP/1.1 GET gets the HTTP/2 preface and a closed connection"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: corpus\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                 b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
                 id="an HTTP/1.1 h2c upgrade request gets the HTTP/2 preface and a closed connection"),
    pytest.param(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(40),
                 id="a TLS ClientHello on the plaintext port gets the HTTP/2 preface and a closed connection"),
]


@pytest.mark.parametrize("request_bytes", NOT_HTTP2)
def test_what_is_not_http2_gets_a_closed_connection(gateway, request_bytes: bytes):
    """Pinned as observed: the server sends its HTTP/2 connection preface (one SETTINGS frame)
    as soon as the connection opens, reads an invalid client preface, and closes the connection
    without a GOAWAY (RFC 9113 §3.4 allows omitting it). No HTTP/1.1 response is sent."""
    before = gateway.call_counts()

    answer = raw_exchange(gateway.address, request_bytes)

    assert not answer.data.startswith(b"HTTP/"), f"an HTTP/1 answer: {answer.data!r}"
    frames = answer.http2_frames()
    assert [(kind, flags, stream) for kind, flags, stream, _ in frames] == [(0x4, 0x0, 0)], \
        f"expected exactly the server's SETTINGS frame, read {answer.data!r}"
    assert answer.closed_by in ("eof", "reset")
    gateway.assert_no_upstream_call_since(before)
    gateway.assert_serving()


# --- unknown methods and services --------------------------------------------------------------

UNKNOWN_PATHS = [
    pytest.param(JOB_WORKER + "DeleteJob", id="an unknown method of the job-worker service is UNIMPLEMENTED"),
    pytest.param(JOB_WORKER + "acknowledgejob", id="a method name in the wrong case is UNIMPLEMENTED"),
    pytest.param("/codepipeline.jobworker.v2.JobWorkerService/AcknowledgeJob",
                 id="an unknown version of the job-worker service is UNIMPLEMENTED"),
    pytest.param("/codepipeline.emulator.v1.EmulatorAdminService/DeleteEverything",
                 id="an unknown method of the emulator admin service is UNIMPLEMENTED"),
    pytest.param("/com.example.Nope/Call", id="an unknown service is UNIMPLEMENTED"),
    pytest.param("/codepipeline.jobworker.v1.JobWorkerService", id="a path naming only the service is UNIMPLEMENTED"),
]


@pytest.mark.parametrize("path", UNKNOWN_PATHS)
def test_an_unknown_method_is_unimplemented(gateway, path: str):
    before = gateway.call_counts()

    answer = gateway.call(path, pb.AcknowledgeJobRequest(job_id=JOB_ID, nonce="1").SerializeToString())

    assert answer.code == grpc.StatusCode.UNIMPLEMENTED, str(answer)
    gateway.assert_no_upstream_call_since(before)
    gateway.assert_serving()
