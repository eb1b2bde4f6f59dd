"""Frame-level floods and malformed requests that the gateway already held well against the
release binary, kept that way: CONTINUATION floods and 1 MiB header blocks, SETTINGS and PING
floods, and malformed authorization headers. And one the release binary was not tried with: a
flood from a peer that never reads, whose connection must still be closed by its timers."""

from __future__ import annotations

import socket
import time

import hpack
import pytest

from edge_support import (
    COMPRESSION_ERROR,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    GRPC_NOT_FOUND,
    GRPC_UNAUTHENTICATED,
    HEADERS,
    MIB,
    PROTOCOL_ERROR,
    SETTINGS_INITIAL_WINDOW_SIZE,
    ATTACKER_TOKEN,
    RawH2,
    acknowledge_job_message,
    frame,
    grpc_request_headers,
    literal_header_block,
    ping_frame,
    settings_frame,
)

FRAME = 16384  # the server's SETTINGS_MAX_FRAME_SIZE
STUCK_TIMER = 3.0  # the handshake and idle timeouts of the never-reading flood test


def answer_of(connection: RawH2, stream_id: int) -> str:
    seen = connection.streams.get(stream_id)
    if seen is None or not seen.ended:
        return "open"
    if seen.grpc_status is not None:
        return f"grpc-status {seen.grpc_status}"
    status = next((v for block in seen.header_blocks for n, v in block if n == ":status"), None)
    return f"RST_STREAM {seen.reset}" + (f" after :status {status}" if status else "")


def served_on(connection: RawH2) -> str:
    """One AcknowledgeJob on an open connection; its outcome."""
    stream_id = connection.new_stream_id()
    connection.send(
        connection.headers_frame(stream_id, grpc_request_headers(connection.authority)),
        frame(DATA, END_STREAM, stream_id, acknowledge_job_message()),
    )
    connection.pump(lambda: answer_of(connection, stream_id) != "open", timeout=3)
    return answer_of(connection, stream_id)


def continuation_flood(kind: str):
    """Endless CONTINUATION frames after a HEADERS without END_HEADERS: empty ones, small ones
    each carrying one more header, or 16 KiB fragments of one 1 MiB header value."""
    if kind == "empty":
        while True:
            yield frame(CONTINUATION, 0, 1, b"")
    elif kind == "small":
        while True:
            yield frame(CONTINUATION, 0, 1, literal_header_block(b"x-flood", b"0123456789"))
    else:
        block = literal_header_block(b"x-big", b"v" * MIB)
        for offset in range(0, len(block), FRAME):
            last = offset + FRAME >= len(block)
            yield frame(CONTINUATION, END_HEADERS if last else 0, 1, block[offset : offset + FRAME])


@pytest.mark.parametrize("kind", ["empty", "small", "1MiB-header"])
def test_continuation_floods_end_the_connection(start_gateway, watch, kind):
    gateway = start_gateway()
    w = watch(gateway)

    connection = RawH2(gateway.address)
    connection.send_preface()
    connection.pump(lambda: connection.settings_frames > 0, timeout=3)
    # The start of a request block, encoded on its own (a fresh encoder: no dynamic table
    # entries the server has not seen), then never END_HEADERS until the flood's end.
    connection.send(frame(HEADERS, 0, 1, hpack.Encoder().encode(grpc_request_headers(gateway.address))))
    started = time.monotonic()
    sent = 0
    flood = continuation_flood(kind)
    while not connection.ended_by_server() and sent < 100_000 and time.monotonic() - started < 10:
        batch = [f for _, f in zip(range(100), flood)]
        if not batch or not connection.send(*batch):
            break
        sent += len(batch)
        connection.pump(timeout=0.005)
    connection.pump_until_closed(timeout=3)
    print(f"CONTINUATION flood ({kind}): {sent} frames sent, {connection.goaway}, closed: {connection.close_error}")

    assert connection.goaway is not None, f"no GOAWAY after {sent} CONTINUATION frames ({connection.close_error or 'still open'})"
    expected = {ENHANCE_YOUR_CALM} if kind != "1MiB-header" else {ENHANCE_YOUR_CALM, COMPRESSION_ERROR}
    assert connection.goaway.error_code in expected, connection.goaway
    assert connection.closed_at is not None, "GOAWAY but the connection stayed open"
    w.check()


