"""Connections that never start a call, and more connections than the gateway serves: the
handshake timeout closes the first, --max-connections refuses the second with GOAWAY
ENHANCE_YOUR_CALM, and the gateway's connection gauge and open file descriptors come back to
where they were."""

from __future__ import annotations

import select
import socket
import time

from edge_support import (
    DATA,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    GRPC_NOT_FOUND,
    PREFACE,
    RawH2,
    acknowledge_job_message,
    frame,
    grpc_request_headers,
    settings_frame,
)

HANDSHAKE_TIMEOUT = 1.0  # conftest.FAST_TIMERS
CLOSE_MARGIN = 2.0  # how much later than the handshake timeout the server may close


def connect(gateway, count: int) -> list[socket.socket]:
    return [socket.create_connection((gateway.host, gateway.port), timeout=5) for _ in range(count)]


def wait_until_closed_by_server(sockets: list[socket.socket], timeout: float) -> dict[int, float]:
    """Reads every socket (discarding what the server sends: its SETTINGS) until each one reads
    EOF or a reset; returns {index: when} for those that were closed within `timeout`."""
    closed: dict[int, float] = {}
    by_fd = {sock.fileno(): index for index, sock in enumerate(sockets)}
    deadline = time.monotonic() + timeout
    while len(closed) < len(sockets) and (remaining := deadline - time.monotonic()) > 0:
        open_ones = [sock for index, sock in enumerate(sockets) if index not in closed]
        readable, _, _ = select.select(open_ones, [], [], min(remaining, 0.5))
        for sock in readable:
            try:
                ended = sock.recv(1 << 16) == b""
            except OSError:
                ended = True
            if ended:
                closed[by_fd[sock.fileno()]] = time.monotonic()
    return closed


def served_call(gateway) -> str:
    """One AcknowledgeJob on a fresh raw connection: 'grpc-status N', or what happened instead."""
    connection = RawH2(gateway.address)
    connection.send_preface()
    stream_id = connection.new_stream_id()
    connection.send(
        connection.headers_frame(stream_id, grpc_request_headers(gateway.address)),
        frame(DATA, END_STREAM, stream_id, acknowledge_job_message()),
    )
    connection.pump(lambda: stream_id in connection.streams and connection.streams[stream_id].ended, timeout=3)
    seen = connection.streams.get(stream_id)
    connection.close()
    if seen is None or not seen.ended:
        return f"no answer ({connection.goaway or connection.close_error or 'open'})"
    return f"grpc-status {seen.grpc_status}" if seen.grpc_status is not None else f"RST_STREAM {seen.reset}"


def test_connections_that_never_start_a_call_are_closed_after_the_handshake_timeout(start_gateway, watch):
    gateway = start_gateway()
    w = watch(gateway)
    gauge_before = gateway.metric("gateway_connections")
    fds_before = gateway.open_fds()
    timeouts_before = gateway.metric("gateway_connections_closed_total", reason="handshake_timeout")

    silent = 300  # TCP only: not even the HTTP/2 preface
    preface_only = 50  # the preface and SETTINGS, then no call
    sockets = connect(gateway, silent)
    talkers = connect(gateway, preface_only)
    for sock in talkers:
        sock.sendall(PREFACE + settings_frame())
    all_connected = time.monotonic()
    peak_gauge = gateway.metric("gateway_connections")
    peak_fds = gateway.open_fds()

    closed = wait_until_closed_by_server(sockets + talkers, timeout=HANDSHAKE_TIMEOUT + CLOSE_MARGIN + 2)
    last = max(closed.values(), default=all_connected) - all_connected
    print(
        f"{len(closed)} of {silent + preface_only} connections closed by the server, the last {last:.2f} s after all "
        f"were open; gauge {gauge_before:.0f} -> {peak_gauge:.0f}, fds {fds_before} -> {peak_fds}"
    )
    assert peak_gauge > gauge_before, "the gauge did not count the new connections"
    assert len(closed) == silent + preface_only, (
        f"{silent + preface_only - len(closed)} connections that never started a call were still open "
        f"{HANDSHAKE_TIMEOUT + CLOSE_MARGIN + 2:.0f} s later"
    )
    assert last <= HANDSHAKE_TIMEOUT + CLOSE_MARGIN, f"the last one was closed {last:.2f} s after all were open"
    gauge_after = gateway.wait_for_metric("gateway_connections", lambda v: v <= gauge_before, 2)
    assert gauge_after == gauge_before, f"gateway_connections {gauge_before} before, {gauge_after} after"
    deadline = time.monotonic() + 2
    while gateway.open_fds() > fds_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gateway.open_fds() <= fds_before, f"the gateway has {gateway.open_fds()} fds open, {fds_before} before"
    timeouts = gateway.metric("gateway_connections_closed_total", reason="handshake_timeout") - timeouts_before
    assert timeouts == silent + preface_only, f'closed_total{{reason="handshake_timeout"}} rose by {timeouts}'
    for sock in sockets + talkers:
        sock.close()
    w.check()


def test_connections_over_the_limit_get_goaway_enhance_your_calm(start_gateway, watch):
    limit = 40
    # A long handshake timeout, so the connections that fill the limit stay for the test.
    gateway = start_gateway("--max-connections", str(limit), "--handshake-timeout", "20s")
    w = watch(gateway)
    refused_before = gateway.metric("gateway_connections_refused_total")
    held = gateway.metric("gateway_connections")  # the legitimate client's

    fillers = connect(gateway, limit - int(held))
    gauge = gateway.wait_for_metric("gateway_connections", lambda v: v >= limit, 3)
    assert gauge == limit, f"gateway_connections is {gauge} with {limit - held:.0f} fillers and the legit client"

    extra = 5
    refused = []
    for _ in range(extra):
        connection = RawH2(gateway.address)
        connection.send_preface()
        connection.pump_until_closed(timeout=3)
        refused.append(connection)
    for index, connection in enumerate(refused):
        print(f"connection {limit + index + 1}: {connection.goaway}, then {connection.close_error}")
        assert connection.goaway is not None, f"connection {limit + index + 1} got no GOAWAY ({connection.frames_seen}, {connection.close_error})"
        assert connection.goaway.error_code == ENHANCE_YOUR_CALM, f"connection {limit + index + 1}: {connection.goaway}"
        assert connection.goaway.debug == b"connection limit reached", connection.goaway
        assert connection.goaway.last_stream_id == 0, connection.goaway
        assert connection.settings_frames == 1, "no server SETTINGS before the GOAWAY"
        assert connection.closed_at is not None, "the refused connection was not closed"
    refused_count = gateway.metric("gateway_connections_refused_total") - refused_before
    assert refused_count == extra, f"gateway_connections_refused_total rose by {refused_count}"

    # Below the limit again, a new connection is served.
    for sock in fillers:
        sock.close()
    gateway.wait_for_metric("gateway_connections", lambda v: v <= held, 3)
    assert served_call(gateway) == f"grpc-status {GRPC_NOT_FOUND}"
    w.check()
