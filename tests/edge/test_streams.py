"""Calls that hold the gateway's resources without finishing: requests whose body never comes,
and answers a client never takes (its flow-control window stays 0). Each must be bounded: by
SETTINGS_MAX_CONCURRENT_STREAMS per connection, by the default deadline per call, by the
per-client limit over all of a client's connections, and by closing a connection whose answers
stay undelivered past their deadline."""

from __future__ import annotations

import collections
import time

from edge_support import (
    DATA,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    GRPC_DEADLINE_EXCEEDED,
    GRPC_NOT_FOUND,
    GRPC_RESOURCE_EXHAUSTED,
    POLL_FOR_JOBS,
    REFUSED_STREAM,
    SETTINGS_INITIAL_WINDOW_SIZE,
    SETTINGS_MAX_CONCURRENT_STREAMS,
    H2Client,
    RawH2,
    acknowledge_job_message,
    frame,
    grpc_request_headers,
    poll_for_jobs_message,
    run_in_threads,
)

MAX_STREAMS = 100  # --http2-max-concurrent-streams (the default, named so the test says it)
DEFAULT_DEADLINE = 2.0  # --default-deadline in conftest.FAST_TIMERS
PER_CLIENT = 64  # --max-concurrent-calls-per-client (the default)
UNDELIVERED_GRACE = 5.0  # how long past its deadline an undelivered call may hold its connection
# How late an answer at the deadline may come on this 2-core machine with a debug build.
DEADLINE_SLACK = 1.5


def open_bodiless_streams(address: str, count: int) -> tuple[RawH2, list[int], float]:
    """Opens `count` AcknowledgeJob streams on a new connection, each HEADERS without END_STREAM
    and then nothing: no DATA ever, no grpc-timeout. Returns the connection, the stream ids and
    when the HEADERS went out."""
    connection = RawH2(address)
    connection.send_preface()
    connection.pump(lambda: connection.settings_frames > 0, timeout=3)
    stream_ids = [connection.new_stream_id() for _ in range(count)]
    frames = [connection.headers_frame(stream_id, grpc_request_headers(address)) for stream_id in stream_ids]
    sent_at = time.monotonic()
    connection.send(*frames)
    return connection, stream_ids, sent_at


def outcome(connection: RawH2, stream_id: int) -> str:
    seen = connection.streams.get(stream_id)
    if seen is None or not seen.ended:
        return "open"
    if seen.grpc_status is not None:
        return f"grpc-status {seen.grpc_status}"
    return f"RST_STREAM {seen.reset}"


def test_streams_without_bodies_are_capped_per_connection_and_answered_at_the_default_deadline(start_gateway, watch):
    # The per-client limit is raised out of the way: this test is about one connection's cap.
    gateway = start_gateway("--max-concurrent-calls-per-client", "1000")
    w = watch(gateway)

    extra = 50
    connection, stream_ids, sent_at = open_bodiless_streams(gateway.address, MAX_STREAMS + extra)
    assert connection.server_settings.get(SETTINGS_MAX_CONCURRENT_STREAMS) == MAX_STREAMS, (
        f"the server's SETTINGS: {connection.server_settings}"
    )
    # The streams beyond the cap are refused at once.
    over = stream_ids[MAX_STREAMS:]
    connection.pump(lambda: all(outcome(connection, s) != "open" for s in over), timeout=DEFAULT_DEADLINE / 2)
    refused = [s for s in over if connection.streams.get(s) and connection.streams[s].reset == REFUSED_STREAM]
    assert len(refused) == extra, f"{len(refused)} of the {extra} streams over the cap refused: {[outcome(connection, s) for s in over][:5]}"
    # The others are held, then answered DEADLINE_EXCEEDED at the default deadline although
    # their request never arrived.
    held = stream_ids[:MAX_STREAMS]
    early = [s for s in held if outcome(connection, s) != "open"]
    assert not early, f"{len(early)} streams were answered before the deadline: {outcome(connection, early[0])}"
    connection.pump(
        lambda: all(outcome(connection, s) != "open" for s in held), timeout=DEFAULT_DEADLINE + DEADLINE_SLACK + 1
    )
    outcomes = collections.Counter(outcome(connection, s) for s in held)
    assert outcomes == {f"grpc-status {GRPC_DEADLINE_EXCEEDED}": MAX_STREAMS}, f"the held streams ended as {outcomes}"
    answered = [connection.streams[s].ended_at - sent_at for s in held]
    print(f"held streams answered {min(answered):.2f}..{max(answered):.2f} s after their HEADERS")
    assert min(answered) >= DEFAULT_DEADLINE - 0.2 and max(answered) <= DEFAULT_DEADLINE + DEADLINE_SLACK, (
        f"answers came {min(answered):.2f}..{max(answered):.2f} s after the HEADERS, not at the {DEFAULT_DEADLINE} s deadline"
    )
    assert connection.goaway is None or connection.goaway.error_code != ENHANCE_YOUR_CALM, connection.goaway
    connection.close()
    w.check()