def test_settings_and_ping_floods_are_answered_without_harm(start_gateway, watch):
    """A peer that reads: 50,000 SETTINGS and 50,000 PINGs are each acknowledged (or the server
    ends the connection with ENHANCE_YOUR_CALM), and the connection still serves a call after."""
    # The idle timer counts calls, not frames: a flood is no call, so it must outlast the flood
    # on a slow machine (FAST_TIMERS' 3 s does not).
    flood_idle_timeout = 30.0
    gateway = start_gateway("--idle-timeout", f"{flood_idle_timeout:.0f}s")
    w = watch(gateway)

    connection = RawH2(gateway.address)
    connection.send_preface()
    # One served call first: the connection is then past its handshake timeout's reach.
    assert served_on(connection) == f"grpc-status {GRPC_NOT_FOUND}"
    floods = 50_000
    settings_acks_before, ping_acks_before = connection.settings_acks, connection.ping_acks
    settings = settings_frame({SETTINGS_INITIAL_WINDOW_SIZE: 1 << 20})
    sent = 0

    def answered() -> tuple[int, int]:
        return connection.settings_acks - settings_acks_before, connection.ping_acks - ping_acks_before

    started = time.monotonic()
    while sent < floods and not connection.ended_by_server():
        if not connection.send(*([settings, ping_frame(sent.to_bytes(8, "big"))] * 1000)):
            break
        sent += 1000
        # Read the acknowledgements as they come: this peer is slow, not deaf.
        connection.pump(lambda: answered() >= (sent, sent), timeout=2)
    elapsed = time.monotonic() - started
    print(
        f"{sent} SETTINGS + {sent} PING in {elapsed:.2f} s: {answered()[0]} SETTINGS ACK, "
        f"{answered()[1]} PING ACK, {connection.goaway or 'no GOAWAY'}"
    )
    if connection.goaway is not None:
        assert connection.goaway.error_code == ENHANCE_YOUR_CALM, connection.goaway
    else:
        assert answered() == (sent, sent), (
            f"{sent} of each sent, {answered()} answered; "
            f"closed: {connection.close_error or 'no'}, write: {connection.write_error or 'ok'}"
        )
        assert elapsed < flood_idle_timeout, "the flood took longer than the idle timeout: the check below would be void"
        assert served_on(connection) == f"grpc-status {GRPC_NOT_FOUND}", "the connection no longer serves calls"
    connection.close()
    w.check()


@pytest.mark.parametrize(
    "kind, after_a_call",
    [("PING", False), ("SETTINGS", False), ("PING", True)],
    ids=["PING-no-call", "SETTINGS-no-call", "PING-after-a-call"],
)
def test_a_flood_from_a_peer_that_never_reads_is_closed(start_gateway, watch, kind, after_a_call):
    """A peer that floods PING (or SETTINGS) and never reads a byte: the server's
    acknowledgements back up and it stops reading. The connection must still be closed by its
    timers: the handshake timeout when no call was ever started on it, the idle timeout after
    one call was served. A gateway that waits on its writes forever lets a few thousand such
    peers, each flooding for a second, hold every one of --max-connections.

    The timers are 3 s here: the flood fills the buffers in about one, so the server is stuck
    on its writes before the timer is due (with a 1 s handshake timeout the race can go either
    way)."""
    gateway = start_gateway("--handshake-timeout", f"{STUCK_TIMER:.0f}s", "--idle-timeout", f"{STUCK_TIMER:.0f}s")
    w = watch(gateway)
    gauge_before = gateway.metric("gateway_connections")

    connection = RawH2(gateway.address, timeout=0.5)
    connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    connection.send_preface()
    timer, timeout = "handshake", STUCK_TIMER
    if after_a_call:
        assert served_on(connection) == f"grpc-status {GRPC_NOT_FOUND}"
        timer = "idle"
    one = ping_frame() if kind == "PING" else settings_frame({SETTINGS_INITIAL_WINDOW_SIZE: 65535})
    batch = one * 1000
    started = time.monotonic()
    sent, blocked, server_closed = 0, None, False
    while time.monotonic() - started < 5:
        try:
            connection.sock.sendall(batch)
            sent += 1000
        except socket.timeout:
            blocked = time.monotonic() - started  # the server has stopped reading
            break
        except OSError:
            server_closed = True
            break
    print(f"{kind} flood without reading: {sent} frames written in {time.monotonic() - started:.2f} s, "
          f"{f'then the writes blocked (at {blocked:.2f} s)' if blocked else 'closed by the server' if server_closed else 'never blocked'}")  # fmt: skip

    # The timer runs from the connection's start (or its call's end), before the flood began.
    limit = timeout + 3
    gauge = gateway.wait_for_metric("gateway_connections", lambda v: v <= gauge_before, limit - (time.monotonic() - started))
    held = time.monotonic() - started
    print(f"gateway_connections {gauge_before:.0f} before, {gauge:.0f} {held:.1f} s after the flood began")
    w.check()  # the harm the stuck connection does (or not) to RSS and the legitimate client
    assert gauge <= gauge_before, (
        f"the connection of a peer that flooded {kind} and never read was still open {held:.1f} s after the flood "
        f"began ({timer} timeout {timeout} s{', after one served call' if after_a_call else ', no call ever started'})"
    )
    connection.close()