def test_one_client_over_many_connections_is_held_to_its_own_limit(start_gateway, watch):
    """The issue's attack: one authenticated client holding bodiless calls on enough connections
    to exceed the gateway-wide limit (1024). Only PER_CLIENT of them are taken up; the rest are
    answered RESOURCE_EXHAUSTED at once, and the legitimate client, another client id, is not
    refused anything."""
    gateway = start_gateway("--max-concurrent-calls-per-client", str(PER_CLIENT), "--max-concurrent-calls", "1024")
    w = watch(gateway)
    limited_before = gateway.metric("gateway_client_concurrency_limited_total")
    shed_before = gateway.metric("gateway_load_shed_total")

    connections = 12  # 1200 streams, over the gateway-wide 1024
    opened = [open_bodiless_streams(gateway.address, MAX_STREAMS) for _ in range(connections)]

    over_limit = connections * MAX_STREAMS - PER_CLIENT

    def refused(connection: RawH2, stream_ids: list[int]) -> int:
        return sum(1 for s in stream_ids if outcome(connection, s) == f"grpc-status {GRPC_RESOURCE_EXHAUSTED}")

    def settle(index: int, until: float) -> collections.Counter:
        connection, stream_ids, _ = opened[index]
        connection.pump(lambda: all(outcome(connection, s) != "open" for s in stream_ids), timeout=until - time.monotonic())
        return collections.Counter(outcome(connection, s) for s in stream_ids)

    # Before the deadline, every stream over the client's limit has been refused already.
    before_deadline = opened[-1][2] + DEFAULT_DEADLINE * 0.75
    run_in_threads(connections, lambda index: settle(index, before_deadline))
    refused_early = sum(refused(connection, stream_ids) for connection, stream_ids, _ in opened)
    total = collections.Counter()
    after_deadline = time.monotonic() + DEFAULT_DEADLINE + DEADLINE_SLACK
    for counts in run_in_threads(connections, lambda index: settle(index, after_deadline)):
        total.update(counts)
    print(f"{connections * MAX_STREAMS} bodiless streams of one client ended as {dict(total)}; {refused_early} refused before the deadline")
    assert total == {
        f"grpc-status {GRPC_DEADLINE_EXCEEDED}": PER_CLIENT,
        f"grpc-status {GRPC_RESOURCE_EXHAUSTED}": over_limit,
    }, f"the client's streams ended as {dict(total)}"
    assert refused_early == over_limit, (
        f"only {refused_early} streams were refused before the deadline: the over-limit calls were held"
    )
    limited = gateway.metric("gateway_client_concurrency_limited_total") - limited_before
    assert limited == over_limit, f"gateway_client_concurrency_limited_total rose by {limited}"
    shed = gateway.metric("gateway_load_shed_total") - shed_before
    assert shed == 0, f"the gateway-wide limit refused {shed} calls: one client reached it"
    for connection, _, _ in opened:
        connection.close()
    w.check()


def test_a_client_that_never_takes_its_answers_loses_its_connection(start_gateway, watch):
    """SETTINGS_INITIAL_WINDOW_SIZE 0 and never a WINDOW_UPDATE: the answers to its PollForJobs
    calls (DATA, flow-controlled) can never be sent. The connection must be closed within the
    deadline + UNDELIVERED_GRACE (+ a margin), counted as reason="undelivered", and the places
    the calls held under the per-client limit must be free again afterwards."""
    gateway = start_gateway("--max-concurrent-calls-per-client", str(PER_CLIENT))
    w = watch(gateway)
    undelivered_before = gateway.metric("gateway_connections_closed_total", reason="undelivered")

    client = H2Client(gateway.address, local_settings={SETTINGS_INITIAL_WINDOW_SIZE: 0})
    headers = grpc_request_headers(gateway.address, path=POLL_FOR_JOBS)
    body = poll_for_jobs_message()
    stream_ids = []
    for _ in range(MAX_STREAMS):
        stream_id = client.conn.get_next_available_stream_id()
        client.conn.send_headers(stream_id, headers)
        client.conn.send_data(stream_id, body, end_stream=True)
        stream_ids.append(stream_id)
    sent_at = time.monotonic()
    client.flush()
    # It reads frames (to see when the server closes), but its window stays 0.
    margin = 2.5
    client.pump_until_closed(timeout=DEFAULT_DEADLINE + UNDELIVERED_GRACE + margin)
    closed_after = (client.closed_at or client.goaway and client.goaway.at or time.monotonic()) - sent_at

    statuses = collections.Counter(client.grpc_status(s) for s in stream_ids)
    print(f"never-reading client: {dict(statuses)}; ended after {closed_after:.2f} s ({client.goaway or client.close_error})")
    assert client.ended_by_server(), (
        f"the connection of a client whose window stays 0 was still open {closed_after:.1f} s after its calls "
        f"(deadline {DEFAULT_DEADLINE} s + grace {UNDELIVERED_GRACE} s + margin {margin} s)"
    )
    assert closed_after >= DEFAULT_DEADLINE + UNDELIVERED_GRACE - 0.5, f"closed after {closed_after:.2f} s, before deadline + grace"
    assert not any(client.data.values()), "DATA arrived on a window of 0"
    # The calls over the client's limit are answered at once (a trailers-only answer needs no window).
    assert statuses[GRPC_RESOURCE_EXHAUSTED] == MAX_STREAMS - PER_CLIENT, f"answers on the window-0 connection: {dict(statuses)}"
    closed = gateway.wait_for_metric(
        "gateway_connections_closed_total", lambda v: v > undelivered_before, 2, reason="undelivered"
    )
    assert closed == undelivered_before + 1, f'gateway_connections_closed_total{{reason="undelivered"}} went {undelivered_before} -> {closed}'

    # Its places are free: the same client is served again on a new connection.
    again = RawH2(gateway.address)
    again.send_preface()
    stream_id = again.new_stream_id()
    again.send(
        again.headers_frame(stream_id, grpc_request_headers(gateway.address)),
        frame(DATA, END_STREAM, stream_id, acknowledge_job_message()),
    )
    again.pump(lambda: outcome(again, stream_id) != "open", timeout=3)
    assert outcome(again, stream_id) == f"grpc-status {GRPC_NOT_FOUND}", (
        f"after the window-0 connection was closed, the client's next call ended {outcome(again, stream_id)}"
    )
    again.close()
    w.check()