MALFORMED_AUTHORIZATION = [
    b"",
    b"Bearer",
    b"Bearer ",
    b"Basic YWxhZGRpbjpvcGVuc2VzYW1l",
    b"Token " + ATTACKER_TOKEN.encode(),
    b"Bearer " + ATTACKER_TOKEN.encode()[:-1],
    b"Bearer " + ATTACKER_TOKEN.encode() + b" trailing",
    b"Bearer " + b"A" * 8000,
    b"Bearer \xff\xfe\x80 not utf-8",
    "Bearer tökén".encode(),
]
# Bytes no field value may hold (RFC 9113 8.2.1): the request is malformed.
ILLEGAL_AUTHORIZATION = [b"Bearer tok\x00en", b"Bearer tok\r\nen"]


def test_malformed_authorization_headers_are_refused(start_gateway, watch):
    gateway = start_gateway()
    w = watch(gateway)

    connection = RawH2(gateway.address)
    connection.send_preface()
    outcomes = {}
    for value in MALFORMED_AUTHORIZATION:
        stream_id = connection.new_stream_id()
        block = connection.encoder.encode(grpc_request_headers(gateway.address, token=None))
        block += literal_header_block(b"authorization", value)
        connection.send(frame(HEADERS, END_HEADERS, stream_id, block), frame(DATA, END_STREAM, stream_id, acknowledge_job_message()))
        outcomes[value] = stream_id
    # Two authorization headers, a wrong one first.
    stream_id = connection.new_stream_id()
    block = connection.encoder.encode(grpc_request_headers(gateway.address, token=None))
    block += literal_header_block(b"authorization", b"Bearer wrong") + literal_header_block(b"authorization", b"Bearer " + ATTACKER_TOKEN.encode())
    connection.send(frame(HEADERS, END_HEADERS, stream_id, block), frame(DATA, END_STREAM, stream_id, acknowledge_job_message()))
    outcomes[b"<two headers>"] = stream_id
    connection.pump(lambda: all(answer_of(connection, s) != "open" for s in outcomes.values()), timeout=5)
    answers = {value[:40]: answer_of(connection, s) for value, s in outcomes.items()}
    print(answers)
    wrong = {value: answer for value, answer in answers.items() if answer != f"grpc-status {GRPC_UNAUTHENTICATED}"}
    assert not wrong, f"malformed authorization answered otherwise than UNAUTHENTICATED: {wrong}"
    assert not connection.ended_by_server(), f"the connection was ended: {connection.goaway or connection.close_error}"
    assert served_on(connection) == f"grpc-status {GRPC_NOT_FOUND}", "a good call on the same connection was not served"
    connection.close()

    # Illegal bytes: the stream is reset, or the connection ended, with PROTOCOL_ERROR; never served.
    for value in ILLEGAL_AUTHORIZATION:
        bad = RawH2(gateway.address)
        bad.send_preface()
        stream_id = bad.new_stream_id()
        block = bad.encoder.encode(grpc_request_headers(gateway.address, token=None)) + literal_header_block(b"authorization", value)
        bad.send(frame(HEADERS, END_HEADERS, stream_id, block), frame(DATA, END_STREAM, stream_id, acknowledge_job_message()))
        bad.pump(lambda: answer_of(bad, stream_id) != "open", timeout=3)
        answer = answer_of(bad, stream_id)
        print(f"{value!r}: {answer}, {bad.goaway}")
        assert answer == f"RST_STREAM {PROTOCOL_ERROR}" or (
            bad.goaway is not None and bad.goaway.error_code == PROTOCOL_ERROR and answer == "open"
        ), f"authorization {value!r}: {answer}, {bad.goaway}"
        bad.close()
    w.check()
